"""`arena push` and `arena runs --fetch-lb` through the real kaggle CLI of requirements.txt, talking to a fake
Kaggle on loopback (tests/fake_kaggle.py) that answers with kagglesdk's own types: every way Kaggle can fail
that the CLI hides behind exit 0, and the whole push -> wait -> submit -> fetch-lb cycle."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from arena import cli, config
from arena.kaggle import credentials, remote
from arena.layout import Bundle, RunFolder
from tests.fake_kaggle import (
    DatasetVersion,
    FakeDataset,
    KernelVersion,
    fake_kaggle_fixture,  # noqa: F401 (the fake_kaggle fixture)
    push_id_of,
    run_like_arena_kernel,
)
from tests.test_kaggle import _cfg, _fake_bundle

GEMMA = "google/gemma-2/transformers/gemma-2-9b-it/2"


@pytest.fixture
def run_and_bundle(tmp_path, tiny_run):
    """A run folder under runs/ (so that `arena runs` lists it) and a bundle of it attaching GEMMA."""
    run = tmp_path / "runs" / "t-20260101-000000"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("config.yaml", "predictions", "kaggle-bundle-*"))
    cfg = _cfg(base_model_source=GEMMA)
    config.dump(cfg, run / "config.yaml")
    return run, _fake_bundle(tmp_path, cfg, adapter=RunFolder(tiny_run).adapter)


def _push(run: Path, bundle: Path, *extra: str) -> int:
    return cli.main(["push", "--run", str(run), "--bundle", str(bundle), "--message", "try", *extra])


def _everything(capsys) -> str:
    captured = capsys.readouterr()
    return captured.out + captured.err


def test_push_wait_submit_fetch_lb_cycle(fake_kaggle, run_and_bundle, capsys):
    run, bundle = run_and_bundle
    fake = fake_kaggle
    fake.models[GEMMA] = "ok"
    for slug in ("arena-adapter", "arena-wheels"):  # pushed before: this push makes version 2
        fake.datasets[f"alice/{slug}"] = FakeDataset(f"alice/{slug}", [DatasetVersion(1, "ready", [])])
    previous = fake.kernel("arena-inference")
    previous.versions.append(KernelVersion(1, "old", {}, status="complete", outputs={"arena-push.txt": b"old\n"}))
    fake.stale_status_polls = 2  # right after the push, `kernels status` still shows version 1 complete
    fake.processing_polls = 2
    fake.on_kernel_push = run_like_arena_kernel(fake)

    assert _push(run, bundle) == 0
    out = _everything(capsys)
    assert fake.called("CreateDatasetVersion") and not fake.called("CreateDataset")
    pushed = fake.kernels["arena-inference"].versions[-1]
    assert pushed.number == 2
    assert pushed.metadata["datasetDataSources"] == ["alice/arena-adapter/2", "alice/arena-wheels/2"]
    assert pushed.metadata["modelDataSources"] == [GEMMA] and pushed.metadata["dockerImagePinningType"] == "latest"
    assert "still reports the previous version's session" in out
    [submit] = fake.called("CreateCodeSubmission")
    assert submit["kernelVersion"] == 2 and submit["kernelSlug"] == "arena-inference"
    assert submit["submissionDescription"] == f"try [arena run {run.name}]"
    record = json.loads((run / "kaggle" / "arena-inference-v2" / "submitted.json").read_text())
    assert record["version"] == 2 and record["datasets"] == {"arena-adapter": 2, "arena-wheels": 2}
    assert (run / "kaggle" / "arena-inference-v2" / "submission.csv").is_file()

    # Kaggle scores it (the competition is closed: the private score counts); a later one errors in the rerun.
    fake.score_submission(submit_ref := fake.submissions[0].ref, public="0.95110", private="0.94020")
    later = fake.add_submission(submit["submissionDescription"])
    fake.score_submission(later.ref, error="Notebook Timeout: exceeded 9 hours")
    fake.add_submission(submit["submissionDescription"])  # still pending: nothing to record yet
    assert cli.main(["runs", "--runs-dir", str(run.parent), "--fetch-lb", "--format", "csv"]) == 0
    out += _everything(capsys)
    board = json.loads(RunFolder(run).leaderboard.read_text())["scores"]
    assert [(s["ref"], s["score"], s["status"]) for s in board] == [(str(submit_ref), 0.9402, "complete"),
                                                                    (str(submit_ref + 1), None, "error")]
    assert board[0]["public"] == 0.9511 and board[1]["error"] == "Notebook Timeout: exceeded 9 hours"
    assert "recorded ERROR for t-20260101-000000" in out
    table = out[out.index("run,kind"):]
    assert "0.9402" in table and "Notebook Timeout: exceeded 9 hours" in table
    assert fake.legacy_key not in out  # the key is never printed


def test_dataset_creation_error_printed_with_exit_0_stops_push(fake_kaggle, run_and_bundle, capsys):
    run, bundle = run_and_bundle
    fake_kaggle.models[GEMMA] = "ok"
    fake_kaggle.dataset_create_error = "The requested title is already in use by a dataset."
    folder = Bundle(bundle).adapter_dataset
    direct = subprocess.run([remote.kaggle_executable(), "datasets", "create", "-p", str(folder)], capture_output=True,
                            text=True)
    assert direct.returncode == 0 and "Dataset creation error" in direct.stdout  # the CLI hides it behind exit 0
    assert _push(run, bundle) == 2
    err = capsys.readouterr().err
    assert "`kaggle datasets create` failed" in err and "already in use" in err
    assert not fake_kaggle.called("SaveKernel")


def test_dataset_version_whose_processing_fails_stops_push(fake_kaggle, run_and_bundle, capsys):
    run, bundle = run_and_bundle
    fake_kaggle.models[GEMMA] = "ok"
    fake_kaggle.dataset_processing = "failed"
    assert _push(run, bundle) == 2
    err = capsys.readouterr().err
    assert "alice/arena-adapter: Kaggle reports the processing of version 1 failed" in err
    assert not fake_kaggle.called("SaveKernel") and not fake_kaggle.called("CreateCodeSubmission")


def test_kernel_error_downloads_its_log_and_prints_its_tail(fake_kaggle, run_and_bundle, capsys):
    run, bundle = run_and_bundle
    fake = fake_kaggle
    fake.models[GEMMA] = "ok"
    log = json.dumps([{"stream_name": "stdout", "time": 1.0, "data": "kernel: $ python -m arena.cli predict\n"},
                      {"stream_name": "stderr", "time": 2.0, "data": "torch.OutOfMemoryError: CUDA out of memory\n"}])

    def fail_as_this_push(kernel, version):
        fake.fail_kernel(kernel.slug, log=log, message="Your notebook tried to allocate more memory",
                         output_files={"arena-push.txt": push_id_of(version.script) + "\n"})

    fake.on_kernel_push = fail_as_this_push
    assert _push(run, bundle) == 2
    err = capsys.readouterr().err
    assert "version 1 ended with status error: Your notebook tried to allocate more memory" in err
    assert "torch.OutOfMemoryError: CUDA out of memory" in err  # the log's tail
    assert (run / "kaggle" / "arena-inference-v1" / "arena-inference.log").read_text() == log
    assert not fake.called("CreateCodeSubmission")


@pytest.mark.parametrize("state, expected", [
    ("not-consented", "Accept the model's terms on its page, https://www.kaggle.com/models/google/gemma-2"),
    (None, f"model source {GEMMA}: not found on Kaggle"),
])
def test_model_source_without_access_stops_push_before_any_upload(fake_kaggle, run_and_bundle, capsys, state,
                                                                  expected):
    run, bundle = run_and_bundle
    if state:
        fake_kaggle.models[GEMMA] = state
    assert _push(run, bundle) == 2
    assert expected in capsys.readouterr().err
    assert not fake_kaggle.called("CreateDataset") and not fake_kaggle.called("StartBlobUpload")


def test_invalid_source_reported_by_kernels_push_stops_push(fake_kaggle, run_and_bundle, capsys):
    run, bundle = run_and_bundle
    fake_kaggle.models[GEMMA] = "ok"
    fake_kaggle.invalid_sources = {"competition": ["lmsys-chatbot-arena"]}
    fake_kaggle.on_kernel_push = run_like_arena_kernel(fake_kaggle)
    assert _push(run, bundle) == 2
    assert "not valid competition sources" in capsys.readouterr().err
    assert not fake_kaggle.called("GetKernelSessionStatus") and not fake_kaggle.called("CreateCodeSubmission")


def test_rejected_submission_is_an_error_and_not_recorded(fake_kaggle, run_and_bundle, capsys):
    run, bundle = run_and_bundle
    fake_kaggle.models[GEMMA] = "ok"
    fake_kaggle.on_kernel_push = run_like_arena_kernel(fake_kaggle)
    fake_kaggle.submission_rejection = "You have reached the daily submission limit"
    assert _push(run, bundle) == 2
    assert "daily submission limit" in capsys.readouterr().err
    assert not list(run.glob("kaggle/*/submitted.json"))


def test_kaggle_down_is_a_clear_error_and_nothing_is_recorded(fake_kaggle, run_and_bundle, capsys):
    run, bundle = run_and_bundle
    fake_kaggle.stop()  # connection refused
    assert _push(run, bundle) == 2
    err = capsys.readouterr().err
    assert "could not reach Kaggle (a connection error" in err
    assert "terms" not in err  # not taken for a model whose terms are not accepted
    assert not (run / "kaggle").exists()


def test_a_bundle_packaged_from_another_run_is_refused_before_any_kaggle_call(fake_kaggle, run_and_bundle, capsys):
    """`push --run A --bundle <bundle of D>` submitted D's adapter under A's name (and --fetch-lb credited A)."""
    run, bundle = run_and_bundle
    other = run.with_name("other-20260101-000000")
    shutil.copytree(run, other)
    head = json.loads((other / "adapter" / "head.json").read_text())
    (other / "adapter" / "head.json").write_text(json.dumps({**head, "class_prior": [0.5, 0.3, 0.2]}))
    for flags in ((), ("--dry-run",)):
        assert _push(other, bundle, *flags) == 2
        assert "was not packaged from --run" in capsys.readouterr().err
    assert fake_kaggle.calls == []


def test_a_push_replaced_by_another_push_stops_instead_of_waiting_for_hours(fake_kaggle, run_and_bundle, capsys):
    run, bundle = run_and_bundle
    fake_kaggle.models[GEMMA] = "ok"

    def another_push_follows(kernel, version):  # a second `arena push` of the kernel, whose session completes
        kernel.versions.append(KernelVersion(version.number + 1, "theirs", {}, status="complete",
                                             outputs={"arena-push.txt": b"their-push-id\n"}))

    fake_kaggle.on_kernel_push = another_push_follows
    assert _push(run, bundle) == 2
    assert "another push of the same kernel replaced it" in capsys.readouterr().err
    assert not fake_kaggle.called("CreateCodeSubmission")


# ---- credentials: every way the CLI authenticates ----------------------------------------------------

def _oauth_login(home: Path, token: str) -> None:
    (home / ".kaggle").mkdir(exist_ok=True)
    (home / ".kaggle" / "credentials.json").write_text(json.dumps({
        "refresh_token": "refresh-secret-1234", "access_token": token,
        "access_token_expiration": "2999-01-01T00:00:00+00:00", "username": "alice", "scopes": []}))


@pytest.mark.parametrize("kind", ["kaggle.json", "env key", "env token", "token file path", "access_token file",
                                  "stored login"])
def test_every_credential_the_cli_reads_works_and_none_is_printed(fake_kaggle, monkeypatch, capsys, kind):
    home = Path.home()  # the fixture's fresh HOME
    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.delenv("KAGGLE_KEY")
    secret = fake_kaggle.access_token
    if kind == "kaggle.json":
        (home / ".kaggle").mkdir()
        (home / ".kaggle" / "kaggle.json").write_text(json.dumps({"username": "alice", "key": fake_kaggle.legacy_key}))
        (home / ".kaggle" / "kaggle.json").chmod(0o600)
        secret = fake_kaggle.legacy_key
    elif kind == "env key":
        monkeypatch.setenv("KAGGLE_USERNAME", "alice")
        monkeypatch.setenv("KAGGLE_KEY", secret := fake_kaggle.legacy_key)
    elif kind == "env token":
        monkeypatch.setenv("KAGGLE_API_TOKEN", secret)
    elif kind == "token file path":
        (home / "token.txt").write_text(secret + "\n")
        monkeypatch.setenv("KAGGLE_API_TOKEN", str(home / "token.txt"))
    elif kind == "access_token file":
        (home / ".kaggle").mkdir()
        (home / ".kaggle" / "access_token").write_text(secret)
    else:
        _oauth_login(home, secret)
    creds = credentials.require_credentials()
    assert creds.complete and (creds.user == "alice" or creds.user is None)  # a token's user: only Kaggle knows
    assert remote.kaggle_cli_user() == "alice"
    assert secret not in _everything(capsys)


def test_a_secret_in_cli_output_is_masked(monkeypatch):
    monkeypatch.setenv("KAGGLE_API_TOKEN", "KGAT_super-secret-value")
    assert remote.redact("Bearer KGAT_super-secret-value refused") == "Bearer *** refused"
