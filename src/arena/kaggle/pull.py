"""`arena kaggle pull KERNEL [--version N]`: a training kernel's output (`kaggle kernels output`) brought into the
runs folder as a run, checked like any run first (damaged or partial output named, nothing half-written): a
finished run goes on to `arena package`, an unfinished one (stopped for time) is resumable."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from datetime import datetime
from pathlib import Path

from arena import budget
from arena import config as config_mod
from arena.errors import UserError
from arena.kaggle.credentials import require_credentials
from arena.kaggle.push import kernel_state
from arena.kaggle.remote import fetch_kernel_output
from arena.layout import RunFolder
from arena.model import check_trained
from arena.records import record_or_none
from arena.writes import atomic_folder, write_text

SOURCE = "kaggle_source.json"  # in a pulled run folder: the kernel and version it came from
KERNEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*/[a-z0-9][a-z0-9-]*[a-z0-9]")


def source(run_root: str | Path) -> dict | None:
    """Where a pulled run came from ({"kernel", "version", "pulled"}), None for a run trained here."""
    return record_or_none(Path(run_root) / SOURCE)


def run_problems(run: RunFolder) -> list[str]:
    """What keeps a pulled run from being used: its config, and either a whole adapter and metrics (finished) or
    a whole checkpoint to resume from (unfinished; an adapter without metrics.json is a finish cut short)."""
    from arena.train import last_complete_checkpoint  # not at the top: `arena runs` reads source() without transformers

    problems = []
    try:
        config_mod.load(run.config)
    except UserError as exc:
        problems += exc.problems
    if run.is_finished():
        problems += check_trained(run)
    elif last_complete_checkpoint(run, quiet=True) is None:
        problems.append(f"{run.root}: unfinished and without a whole checkpoint (partial output: the kernel ended "
                        f"before its first complete save)")
    return problems


def _incomplete_checkpoints(run: RunFolder) -> list[str]:
    from arena.train import last_complete_checkpoint  # see run_problems

    whole = last_complete_checkpoint(run, quiet=True)
    newest = int(whole.name.split("-")[1]) if whole else -1
    return sorted(p.name for p in run.checkpoints.glob("checkpoint-*")
                  if p.name.split("-", 1)[1].isdigit() and int(p.name.split("-")[1]) > newest)


def _destination(runs: Path, name: str, kernel: str, version: int | None) -> Path:
    """Where a pull of the run `name` goes: runs/<name>; when that is taken (an earlier pull, a run trained here),
    <name>-kaggle-v<N> (or -vlatest), then -2, -3, ...: never over an earlier folder. UserError when one of them
    already holds this version of this kernel."""
    base = f"{name}-kaggle-v{version or 'latest'}"
    for path in [runs / name, runs / base, *sorted(runs.glob(f"{base}-*"))]:
        earlier = source(path) if path.is_dir() else None
        if version is not None and earlier and (earlier.get("kernel"), earlier.get("version")) == (kernel, version):
            raise UserError(f"{path} already holds {kernel} version {version} (pulled {earlier.get('pulled')}); "
                            f"nothing was written. Remove that folder to pull it again")
    if not (runs / name).exists():
        return runs / name
    dest, n = runs / base, 1
    while dest.exists():
        n += 1
        dest = runs / f"{base}-{n}"
    print(f"note: {runs / name} exists (an earlier pull, or a run trained here): this pull goes to {dest}")
    return dest


def import_output(output: Path, kernel: str, version: int | None, runs_dir: str | Path) -> Path:
    """The one run folder in a kernel's downloaded output, checked, copied into `runs_dir` (built aside, renamed
    into place) with its SOURCE record; returns the new run folder."""
    found = sorted(p.parent for p in Path(output).glob("**/config.yaml")
                   if (p.parent / "checkpoints").is_dir() or (p.parent / "adapter").is_dir())
    if not found:
        listed = sorted(str(p.relative_to(output)) for p in Path(output).rglob("*") if p.is_file())[:10]
        raise UserError(f"{kernel}: its output holds no run folder (runs/<run>/config.yaml with checkpoints/ or "
                        f"adapter/); files: {listed or 'none'}")
    if len(found) > 1:
        raise UserError(f"{kernel}: its output holds several run folders: {[str(p.relative_to(output)) for p in found]}")
    run = RunFolder(found[0])
    problems = run_problems(run)
    if problems:
        raise UserError(problems=[f"{kernel} output: {p}" for p in problems])
    dest = _destination(Path(runs_dir), run.root.name, kernel, version)
    with atomic_folder(dest, "pulled run") as staging:
        shutil.copytree(run.root, staging, dirs_exist_ok=True)
        write_text(staging / SOURCE, json.dumps({"kernel": kernel, "version": version,
                                                 "pulled": datetime.now().isoformat(timespec="seconds")}, indent=2))
    pulled = RunFolder(dest)
    for name in _incomplete_checkpoints(pulled):
        print(f"note: {name} is incomplete (the kernel was stopped while saving it); --resume sets it aside")
    if pulled.is_finished():
        print(f"pulled a finished run: {dest}\n  next: arena package --run {dest}")
    else:
        stops = budget.recorded_stops(dest)
        where = ("its finish was cut short (an adapter, no metrics.json)" if pulled.adapter.exists()
                 else f"stopped for time after step {stops[-1]['step']} of {stops[-1]['max_steps']}" if stops
                 else "unfinished")
        print(f"pulled an unfinished run ({where}): {dest}\n  continue on Kaggle: arena kaggle train --resume "
              f"(attaches the kernel's output)")
    return dest


def pull(kernel: str, version: int | None = None, runs_dir: str | Path = "runs") -> Path:
    """`arena kaggle pull`: the kernel's output via `kaggle kernels output`, imported as a run."""
    if not KERNEL_ID.fullmatch(kernel):
        raise UserError(f"{kernel}: not a kernel id (owner/kernel-slug)")
    if version is not None and version < 1:
        raise UserError(f"--version {version}: kernel versions start at 1")
    require_credentials()
    ref = kernel if version is None else f"{kernel}/{version}"
    state, _ = kernel_state(kernel, version)  # that version's session (the latest one without --version)
    if state in ("running", "queued", "new"):
        raise UserError(f"{ref} is still {state}: pull it when it completes (kaggle kernels status {ref})")
    runs = Path(runs_dir)
    runs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".kaggle-pull-", dir=runs) as tmp:
        fetch_kernel_output(ref, Path(tmp))  # that version's output; judged: a failure raises
        return import_output(Path(tmp), kernel, version, runs)
