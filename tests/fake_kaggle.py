"""A fake Kaggle API on loopback that the real kaggle CLI (requirements.txt) talks to, answering with kagglesdk's
own request and response types, with state each test scripts.

How the real CLI reaches it: kaggle 2.2.5, as 2.2.4, ignores KAGGLE_API_ENVIRONMENT=TEST (KaggleApi passes its own
env to kagglesdk: PROD, or LOCAL when KAGGLE_API_ENVIRONMENT=LOCALHOST, see `KaggleApi.args` and
`build_kaggle_client_with_params`), and LOCAL is http://localhost on port 80. So `env()` sets
KAGGLE_API_ENVIRONMENT=LOCALHOST and HTTP_PROXY to this server: requests sends every call (API, blob uploads,
output downloads) here as a proxy request, and the server binds 127.0.0.1 on a free port (never a busy one).

Fixture API (`fake_kaggle`; in a test file: `from tests.fake_kaggle import fake_kaggle_fixture  # noqa: F401`):
    fake = fake_kaggle                       # a FakeKaggle, running, with monkeypatched env and credentials
    fake.user                                # "alice": the account of the credentials it accepts
    fake.datasets["alice/slug"].versions     # [DatasetVersion(number, status, files)], scripted via
    fake.dataset_processing = "failed"       #   the status new versions end in ("ready" default)
    fake.dataset_create_error = "..."        # CreateDataset/Version answer status "error" with this message
    fake.kernels["slug"].versions            # [KernelVersion(number, script, metadata, status, outputs, log)]
    fake.on_kernel_push = fn(kernel, version) # called at each push; may call complete_kernel / fail_kernel
    fake.complete_kernel("slug", output_files={"submission.csv": b"..."}, log="...")
    fake.fail_kernel("slug", log="...", message="...")
    fake.stale_status_polls = 2              # status without a version reports the previous version for that many
                                             #   polls; `owner/slug/N` (versionLabel "vN") always reports version N
    fake.unseen_version_polls = 2            # status of a version just pushed answers 404 for that many polls
    fake.broken_outputs = {"name"}           # output files whose download answers 404
    fake.models["owner/model/fw/var/1"] = "ok" | "not-consented"   (absent: 404)
    fake.invalid_sources = {"dataset": [...], "competition": [...], "kernel": [...], "model": [...]}
    fake.submission_rejection = "..."        # CreateCodeSubmission answers HTTP 400 with this message
    fake.submission_refusal = "..."          # CreateCodeSubmission answers 200 with this message and no ref
    fake.competitions                        # {slug: title} of the competitions that exist (COMPETITIONS);
                                             #   any other slug is unknown: 404 to submit, list or download, and an
                                             #   invalid competition source to `kernels push`
    fake.competition_files["slug"]           # {name: bytes}: what `competitions download` gets, zipped
    fake.submissions                         # [ApiSubmission] of every competition, newest first;
                                             #   score_submission(ref, ...), add_submission(description, competition),
                                             #   competition_of(ref)
    fake.calls                               # [(service method name, request dict)] in order
"""

from __future__ import annotations

import io
import json
import threading
import urllib.parse
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from kagglesdk.blobs.types.blob_api_service import ApiStartBlobUploadResponse
from kagglesdk.competitions.types.competition_api_service import (
    ApiCreateCodeSubmissionResponse,
    ApiListSubmissionsResponse,
    ApiSubmission,
    ApiSubmissionLimits,
)
from kagglesdk.competitions.types.submission_status import SubmissionStatus
from kagglesdk.datasets.types.dataset_api_service import (
    ApiCreateDatasetResponse,
    ApiDataset,
    ApiGetDatasetStatusResponse,
)
from kagglesdk.datasets.types.dataset_enums import DatabundleVersionStatus
from kagglesdk.kernels.types.kernels_api_service import (
    ApiGetKernelSessionStatusResponse,
    ApiKernelSessionOutputFile,
    ApiListKernelSessionOutputResponse,
    ApiSaveKernelResponse,
)
from kagglesdk.kernels.types.kernels_enums import KernelWorkerStatus
from kagglesdk.models.types.model_api_service import ApiListModelInstanceVersionFilesResponse, ApiModelFile
from kagglesdk.security.types.oauth_service import IntrospectTokenResponse

