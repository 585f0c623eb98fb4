"""Run folders and resuming: a new run folder decided by the main process, the run `--resume` names, and its last
complete checkpoint."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from arena import config as config_mod
from arena import processes
from arena.config import Config
from arena.errors import UserError
from arena.layout import RunFolder, new_folder
from arena.writes import write_text


def open_run_folder(cfg: Config, cpu: bool, origin: dict | None = None) -> RunFolder:
    """A new run folder, created by the main process with the resolved config (and where it came from) in it;
    under `accelerate launch` every other process gets the same folder, so checkpoints and the best model are
    found by all ranks."""

    def create() -> str:
        run = RunFolder(new_folder(cfg.train.runs_dir, cfg.name))
        config_mod.dump(cfg, run.config)
        if origin is not None:
            write_text(run.recipe, json.dumps(origin, indent=2))
        return str(run.root)

    return RunFolder(processes.decided_by_main(create, cpu))


def resume_point(cfg: Config, resume: str) -> tuple[str, str | None]:
    """(run folder, its last complete checkpoint or None) for --resume; run by the main process only, since it
    moves an incomplete checkpoint aside."""
    run = find_resumable(cfg, resume)
    checkpoint = last_complete_checkpoint(run)
    return str(run.root), None if checkpoint is None else str(checkpoint)


def find_resumable(cfg: Config, resume: str) -> RunFolder:
    """--resume: the given run folder, or ("latest") the newest unfinished run of this config with a checkpoint."""
    if resume != "latest":
        run = RunFolder(resume)
        if not run.config.is_file():
            raise UserError(f"--resume {resume}: not a run folder (no {run.config.name})")
        if run.adapter.exists():
            raise UserError(f"--resume {resume}: this run finished (it has {run.adapter.name}/); train a new one")
        return run
    runs = [RunFolder(p) for p in Path(cfg.train.runs_dir).glob(f"{cfg.name}-*") if p.is_dir()]
    unfinished = [(checkpoint.stat().st_mtime, r) for r in runs if not r.adapter.exists()
                  and (checkpoint := last_complete_checkpoint(r, quiet=True))]
    if not unfinished:
        raise UserError(f"--resume latest: no unfinished run of '{cfg.name}' with a checkpoint under {cfg.train.runs_dir}")
    return max(unfinished, key=lambda pair: pair[0])[1]


def last_complete_checkpoint(run: RunFolder, quiet: bool = False) -> Path | None:
    """The run's newest checkpoint whose files are whole. The Trainer writes trainer_state.json last, so a run
    killed while saving leaves a checkpoint without it (or with part of it): such a checkpoint is renamed
    `incomplete-checkpoint-N` (kept, out of the Trainer's way) and the one before it is used."""
    from arena.model import tensor_shapes

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
