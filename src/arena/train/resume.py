"""Run folders and resuming: a new run folder decided by the main process, the run `--resume` names, and its last
complete checkpoint."""

from __future__ import annotations

import fcntl
import json
import os
import pickle
import re
import shutil
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from arena import config as config_mod
from arena import processes, task
from arena.config import SAMPLE, Config
from arena.data.rows import sample_path
from arena.errors import UserError
from arena.layout import RunFolder, folders_of, new_folder
from arena.model import tensor_shapes
from arena.records import record_or_none
from arena.writes import sha256_of, write_text

CUT_FINISH = "incomplete-finish"  # in a run folder: what a finish cut short left, set aside by a resume
# Keys a resumed run may differ in: its name and folder, and the invocation's own wall budget.
_PER_INVOCATION = {"name", "train.runs_dir", "train.max_wall_hours"}
# Where the base model and the data are now, and the Kaggle settings: not what the run trains. A resume takes the
# values the invocation gives (a training kernel's next version mounts its inputs anew); the data's content is
# checked against the hashes the run stored, so a moved file is honoured and a changed one refused.
_RELOCATABLE = ("model.path", "data.train", "data.extra", "data.teacher")


def _relocatable(key: str) -> bool:
    return key in _RELOCATABLE or key.startswith("kaggle.")


@dataclass(frozen=True)
class Resume:
    """What `--resume` asks: a run folder or "latest"; whether a recipe was named (--config) and the --set
    overrides given, which the run must already have; `accept_changes` continues the run as it was saved
    although they, its recipe file or its training files changed (each change is listed)."""

    target: str = "latest"
    recipe_named: bool = False
    overrides: tuple[str, ...] = ()
    accept_changes: bool = False


def open_run_folder(cfg: Config, cpu: bool, origin: dict | None = None) -> RunFolder:
    """A new run folder, created by the main process with the resolved config (and where it came from) and the
    hashes of its training files in it; under `accelerate launch` every other process gets the same folder, so
    checkpoints and the best model are found by all ranks."""

    def create() -> str:
        run = RunFolder(new_folder(cfg.train.runs_dir, cfg.name))
        hold(run)
        config_mod.dump(cfg, run.config)
        if origin is not None:
            write_text(run.recipe, json.dumps(origin, indent=2))
        write_text(run.data_hashes, json.dumps(data_hashes(cfg), indent=2))
        return str(run.root)

    return RunFolder(processes.decided_by_main(create, cpu))


_HELD: dict[Path, int] = {}  # run folder -> the open lock file this process holds it by


def hold(run: RunFolder) -> None:
    """Hold the run folder for this process (its main process, under `accelerate launch`) until release_held() or
    its end: an flock on the folder's lock file, which the kernel drops when the process dies, however it dies. A
    second process, a `--resume` of the same run, is refused naming the holder (pid, host, since when)."""
    key = run.root.resolve()
    if key in _HELD:
        return
    try:
        fd = os.open(run.lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise UserError(f"{run.lock}: cannot be written ({exc.strerror}): training writes into {run.root}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 4096).decode("utf-8", "replace")
        os.close(fd)
        try:
            who = json.loads(holder)
            who = f"process {who['pid']} on {who['host']}, since {who['since']}"
        except (ValueError, TypeError, KeyError):
            who = "another process"
        raise UserError(f"{run.root}: in use by {who} (arena train): one process trains a run folder at a time; "
                        f"wait for it to end, or stop it, then resume") from None
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "since": time.strftime("%Y-%m-%d %H:%M:%S %Z")}).encode("utf-8"))
    _HELD[key] = fd


def release_held() -> None:
    """Let go of every run folder this process holds (a run's training is over, whatever its outcome)."""
    while _HELD:
        os.close(_HELD.popitem()[1])


def data_hashes(cfg: Config) -> dict[str, str]:
    """sha256 of every file the run trains from, keyed "<config key> <path>"."""
    train = sample_path(cfg.data.sample_rows, task.of_config(cfg)) if cfg.data.train == SAMPLE else Path(cfg.data.train)
    files = [("data.train", train), *(("data.extra", Path(p)) for p in cfg.data.extra),
             *(("data.teacher", Path(p)) for p in cfg.data.teacher)]
    return {f"{key} {path}": sha256_of(path) for key, path in files}