from arena.task import DEFAULT_COMPETITION

USER, KEY, TOKEN = "alice", "fake-legacy-key-3f9a1c", "KGAT_fake-access-token-77d2e0"
# The chatbot-arena competitions Kaggle has (slug -> title, as on their pages): the two on the LMSYS data (the open
# one, arena's default, and the closed original) and the WSDM Cup.
COMPETITIONS = {"llm-classification-finetuning": "LLM Classification Finetuning",
                "lmsys-chatbot-arena": "LMSYS - Chatbot Arena Human Preference Predictions",
                "wsdm-cup-multilingual-chatbot-arena": "WSDM Cup - Multilingual Chatbot Arena"}


@dataclass
class Redirect:
    location: str


@dataclass
class DatasetVersion:
    number: int
    status: str  # a DatabundleVersionStatus name, lower case: "ready", "failed", "blobs_received", ...
    files: list[str]


@dataclass
class FakeDataset:
    ref: str
    versions: list[DatasetVersion] = field(default_factory=list)


@dataclass
class KernelVersion:
    number: int
    script: str
    metadata: dict
    status: str = "queued"  # a KernelWorkerStatus name, lower case
    outputs: dict[str, bytes] = field(default_factory=dict)
    log: str = ""
    failure_message: str = ""


@dataclass
class FakeKernel:
    slug: str
    versions: list[KernelVersion] = field(default_factory=list)
    polls_since_push: int = 0
    shown: KernelVersion | None = None  # the session status last reported: `kernels output` gives its files


