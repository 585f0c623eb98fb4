"""`arena push`: package (unless given a bundle), check the base model's access, create or version both datasets
and wait for those versions, push the kernel pinned to them, wait for that kernel version, and submit it to the
code competition; with --dry-run, print every kaggle command and run none.

Nothing may go silently wrong: every kaggle call is judged by remote.run_kaggle; a dataset counts as ready only
at the version just created; the kernel's status and output are those of the version just pushed (`kernels status`
and `kernels output` of `owner/slug/N`: without the version they report the latest session, which right after a
push can still be the previous version's), and its "complete" counts only when that output carries the id of this
push (kernel.py PUSH_ID); on a kernel error its log is downloaded into the run folder and its tail printed; the
submission counts only with the `Submission ref` Kaggle gives it."""

from __future__ import annotations

import json
import re
import shlex
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

from arena import config as config_mod
from arena.config import Config
from arena.errors import UserError
from arena.kaggle import preflight as preflight_mod
from arena.kaggle.bundle import (
    base_model_problems,
    built_from_problems,
    bundle_config,
    bundle_problems,
    kernel_metadata,
    package,
    stamp_push_id,
    write_metadata,
)
from arena.kaggle.credentials import PLACEHOLDER_USER, find_credentials, require_credentials, warn_permissions
from arena.kaggle.leaderboard import tag_message
from arena.kaggle.remote import (
    SUBMISSION_REF,
    KaggleCallError,
    fetch_kernel_output,
    kaggle_cli_user,
    kaggle_executable_display,
    run_kaggle,
)
from arena.layout import SUBMISSION_FILE, Bundle, RunFolder
from arena.writes import write_text

POLL_SECONDS = 60  # between kernel status checks
DATASET_POLL_SECONDS = 10
DATASET_READY_TIMEOUT_S = 30 * 60
UNSEEN_VERSION_POLLS = 5  # `kernels status` of a version just pushed may answer 404 until its session exists
PUSH_MARKER = "arena-push.txt"  # kernel.py writes PUSH_ID there
LOG_TAIL_LINES = 40
KAGGLE_FOLDER = "kaggle"  # in the run folder: <kernel slug>-v<N>/ per pushed version (output, log, submitted.json)
_STATUS_FORMAT = "json(status,current_version_number)"


def _dataset_commands(folder: Path, dataset_id: str, message: str) -> tuple[list[str], list[str], list[str]]:
    status = ["datasets", "status", dataset_id, "--format", _STATUS_FORMAT]
    create = ["datasets", "create", "-p", str(folder), "--dir-mode", "zip"]
    version = ["datasets", "version", "-p", str(folder), "-m", message, "--dir-mode", "zip"]
    return status, create, version


def _submit_command(cfg: Config, kernel_id: str, version: str, message: str) -> list[str]:
    return ["competitions", "submit", cfg.kaggle.competition, "-k", kernel_id, "-v", version,
            "-f", SUBMISSION_FILE, "-m", message]


def _model_check_command(source: str) -> list[str]:
    return ["models", "instances", "versions", "files", source, "--page-size", "1"]


def _raise(problems: list[str]) -> None:
    if problems:
        raise UserError(problems=problems)


def _print_plan(bundle: Bundle, cfg: Config, user: str, message: str, submit_message: str,
                model_sources: list[str]) -> None:
    k = cfg.kaggle
    print(f"dry run: nothing is sent to Kaggle. `arena push` would run ({kaggle_executable_display()}):")
    print("  kaggle config view      # the user name the CLI authenticates as")
    for source in model_sources:
        print(f"  kaggle {shlex.join(_model_check_command(source))}      # access: the model's terms accepted?")
    for folder, slug in ((bundle.adapter_dataset, k.adapter_dataset_slug), (bundle.wheels, k.wheels_dataset_slug)):
        status, create, version = _dataset_commands(folder, f"{user}/{slug}", message)
        print(f"  kaggle {shlex.join(status)}")
        print(f"  kaggle {shlex.join(create)}")
        print(f"      # when the status check finds the dataset: kaggle {shlex.join(version)}")
        print("      # then the status again until that new version number is ready (failed: stop)")
    kernel_id = f"{user}/{k.kernel_slug}"
    print(f"  kaggle {shlex.join(['kernels', 'push', '-p', str(bundle.kernel)])}      # dataset_sources pinned to "
          f"those versions")
    print(f"  kaggle kernels status {kernel_id}/<N>      # the version pushed")
    print(f"      # every {POLL_SECONDS} s until complete (checked against this push's output) or error (log fetched)")
    print(f"  kaggle kernels output {kernel_id}/<N> -p <run>/kaggle/<kernel>-v<N> --force")
    print(f"  kaggle {shlex.join(_submit_command(cfg, kernel_id, '<N>', submit_message))}")
    print("      # <N>: the version number `kernels push` reports")