def relocations(cfg: Config, request: Resume) -> list[str]:
    """`key=value` of the relocatable keys this invocation gives (by --set, or every one of a named recipe)."""
    asked = config_mod.flat(cfg.to_dict())
    given = {o.split("=", 1)[0].strip() for o in request.overrides}
    keys = [k for k in asked if _relocatable(k) and (k in given or request.recipe_named)]
    return [f"{k}={json.dumps(asked[k])}" for k in keys]


def resume_point(cfg: Config, resume: str | Resume) -> tuple[str, str | None, list[str]]:
    """(run folder, its last complete checkpoint or None, the relocations to apply to its saved config) for
    --resume, after refusing what the resume cannot honour (resume_changes); run by the main process only, since it
    moves an incomplete checkpoint aside."""
    request = resume if isinstance(resume, Resume) else Resume(resume)
    run = find_resumable(cfg, request.target)
    hold(run)
    moved = relocations(cfg, request)
    changes = resume_changes(cfg, run, request, moved)
    if changes and not request.accept_changes:
        raise UserError(problems=[f"--resume {run.root}: {c}" for c in changes] + [
            "a resume continues the run as it was saved: drop these changes (train a new run for them), or pass "
            "--accept-changes to continue it as saved anyway"])
    for change in changes:
        print(f"note: --accept-changes: continuing {run.root} as saved although {change}", file=sys.stderr)
    checkpoint = last_complete_checkpoint(run)
    if checkpoint is not None:
        check_pickles(checkpoint)
    set_aside_cut_finish(run)
    return str(run.root), None if checkpoint is None else str(checkpoint), moved


# The pickles the Trainer loads from a checkpoint when it resumes (with torch.load(weights_only=True), after the
# model has loaded); training_args.bin is never loaded.
CHECKPOINT_PICKLES = ("optimizer.pt", "optimizer.bin", "rank*-of-*-optimizer.pt", "scheduler.pt", "scaler.pt",
                      "rng_state*.pth")


def check_pickles(checkpoint: Path) -> None:
    """Every pickle the Trainer will load from `checkpoint`, loaded as it loads them (weights only, numpy's arrays
    allowed as transformers allows them for the RNG state; memory-mapped, on the CPU) before the model loads: a file
    that asks for code (a global no weights-only load allows) or does not load is named, and nothing runs."""
    import torch
    from transformers.trainer_pt_utils import safe_globals

    for pattern in CHECKPOINT_PICKLES:
        for path in sorted(checkpoint.glob(pattern)):
            try:
                with safe_globals():
                    torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except pickle.UnpicklingError as exc:
                asks = re.search(r"GLOBAL (\S+)", str(exc))
                raise UserError(f"{path}: not only weights: it asks to run {asks.group(1) if asks else 'code'} when "
                                f"loaded, which arena never does; delete {checkpoint.name} (a resume then takes the "
                                f"checkpoint before it) or train a new run") from None
            except Exception as exc:  # noqa: BLE001 - any failure here is the Trainer's failure after the model loads
                raise UserError(f"{path}: does not load ({type(exc).__name__}); the checkpoint is damaged: delete "
                                f"{checkpoint.name} (a resume then takes the checkpoint before it) or train a new "
                                f"run") from None


def set_aside_cut_finish(run: RunFolder) -> None:
    """What a finish cut short left (an adapter, validation predictions, a loss curve, but no metrics.json) moved
    into CUT_FINISH (replacing an earlier one): the resumed run's finish writes them anew."""
    left = [path for path in (run.adapter, run.val_predictions, run.loss_curve) if path.exists()]
    if not left:
        return
    aside = run.root / CUT_FINISH
    shutil.rmtree(aside, ignore_errors=True)
    aside.mkdir()
    for path in left:
        path.rename(aside / path.name)
    print(f"note: {run.root} has no {run.metrics.name}: its finish was cut short; what it left "
          f"({', '.join(path.name for path in left)}) is moved aside to {CUT_FINISH}/", file=sys.stderr)