class FakeKaggle:
    def __init__(self):
        self.user = USER
        self.legacy_key = KEY
        self.access_token = TOKEN
        self.datasets: dict[str, FakeDataset] = {}
        self.dataset_processing = "ready"
        self.processing_polls = 0  # a new dataset version reports "blobs_received" for this many status calls
        self.dataset_create_error: str | None = None
        self.kernels: dict[str, FakeKernel] = {}
        self.on_kernel_push = None
        self.stale_status_polls = 0
        self.unseen_version_polls = 0
        self.broken_outputs: set[str] = set()
        self.models: dict[str, str] = {}
        self.invalid_sources: dict[str, list[str]] = {}
        self.submission_rejection: str | None = None
        self.submission_refusal: str | None = None
        self.competitions: dict[str, str] = dict(COMPETITIONS)
        self.competition_files: dict[str, dict[str, bytes]] = {}
        self.submissions: list[ApiSubmission] = []
        self._submitted_to: dict[int, str] = {}  # submission ref -> competition slug
        self.calls: list[tuple[str, dict]] = []
        self.uploads: dict[str, bytes] = {}
        self._status_polls: dict[str, int] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # ---- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> FakeKaggle:
        fake = self

        class Handler(_Handler):
            kaggle = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)  # loopback only, a free port
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def address(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def env(self) -> dict[str, str]:
        """Environment for the kaggle CLI to reach this server (see the module docstring)."""
        return {"KAGGLE_API_ENVIRONMENT": "LOCALHOST", "HTTP_PROXY": self.address, "http_proxy": self.address,
                "NO_PROXY": "", "no_proxy": ""}

    # ---- scripting helpers -------------------------------------------------------------------------
    def kernel(self, slug: str) -> FakeKernel:
        return self.kernels.setdefault(slug, FakeKernel(slug))

    def complete_kernel(self, slug: str, output_files: dict[str, bytes | str] | None = None, log: str = "") -> None:
        """The kernel's latest version ends complete with these output files (what `kernels output` returns)."""
        version = self.kernels[slug].versions[-1]
        version.status, version.log = "complete", log
        version.outputs = {name: data.encode() if isinstance(data, str) else data
                           for name, data in (output_files or {}).items()}

    def fail_kernel(self, slug: str, log: str, message: str = "Your notebook hit an error",
                    output_files: dict[str, bytes | str] | None = None) -> None:
        version = self.kernels[slug].versions[-1]
        version.status, version.log, version.failure_message = "error", log, message
        version.outputs = {name: data.encode() if isinstance(data, str) else data
                           for name, data in (output_files or {}).items()}

    def score_submission(self, ref: int, public: str | None = None, private: str | None = None,
                         error: str | None = None) -> None:
        sub = next(s for s in self.submissions if s.ref == ref)
        sub.public_score, sub.private_score = public, private
        sub.status = SubmissionStatus.ERROR if error else SubmissionStatus.COMPLETE
        if error:
            sub.error_description = error

    def add_submission(self, description: str, competition: str = DEFAULT_COMPETITION) -> ApiSubmission:
        """A submission to `competition` made elsewhere (as CreateCodeSubmission would record it), newest first."""
        sub = ApiSubmission()
        sub.ref = 1000 + len(self.submissions)
        sub.date = datetime.now(timezone.utc).replace(microsecond=0, tzinfo=None)
        sub.description, sub.file_name, sub.status = description, "submission.csv", SubmissionStatus.PENDING
        self.submissions.insert(0, sub)
        self._submitted_to[sub.ref] = competition
        return sub

    def competition_of(self, ref: int) -> str:
        return self._submitted_to[ref]

    def _unknown_competition(self, body) -> tuple[int, dict] | None:
        """Kaggle's answer to a competition slug it does not have: 404."""
        if body.get("competitionName") in self.competitions:
            return None
        return 404, {"code": 404, "message": f"Competition {body.get('competitionName')!r} not found"}

    def called(self, method: str) -> list[dict]:
        return [body for name, body in self.calls if name == method]

    # ---- the API -----------------------------------------------------------------------------------
    def handle(self, method: str, body: dict, auth: str | None):
        """(HTTP status, payload dict or KaggleObject) for one API call."""
        self.calls.append((method, body))
        if method == "IntrospectToken":
            ok = body.get("token") == self.access_token
            resp = IntrospectTokenResponse()
            resp.active, resp.username = ok, self.user if ok else ""
            return 200, resp
        if not self._authorized(auth):
            return 401, {"code": 401, "message": "Unauthenticated"}
        handler = getattr(self, f"_api_{method}", None)
        if handler is None:
            return 404, {"code": 404, "message": f"fake Kaggle: no {method}"}
        return handler(body)

    def _authorized(self, auth: str | None) -> bool:
        import base64

        if not auth:
            return False
        if auth == f"Bearer {self.access_token}":
            return True
        if auth.startswith("Basic "):
            return base64.b64decode(auth[6:]).decode() == f"{self.user}:{self.legacy_key}"
        return False

    def _dataset_ref(self, body: dict, owner_key: str = "ownerSlug", slug_key: str = "datasetSlug") -> str:
        return f"{body.get(owner_key, '')}/{body.get(slug_key, '')}"

    def _api_GetDatasetStatus(self, body):
        dataset = self.datasets.get(self._dataset_ref(body))
        if dataset is None or not dataset.versions:
            return 404, {"code": 404, "message": "Dataset not found"}
        latest = dataset.versions[-1]
        polls = self._status_polls[dataset.ref] = self._status_polls.get(dataset.ref, 0) + 1
        if latest.status == "processing" and polls > self.processing_polls:
            latest.status = self.dataset_processing
        resp = ApiGetDatasetStatusResponse()
        resp.status = DatabundleVersionStatus["BLOBS_RECEIVED" if latest.status == "processing"
                                              else latest.status.upper()]
        return 200, resp

    def _api_GetDataset(self, body):
        dataset = self.datasets.get(self._dataset_ref(body))
        if dataset is None:
            return 404, {"code": 404, "message": "Dataset not found"}
        resp = ApiDataset()
        resp.ref = dataset.ref
        # the latest version processed: a version still processing (or failed) leaves the previous one current
        ready = [v.number for v in dataset.versions if v.status == "ready"]
        resp.current_version_number = ready[-1] if ready else 0
        return 200, resp

    def _new_dataset_version(self, ref: str, body: dict) -> ApiCreateDatasetResponse:
        resp = ApiCreateDatasetResponse()
        if self.dataset_create_error:
            resp.status, resp.error = "error", self.dataset_create_error
            return resp
        dataset = self.datasets.setdefault(ref, FakeDataset(ref))
        tokens = [f.get("token", "") for f in body.get("files", [])]
        self._status_polls[ref] = 0
        dataset.versions.append(DatasetVersion(len(dataset.versions) + 1, "processing", tokens))
        resp.status, resp.ref, resp.url = "ok", ref, f"https://www.kaggle.com/datasets/{ref}"
        return resp

    def _api_CreateDataset(self, body):
        ref = f"{body.get('ownerSlug', '')}/{body.get('slug', '')}"
        if ref in self.datasets and not self.dataset_create_error:
            resp = ApiCreateDatasetResponse()
            resp.status, resp.error = "error", "The requested title is already in use by a dataset."
            return 200, resp
        return 200, self._new_dataset_version(ref, body)

    def _api_CreateDatasetVersion(self, body):
        ref = self._dataset_ref(body)
        if ref not in self.datasets:
            return 404, {"code": 404, "message": "Dataset not found"}
        return 200, self._new_dataset_version(ref, body.get("body", {}))

    def _api_StartBlobUpload(self, body):
        token = f"blob-{len(self.uploads) + 1}-{body.get('name', '')}"
        self.uploads[token] = b""
        resp = ApiStartBlobUploadResponse()
        resp.token, resp.create_url = token, f"http://localhost/upload/{urllib.parse.quote(token)}"
        return 200, resp

    def _api_SaveKernel(self, body):
        slug = body.get("slug", "")
        owner, _, kernel_slug = slug.partition("/")
        resp = ApiSaveKernelResponse()
        if owner != self.user:
            resp.error = f"Permission denied: {slug} does not belong to {self.user}"
            return 200, resp
        invalid = {kind: [s for s in body.get(f"{kind}DataSources", []) if s in self.invalid_sources.get(kind, [])]
                   for kind in ("dataset", "competition", "kernel", "model")}
        invalid["competition"] += [s for s in body.get("competitionDataSources", [])
                                   if s not in self.competitions and s not in invalid["competition"]]
        for source in body.get("datasetDataSources", []):  # a pinned version that does not exist
            parts = source.split("/")
            dataset = self.datasets.get("/".join(parts[:2]))
            if dataset is None or (len(parts) == 3 and int(parts[2]) > len(dataset.versions)):
                invalid["dataset"].append(source)
        for source in body.get("modelDataSources", []):
            if self.models.get(source) != "ok":
                invalid["model"].append(source)
        kernel = self.kernel(kernel_slug)
        metadata = {k: v for k, v in body.items() if k != "text"}
        version = KernelVersion(len(kernel.versions) + 1, body.get("text", ""), metadata)
        kernel.versions.append(version)
        kernel.polls_since_push, kernel.shown = 0, None
        resp.ref, resp.url = slug, f"https://www.kaggle.com/code/{slug}"
        resp.version_number = version.number
        resp.invalid_dataset_sources = invalid["dataset"]
        resp.invalid_competition_sources = invalid["competition"]
        resp.invalid_kernel_sources = invalid["kernel"]
        resp.invalid_model_sources = invalid["model"]  # the CLI never prints these
        if self.on_kernel_push is not None:
            self.on_kernel_push(kernel, version)
        return 200, resp

    def _kernel_of(self, body) -> FakeKernel | None:
        if body.get("userName") != self.user:
            return None
        return self.kernels.get(body.get("kernelSlug", ""))

    def _version_of(self, kernel: FakeKernel, body) -> KernelVersion | None:
        """The version a request's versionLabel names ("v2", as kaggle 2.2.5 writes it; a bare "2" is not found, as
        on Kaggle), None for one Kaggle does not have."""
        label = body["versionLabel"]
        number = int(label[1:]) if label[:1] == "v" and label[1:].isdigit() else 0
        return kernel.versions[number - 1] if 0 < number <= len(kernel.versions) else None

    def _api_GetKernelSessionStatus(self, body):
        kernel = self._kernel_of(body)
        if kernel is None or not kernel.versions:
            return 404, {"code": 404, "message": "Kernel not found"}
        kernel.polls_since_push += 1
        if "versionLabel" in body:
            shown = self._version_of(kernel, body)
            if shown is None or (shown is kernel.versions[-1] and kernel.polls_since_push <= self.unseen_version_polls):
                return 404, {"code": 404, "message": f"Kernel version {body['versionLabel']} not found"}
        else:
            shown = kernel.versions[-1]
            if kernel.polls_since_push <= self.stale_status_polls and len(kernel.versions) > 1:
                shown = kernel.versions[-2]  # Kaggle reports the latest session, which may still be the previous one
            kernel.shown = shown
        resp = ApiGetKernelSessionStatusResponse()
        resp.status = KernelWorkerStatus[shown.status.upper()]
        if shown.failure_message:
            resp.failure_message = shown.failure_message
        return 200, resp

    def _api_ListKernelSessionOutput(self, body):
        kernel = self._kernel_of(body)
        if kernel is None or not kernel.versions:
            return 404, {"code": 404, "message": "Kernel not found"}
        version = self._version_of(kernel, body) if "versionLabel" in body else kernel.shown or kernel.versions[-1]
        if version is None:
            return 404, {"code": 404, "message": f"Kernel version {body['versionLabel']} not found"}
        resp = ApiListKernelSessionOutputResponse()
        files = []
        for name in version.outputs:
            item = ApiKernelSessionOutputFile()
            item.file_name = name
            item.url = f"http://localhost/download/{kernel.slug}/{version.number}/{urllib.parse.quote(name)}"
            files.append(item)
        resp.files = files
        if version.log:
            resp.log = version.log
        return 200, resp

    def output_file(self, slug: str, number: int, name: str) -> bytes | None:
        kernel = self.kernels.get(slug)
        if kernel is None or number > len(kernel.versions) or name in self.broken_outputs:
            return None
        return kernel.versions[number - 1].outputs.get(name)

    def _api_ListModelInstanceVersionFiles(self, body):
        framework = str(body.get("framework", "")).lower().removeprefix("model_framework_")
        source = "/".join([body.get("ownerSlug", ""), body.get("modelSlug", ""), framework,
                           body.get("instanceSlug", ""), str(body.get("versionNumber", ""))])
        state = self.models.get(source)
        if state is None:
            return 404, {"code": 404, "message": f"Model {source} not found"}
        if state != "ok":
            return 403, {"code": 403, "message": "You must accept this model's terms of use before using it"}
        resp = ApiListModelInstanceVersionFilesResponse()
        item = ApiModelFile()
        item.name, item.size = "config.json", 100
        resp.files = [item]
        return 200, resp

    def _api_CreateCodeSubmission(self, body):
        unknown = self._unknown_competition(body)
        if unknown:
            return unknown
        if self.submission_rejection:
            return 400, {"code": 400, "message": self.submission_rejection}
        if self.submission_refusal:
            resp = ApiCreateCodeSubmissionResponse()
            resp.message = self.submission_refusal
            return 200, resp
        competition = body["competitionName"]
        sub = self.add_submission(body.get("submissionDescription", ""), competition)
        resp = ApiCreateCodeSubmissionResponse()
        resp.message, resp.ref = f"Successfully submitted to {self.competitions[competition]}", sub.ref
        return 200, resp

    def _api_ListSubmissions(self, body):
        unknown = self._unknown_competition(body)
        if unknown:
            return unknown
        resp = ApiListSubmissionsResponse()
        resp.submissions = [s for s in self.submissions if self._submitted_to[s.ref] == body["competitionName"]]
        return 200, resp

    def _api_DownloadDataFiles(self, body):
        """An HttpRedirect, as Kaggle answers: to the competition's files, zipped (served by do_GET)."""
        unknown = self._unknown_competition(body)
        if unknown:
            return unknown
        return 302, Redirect(f"http://localhost/competition-data/{body['competitionName']}.zip")

    def competition_archive(self, slug: str) -> bytes | None:
        if slug not in self.competitions:
            return None
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as zf:
            for name, data in self.competition_files.get(slug, {}).items():
                zf.writestr(name, data)
        return buffer.getvalue()

    def _api_GetSubmissionLimits(self, body):
        resp = ApiSubmissionLimits()
        resp.num_allowed_now = 4
        return 200, resp


class _Handler(BaseHTTPRequestHandler):
    kaggle: FakeKaggle
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    def _path(self) -> str:
        return urllib.parse.urlsplit(self.path).path  # proxy requests carry the absolute URL

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, payload, content_type: str = "application/json") -> None:
        if isinstance(payload, Redirect):
            self.send_response(status)
            self.send_header("Location", payload.location)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = payload if isinstance(payload, bytes) else (
            payload.to_json() if hasattr(payload, "to_json") else json.dumps(payload)).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        path = self._path()
        body = self._body()
        if not path.startswith("/api/v1/"):
            return self._send(404, {"code": 404, "message": f"no {path}"})
        method = path.rsplit("/", 1)[-1]
        with self.kaggle._lock:
            status, payload = self.kaggle.handle(method, json.loads(body or b"{}"), self.headers.get("Authorization"))
        self._send(status, payload)

    def do_PUT(self):
        path = self._path()
        body = self._body()
        token = urllib.parse.unquote(path.removeprefix("/upload/"))
        if token not in self.kaggle.uploads:
            return self._send(404, {"code": 404, "message": "unknown upload"})
        self.kaggle.uploads[token] = body
        self._send(200, {})

    def do_GET(self):
        parts = self._path().split("/", 4)  # an output file's name may hold folders: runs/<run>/config.yaml
        if len(parts) == 5 and parts[1] == "download":
            data = self.kaggle.output_file(parts[2], int(parts[3]), urllib.parse.unquote(parts[4]))
            if data is not None:
                return self._send(200, data, "application/octet-stream")
        if len(parts) == 3 and parts[1] == "competition-data" and parts[2].endswith(".zip"):
            data = self.kaggle.competition_archive(parts[2].removesuffix(".zip"))
            if data is not None:
                return self._send(200, data, "application/zip")
        self._send(404, {"code": 404, "message": "not found"})