# ---- model access -----------------------------------------------------------------------------------

def check_model_access(sources: list[str]) -> None:
    """Each attached Kaggle model must be readable by this account: Gemma and Llama need their terms accepted
    once on the model's page, and `kernels push` never reports a model source it refused."""
    for source in sources:
        owner, model = source.split("/")[:2]
        page = f"https://www.kaggle.com/models/{owner}/{model}"
        try:
            run_kaggle(_model_check_command(source))
        except KaggleCallError as exc:
            if not exc.reached:  # a connection or credentials error says so; it is not about the model's terms
                raise
            if exc.not_found:
                raise UserError(f"model source {source}: not found on Kaggle (kaggle.base_model_source); check the "
                                f"owner/model/framework/variation/version on {page}") from None
            raise UserError(f"model source {source}: this account cannot use it ({exc}). Accept the model's terms "
                            f"on its page, {page}, with the account of your Kaggle credentials, then push again") from None


# ---- datasets ---------------------------------------------------------------------------------------

def _dataset_state(dataset_id: str, missing_ok: bool = False) -> tuple[str, int] | None:
    """(status, current version number) from `kaggle datasets status`; None for a dataset that does not exist."""
    try:
        out = run_kaggle(_dataset_commands(Path("."), dataset_id, "")[0]).stdout
    except KaggleCallError as exc:
        if missing_ok and exc.not_found:
            return None
        raise
    match = re.search(r"\{.*\}", out, re.S)
    try:
        state = json.loads(match.group(0)) if match else {}
        return str(state["status"]).lower(), int(state.get("current_version_number") or 0)
    except (ValueError, KeyError, TypeError):
        raise UserError(f"`kaggle datasets status {dataset_id}` printed no status; its output is above") from None


def push_dataset(folder: Path, dataset_id: str, message: str) -> int:
    """Create or version the dataset, then wait until that version is ready; its version number."""
    status, create, version = _dataset_commands(folder, dataset_id, message)
    before = _dataset_state(dataset_id, missing_ok=True)
    expected = 1 if before is None else before[1] + 1
    run_kaggle(create if before is None else version)
    deadline = time.monotonic() + DATASET_READY_TIMEOUT_S
    while True:
        state, current = _dataset_state(dataset_id)
        if state == "ready" and current >= expected:
            print(f"dataset {dataset_id} version {current} is ready")
            return current
        if state == "failed":
            raise UserError(f"dataset {dataset_id}: Kaggle reports the processing of version {expected} failed "
                            f"(status {state!r}; current version {current}); nothing was pushed after it. See "
                            f"https://www.kaggle.com/datasets/{dataset_id}")
        if time.monotonic() > deadline:
            raise UserError(f"dataset {dataset_id} version {expected} not ready after {DATASET_READY_TIMEOUT_S // 60} "
                            f"min (status {state!r}, current version {current}); check it on kaggle.com")
        time.sleep(DATASET_POLL_SECONDS)


# ---- kernel -----------------------------------------------------------------------------------------

