"""Disk room for a training run: estimated from the base model's config.json before its weights load, and a disk
that fills during a save (something else wrote to it meanwhile) named as such instead of the serializer's
tracebacks."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from arena import model as model_mod
from arena.config import Config
from arena.data.features import HEAD_FEATURE_NAMES
from arena.embedded import resolve_model_path
from arena.errors import UserError
from arena.writes import free_bytes

MIB = 2**20
# What a run writes besides its checkpoints and adapter: logs, predictions, plots.
OTHER_FILES = 64 * MIB
# A save that fails with less room than this left on its disk failed for want of room (torch's serializer says
# only "iostream error" or "unexpected pos", without an errno).
NEARLY_FULL = 16 * MIB
_FULL_WORDS = ("no space left on device", "storagefull", "os error 28", "disk quota exceeded")


def trainable_parameters(cfg: Config) -> int | None:
    """Trainable parameters of the run (adapter and head), counted on the meta device from the base model's
    config.json: no weights load."""
    import torch

    path = resolve_model_path(cfg.model.path)
    hf_config = model_mod.model_config(path)
    if model_mod.adapter_problems(cfg, path, hf_config):
        return None  # the base model checks name these, with every other problem, before anything loads
    features = len(HEAD_FEATURE_NAMES) if cfg.model.length_features else 0
    _, model = model_mod.meta_prepared(cfg, hf_config, torch.float32, features)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def check_room(cfg: Config) -> None:
    """Disk room for the run, before the model loads: each checkpoint holds the trainable weights and Adam's two
    moments (float32), save_total_limit of them plus one while rotating, then the final adapter, and
    OTHER_FILES for logs, predictions and plots."""
    parameters = trainable_parameters(cfg)
    if parameters is None:
        return
    trainable = parameters * 4
    need = trainable * 3 * (cfg.train.save_total_limit + 1) + trainable + OTHER_FILES
    free = free_bytes(cfg.train.runs_dir)
    if free < need:
        raise UserError(f"{cfg.train.runs_dir}: {free / MIB:.0f} MiB free on its disk; this run needs about "
                        f"{need / MIB:.0f} MiB (train.save_total_limit={cfg.train.save_total_limit} checkpoints "
                        f"of {3 * trainable / MIB:.0f} MiB each, and the adapter)")


def disk_was_full(exc: BaseException, folder: str | Path) -> bool:
    """Whether `exc` (or one it was raised from) failed for want of room on `folder`'s disk."""
    seen = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(words in str(seen).lower() for words in _FULL_WORDS):
            return True
        seen = seen.__cause__ or seen.__context__
    return isinstance(exc, (OSError, RuntimeError)) and free_bytes(folder) < NEARLY_FULL


@contextmanager
def disk_full_is_an_error(folder: str | Path, what: str, then: str) -> Iterator[None]:
    """Writes of `what` under `folder`: a full disk becomes one UserError saying so (and `then`: what to do next)
    instead of the writer's chained tracebacks. Any other error passes unchanged."""
    try:
        yield
    except (OSError, RuntimeError) as exc:
        if not disk_was_full(exc, folder):
            raise
        raise UserError(f"{folder}: no space left on device while writing {what} ({free_bytes(folder) / MIB:.0f} MiB "
                        f"free now; something else filled the disk after the room check): {then}") from None