# ---- the pytest fixture -----------------------------------------------------------------------------

@pytest.fixture(name="fake_kaggle")
def fake_kaggle_fixture(no_credentials, monkeypatch):
    """A running FakeKaggle that the real kaggle CLI reaches, a fresh HOME (conftest's no_credentials), the legacy
    API key of its user in KAGGLE_USERNAME/KAGGLE_KEY (tests of other credentials delete them), and `arena push`
    polling without sleeping. Use it in a test file with `from tests.fake_kaggle import fake_kaggle_fixture  # noqa: F401`."""
    from arena.kaggle import push

    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(no_credentials.parent / ".kaggle"))  # HOME: a fresh folder
    for var in ("KAGGLE_KERNEL_RUN_TYPE", "KAGGLE_API_ENVIRONMENT"):
        monkeypatch.delenv(var, raising=False)
    fake = FakeKaggle().start()
    for name, value in fake.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("KAGGLE_USERNAME", fake.user)
    monkeypatch.setenv("KAGGLE_KEY", fake.legacy_key)
    monkeypatch.setattr(push, "POLL_SECONDS", 0)
    monkeypatch.setattr(push, "DATASET_POLL_SECONDS", 0)
    try:
        yield fake
    finally:
        fake.stop()


def push_id_of(script: str) -> str | None:
    """The PUSH_ID `arena push` stamped into a pushed kernel.py (what the real kernel writes to arena-push.txt)."""
    import re

    match = re.search(r"^PUSH_ID = '([0-9a-f]+)'$", script, re.M)
    return match.group(1) if match else None


def run_like_arena_kernel(fake: FakeKaggle, submission: str = "id,winner_model_a,winner_model_b,winner_tie\n"
                          "1,0.4,0.4,0.2\n", log: str = "kernel: wrote /kaggle/working/submission.csv\n"):
    """An on_kernel_push that completes each pushed version as arena's kernel.py would: its push id and a
    submission in the output."""
    def complete(kernel: FakeKernel, version: KernelVersion) -> None:
        fake.complete_kernel(kernel.slug, {"arena-push.txt": f"{push_id_of(version.script)}\n",
                                           "submission.csv": submission}, log=log)

    return complete