def kernel_state(kernel_id: str, version: str | int | None = None, missing_ok: bool = False) -> tuple[str, str]:
    """(status, failure message) from `kaggle kernels status`: of `version`'s session, else of the latest one;
    with `missing_ok`, ("unseen", "") when Kaggle does not know it (yet: right after a push)."""
    ref = kernel_id if version is None else f"{kernel_id}/{version}"
    try:
        out = run_kaggle(["kernels", "status", ref]).stdout
    except KaggleCallError as exc:
        if missing_ok and exc.not_found and exc.reached:
            return "unseen", ""
        raise
    match = re.search(r'has status "([^"]+)"', out)
    if not match:
        raise UserError(f"`kaggle kernels status {ref}` printed no status; its output is above")
    message = re.search(r'Failure message: "(.*)"', out)
    return match.group(1).rsplit(".", 1)[-1].lower(), message.group(1) if message else ""


def _fetch_output(ref: str, folder: Path) -> str | None:
    """`kaggle kernels output REF` into `folder`; the push id the kernel wrote there (None: not this kind of output)."""
    folder.mkdir(parents=True, exist_ok=True)
    fetch_kernel_output(ref, folder, quiet=False, echo=False)
    marker = folder / PUSH_MARKER
    return marker.read_text(encoding="utf-8").strip() if marker.is_file() else None


