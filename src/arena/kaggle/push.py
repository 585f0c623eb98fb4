"""`arena push`: package (unless given a bundle), create or version both datasets, push the kernel, wait for it,
and submit it to the code competition; with --dry-run, print every kaggle command and run none."""

from __future__ import annotations

import json
import re
import shlex
import time
from pathlib import Path

from arena import config as config_mod
from arena.config import Config
from arena.errors import UserError
from arena.kaggle import preflight as preflight_mod
from arena.kaggle.bundle import base_model_problems, bundle_config, bundle_problems, package, write_metadata
from arena.kaggle.credentials import PLACEHOLDER_USER, find_credentials, require_credentials, warn_permissions
from arena.kaggle.leaderboard import tag_message
from arena.kaggle.remote import kaggle_executable_display, run_kaggle
from arena.layout import SUBMISSION_FILE, Bundle, RunFolder

POLL_SECONDS = 60
DATASET_READY_TIMEOUT_S = 30 * 60


def _dataset_commands(folder: Path, dataset_id: str, message: str) -> tuple[list[str], list[str], list[str]]:
    status = ["datasets", "status", dataset_id]
    create = ["datasets", "create", "-p", str(folder), "--dir-mode", "zip"]
    version = ["datasets", "version", "-p", str(folder), "-m", message, "--dir-mode", "zip"]
    return status, create, version


def _submit_command(cfg: Config, kernel_id: str, version: str, message: str) -> list[str]:
    return ["competitions", "submit", cfg.kaggle.competition, "-k", kernel_id, "-v", version,
            "-f", SUBMISSION_FILE, "-m", message]


def _raise(problems: list[str]) -> None:
    if problems:
        raise UserError(problems=problems)


def _print_plan(bundle: Bundle, cfg: Config, user: str, message: str, submit_message: str) -> None:
    k = cfg.kaggle
    print(f"dry run: nothing is sent to Kaggle. `arena push` would run ({kaggle_executable_display()}):")
    for folder, slug in ((bundle.adapter_dataset, k.adapter_dataset_slug), (bundle.wheels, k.wheels_dataset_slug)):
        status, create, version = _dataset_commands(folder, f"{user}/{slug}", message)
        print(f"  kaggle {shlex.join(status)}")
        print(f"  kaggle {shlex.join(create)}")
        print(f"      # when the status check finds the dataset: kaggle {shlex.join(version)}")
        print(f"      # then `kaggle {shlex.join(status)}` until it says ready")
    kernel_id = f"{user}/{k.kernel_slug}"
    print(f"  kaggle {shlex.join(['kernels', 'push', '-p', str(bundle.kernel)])}")
    print(f"  kaggle {shlex.join(['kernels', 'status', kernel_id])}")
    print(f"      # every {POLL_SECONDS} s until complete (or error: stop)")
    print(f"  kaggle {shlex.join(_submit_command(cfg, kernel_id, '<N>', submit_message))}")
    print("      # <N>: the version number `kernels push` reports")


def _wait_dataset_ready(dataset_id: str) -> None:
    deadline = time.monotonic() + DATASET_READY_TIMEOUT_S
    while True:
        state = run_kaggle(["datasets", "status", dataset_id], check=False).stdout.strip().lower()
        if "ready" in state:
            return
        if "error" in state or time.monotonic() > deadline:
            raise UserError(f"dataset {dataset_id} is not ready ({state or 'no status'}); check it on kaggle.com")
        time.sleep(POLL_SECONDS)


def _push_dataset(folder: Path, dataset_id: str, message: str) -> None:
    status, create, version = _dataset_commands(folder, dataset_id, message)
    exists = run_kaggle(status, check=False).returncode == 0
    run_kaggle(version if exists else create)
    _wait_dataset_ready(dataset_id)


def _wait_kernel(kernel_id: str, hours: float) -> None:
    deadline = time.monotonic() + hours * 3600
    while True:
        out = run_kaggle(["kernels", "status", kernel_id], check=False).stdout
        match = re.search(r'has status "([^"]+)"', out)
        state = match.group(1).lower() if match else ""
        if "complete" in state:
            return
        if "error" in state or "cancel" in state:
            raise UserError(f"the kernel {kernel_id} ended with status {match.group(1)}; its log: "
                            f"kaggle kernels output {kernel_id} -p <folder>")
        if time.monotonic() > deadline:
            raise UserError(f"gave up waiting for {kernel_id} after {hours:g} h; check it on kaggle.com")
        time.sleep(POLL_SECONDS)


def push(run_dir, bundle_dir=None, dry_run: bool = False, message: str = "arena submission", poll: bool = True):
    """`arena push`: package (unless --bundle), create or version both datasets, push the kernel, wait for
    it, then submit it to the code competition. Without credentials: UserError before any network call."""
    run = RunFolder(run_dir)
    if bundle_dir is not None:  # every check `arena package` makes, before any kaggle call
        _raise(bundle_problems(Bundle(bundle_dir)))
    # `arena runs --fetch-lb` finds the run's leaderboard score by this tag in the submission message.
    submit_message = tag_message(message, run.root.name)
    creds = require_credentials() if not dry_run else find_credentials()
    if dry_run:
        warn_permissions(creds)
    user = creds.user or PLACEHOLDER_USER

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
        _print_plan(bundle, cfg, user, message, submit_message)
        return None

    _raise(base_model_problems(cfg))
    if not any(w.name.startswith("transformers-") for w in bundle.wheels.glob("*.whl")):
        raise UserError(f"{bundle.wheels}: no wheelhouse (packaged with --no-wheels?); the offline kernel "
                        f"could not install transformers 5. Run `arena package --run {run.root}` without --no-wheels")
    kernel_meta = json.loads(bundle.kernel_metadata.read_text(encoding="utf-8"))
    if kernel_meta["id"] != f"{user}/{cfg.kaggle.kernel_slug}":
        print(f"setting the bundle's Kaggle user to {user}")
        write_metadata(bundle, cfg, user)

    k = cfg.kaggle
    _push_dataset(bundle.adapter_dataset, f"{user}/{k.adapter_dataset_slug}", message)
    _push_dataset(bundle.wheels, f"{user}/{k.wheels_dataset_slug}", message)
    out = run_kaggle(["kernels", "push", "-p", str(bundle.kernel)]).stdout
    match = re.search(r"Kernel version (\d+) successfully pushed", out)
    if not match:
        raise UserError("`kaggle kernels push` reported no kernel version; its output is above")
    kernel_id, version = f"{user}/{k.kernel_slug}", match.group(1)
    submit = _submit_command(cfg, kernel_id, version, submit_message)
    if not poll:
        print(f"pushed {kernel_id} version {version}; when it completes, submit it with:\n  kaggle {shlex.join(submit)}")
        return version
    _wait_kernel(kernel_id, k.time_limit_hours + 1)
    run_kaggle(submit)
    print(f"submitted {kernel_id} version {version}; scores: kaggle competitions submissions {k.competition}")
    return version