def resume_changes(cfg: Config, run: RunFolder, request: Resume, moved: list[str]) -> list[str]:
    """What this invocation asks that the saved run does not have: --set values, the named recipe's values, an
    edit of the run's recipe file since it started, a training file whose content changed (read where `moved`,
    the relocations, says it is now)."""
    saved = config_mod.flat(config_mod.load(run.config).to_dict())
    asked = config_mod.flat(cfg.to_dict())
    changes, named = [], set()
    for override in request.overrides:
        key = override.split("=", 1)[0].strip()
        named.add(key)
        if key not in _PER_INVOCATION and not _relocatable(key) and asked.get(key) != saved.get(key):
            changes.append(f"--set {override}, but the run has {key}={saved.get(key)!r}")
    if request.recipe_named:
        changes += [f"the recipe asks {key}={asked.get(key)!r}, but the run has {key}={saved.get(key)!r}"
                    for key in sorted(set(asked) | set(saved) - named)
                    if key not in _PER_INVOCATION | named and not _relocatable(key) and asked.get(key) != saved.get(key)]
    # a damaged record is a change too: what it held can no longer be compared
    origin = record_or_none(run.recipe, changes, missing_is_a_problem=False) or {}
    recipe = Path(origin.get("file") or "")
    if origin.get("recipe") is not None and recipe.is_file():
        try:
            now = config_mod.flat(config_mod.load(recipe).to_dict())
        except UserError:
            now = None
        then = config_mod.flat(origin["recipe"])
        edited = sorted(k for k in set(now or {}) | set(then) if (now or {}).get(k) != then.get(k) and not _relocatable(k))
        if now is None or edited:
            changes.append(f"its recipe {recipe} changed since the run started"
                           + (f" ({', '.join(edited[:5])}{' ...' if len(edited) > 5 else ''})" if edited else ""))
    stored = record_or_none(run.data_hashes, changes, missing_is_a_problem=False)
    if stored:
        reading = config_mod.load(run.config, moved)  # the files the resumed run will read
        try:
            current = data_hashes(reading)
        except OSError as exc:
            changes.append(f"a training file cannot be read ({exc})")
        else:  # compared by key and position: a file may have moved, its content may not have changed
            then, now = list(stored.items()), list(current.items())
            changes += [f"{entry.split(' ', 1)[0]}: {now[i][0].split(' ', 1)[1] if i < len(now) else 'a file'} is "
                        f"not the content the run started with (its hash differs): validation rows would move into "
                        f"training" for i, (entry, digest) in enumerate(then)
                        if i >= len(now) or now[i][0].split(" ", 1)[0] != entry.split(" ", 1)[0] or now[i][1] != digest]
            if len(now) > len(then):
                changes.append(f"{len(now) - len(then)} more training file(s) than the run started with")
    return changes



def find_resumable(cfg: Config, resume: str) -> RunFolder:
    """--resume: the given run folder, or ("latest") the newest unfinished run with a checkpoint whose name is
    exactly this config's (`exp` never resumes `exp-big-...`). Unfinished: no metrics.json, the finish's last
    write (an adapter without it is a finish cut short)."""
    if resume != "latest":
        run = RunFolder(resume)
        if not run.config.is_file():
            raise UserError(f"--resume {resume}: not a run folder (no {run.config.name})")
        if run.is_finished():
            raise UserError(f"--resume {resume}: this run finished (it has {run.adapter.name}/ and "
                            f"{run.metrics.name}); train a new one")
        return run
    runs = [RunFolder(p) for p in folders_of(cfg.train.runs_dir, cfg.name)]
    unfinished = [(checkpoint.stat().st_mtime, r) for r in runs if not r.is_finished()
                  and (checkpoint := last_complete_checkpoint(r, quiet=True))]
    if not unfinished:
        raise UserError(f"--resume latest: no unfinished run of '{cfg.name}' with a checkpoint under {cfg.train.runs_dir}")
    return max(unfinished, key=lambda pair: pair[0])[1]


def last_complete_checkpoint(run: RunFolder, quiet: bool = False) -> Path | None:
    """The run's newest checkpoint whose files are whole. The Trainer writes trainer_state.json last, so a run
    killed while saving leaves a checkpoint without it (or with part of it): such a checkpoint is renamed
    `incomplete-checkpoint-N` (kept, out of the Trainer's way) and the one before it is used."""
    checkpoints = [p for p in run.checkpoints.glob("checkpoint-*") if p.name.split("-", 1)[1].isdigit()]
    for checkpoint in sorted(checkpoints, key=lambda p: int(p.name.split("-", 1)[1]), reverse=True):
        problems: list[str] = []
        try:
            json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            problems.append("trainer_state.json missing or partial")
        if (checkpoint / "adapter_model.safetensors").exists():
            tensor_shapes(checkpoint / "adapter_model.safetensors", problems)
        if problems:
            if not quiet:
                aside = checkpoint.with_name(f"incomplete-{checkpoint.name}")
                checkpoint.rename(aside)
                print(f"note: {checkpoint} is incomplete ({problems[0]}): the run was stopped while saving it; "
                      f"moved aside to {aside.name}", file=sys.stderr)
            continue
        return checkpoint
    return None