def log_tail(folder: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of the kernel log `kernels output` saved (<slug>.log: Kaggle's JSON list of stream records,
    or plain text)."""
    logs = sorted(folder.glob("*.log"))
    if not logs:
        return "(Kaggle returned no log)"
    text = logs[0].read_text(encoding="utf-8", errors="replace")
    try:
        records = json.loads(text)
        text = "".join(r.get("data", "") for r in records if isinstance(r, dict))
    except ValueError:
        pass
    return "\n".join(text.rstrip().splitlines()[-lines:])


def wait_kernel(kernel_id: str, version: str, push_id: str, folder: Path, hours: float) -> Path:
    """Wait for `version` of the kernel (this push's) to end, reading that version's own session; its output lands
    in `folder`. UserError with the log's tail (saved in `folder`) when it errors or is cancelled, when its output
    lacks this push's id, and as soon as a later version exists while it has not ended (another push replaced it:
    waiting on would last until the push is killed)."""
    ref = f"{kernel_id}/{version}"
    deadline = time.monotonic() + hours * 3600
    unseen = 0
    while True:
        state, failure = kernel_state(kernel_id, version, missing_ok=True)
        unseen += state == "unseen"
        if unseen >= UNSEEN_VERSION_POLLS:
            raise UserError(f"`kaggle kernels status {ref}`: Kaggle does not know version {version} of {kernel_id} "
                            f"({unseen} polls since its push); check https://www.kaggle.com/code/{kernel_id}")
        if state in ("complete", "error", "cancel_requested", "cancel_acknowledged"):
            ours = _fetch_output(ref, folder) == push_id
            if state != "complete":
                raise UserError(f"the kernel {kernel_id} version {version} ended with status {state}"
                                f"{': ' + failure if failure else ''}. Its log and output: {folder}\n"
                                f"--- last lines of the log ---\n{log_tail(folder)}")
            if not ours:
                raise UserError(f"the kernel {kernel_id} version {version} completed, but its output ({folder}) lacks "
                                f"this push's id ({PUSH_MARKER}): it is not the kernel this push stamped. Check "
                                f"https://www.kaggle.com/code/{kernel_id}; nothing was submitted")
            return folder
        if state != "unseen" and kernel_state(kernel_id, int(version) + 1, missing_ok=True)[0] != "unseen":
            raise UserError(f"another push of {kernel_id} made version {int(version) + 1} while this push waited on "
                            f"version {version} (status {state}): two pushes of one kernel at once. This one stops; "
                            f"nothing was submitted. Check https://www.kaggle.com/code/{kernel_id}")
        if time.monotonic() > deadline:
            raise UserError(f"gave up waiting for {kernel_id} version {version} after {hours:g} h; check it on "
                            f"kaggle.com")
        time.sleep(POLL_SECONDS)


# ---- push -------------------------------------------------------------------------------------------

def push(run_dir, bundle_dir=None, dry_run: bool = False, message: str = "arena submission", poll: bool = True):
    """`arena push`: package (unless --bundle), check model access, create or version both datasets, push the
    kernel pinned to them, wait for that version, then submit it. Without credentials: UserError before any
    network call."""
    run = RunFolder(run_dir)
    if bundle_dir is not None:  # every check `arena package` makes, and that it is this run's, before any kaggle call
        problems = bundle_problems(Bundle(bundle_dir))
        _raise(problems or built_from_problems(Bundle(bundle_dir), run))
    # `arena runs --fetch-lb` finds the run's leaderboard score by this tag in the submission message.
    submit_message = tag_message(message, run.root.name)
    if dry_run:
        creds = find_credentials()
        warn_permissions(creds)
        user = creds.user or PLACEHOLDER_USER
    else:
        require_credentials()  # before anything reaches the network; the user name comes from the CLI below
        user = None

    if bundle_dir is not None:
        bundle = Bundle(bundle_dir)
        cfg = bundle_config(bundle)
        if bundle.preflight.is_file():
            print(preflight_mod.format_preflight(json.loads(bundle.preflight.read_text(encoding="utf-8"))))
    elif dry_run:
        cfg = config_mod.load_run(run)
        _raise(base_model_problems(cfg))
        bundle = Bundle(run.new_bundle_path())
        print(f"would package the run first: arena package --run {run.root} --out {bundle.root}")
        print(preflight_mod.format_preflight(preflight_mod.preflight(run, cfg)))
    else:
        bundle = Bundle(package(run.root))
        cfg = bundle_config(bundle)

    if dry_run:
        meta = (json.loads(bundle.kernel_metadata.read_text(encoding="utf-8")) if bundle.kernel_metadata.is_file()
                else kernel_metadata(cfg, user))  # not packaged yet: from the config
        _print_plan(bundle, cfg, user, message, submit_message, meta.get("model_sources", []))
        return None

    _raise(base_model_problems(cfg))
    if not any(w.name.startswith("transformers-") for w in bundle.wheels.glob("*.whl")):
        raise UserError(f"{bundle.wheels}: no wheelhouse (packaged with --no-wheels?); the offline kernel "
                        f"could not install transformers 5. Run `arena package --run {run.root}` without --no-wheels")
    k = cfg.kaggle
    user = kaggle_cli_user()
    write_metadata(bundle, cfg, user)  # this account's ids, unpinned, to read the model sources
    check_model_access(json.loads(bundle.kernel_metadata.read_text(encoding="utf-8")).get("model_sources", []))
    versions = {slug: push_dataset(folder, f"{user}/{slug}", message)
                for folder, slug in ((bundle.adapter_dataset, k.adapter_dataset_slug),
                                     (bundle.wheels, k.wheels_dataset_slug))}
    write_metadata(bundle, cfg, user, versions)  # dataset_sources pinned to the versions just made
    push_id = uuid.uuid4().hex
    stamp_push_id(bundle, push_id)
    out = run_kaggle(["kernels", "push", "-p", str(bundle.kernel)]).stdout
    match = re.search(r"Kernel version (\d+) successfully pushed", out)
    kernel_id, version = f"{user}/{k.kernel_slug}", match.group(1)
    folder = run.root / KAGGLE_FOLDER / f"{k.kernel_slug}-v{version}"
    submit = _submit_command(cfg, kernel_id, version, submit_message)
    if not poll:
        print(f"pushed {kernel_id} version {version}; when it completes, submit it with:\n  kaggle {shlex.join(submit)}")
        return version
    wait_kernel(kernel_id, version, push_id, folder, k.time_limit_hours + 1)
    if not (folder / SUBMISSION_FILE).is_file():
        raise UserError(f"the kernel {kernel_id} version {version} completed without a {SUBMISSION_FILE} in its "
                        f"output ({folder}); nothing was submitted")
    ref = re.search(SUBMISSION_REF, run_kaggle(submit).stdout).group(1)  # judged: the line is there
    record = {"kernel": kernel_id, "version": int(version), "ref": int(ref), "message": submit_message,
              "datasets": versions, "push_id": push_id,
              "submitted_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    write_text(folder / "submitted.json", json.dumps(record, indent=2) + "\n")
    print(f"submitted {kernel_id} version {version} (submission {ref}); scores: arena runs --fetch-lb")
    return version

