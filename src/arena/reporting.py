"""`train.report_to`: the Trainer's logging integrations (tensorboard, wandb), checked before any model loads and
pointed at the run folder. Neither package is imported here: the Trainer imports the one chosen."""

from __future__ import annotations

import importlib.util
import netrc
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from arena.config import Config
from arena.layout import RunFolder

# What each choice needs importable (any one of them), and how to get it.
NEEDS = {
    "tensorboard": (("tensorboard", "tensorboardX"), "pip install -r requirements.txt (it pins tensorboard)"),
    "wandb": (("wandb",), "pip install wandb (not in requirements.txt); without an API key it logs offline"),
}


def problems(cfg: Config) -> list[str]:
    choice = cfg.train.report_to
    if choice not in NEEDS:
        return []
    modules, how = NEEDS[choice]
    if any(importlib.util.find_spec(m) is not None for m in modules):
        return []
    return [f"train.report_to: {choice} is not installed here: {how}"]


def _wandb_key_known() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


@contextmanager
def environment(cfg: Config, run: RunFolder) -> Iterator[None]:
    """While training: wandb logs into the run's logs/ folder, offline when no API key is known (unless WANDB_MODE
    says otherwise); the variables set here are restored afterwards."""
    values = {}
    if cfg.train.report_to == "wandb":
        values = {"WANDB_DIR": str(run.logs), "WANDB_PROJECT": "arena"}
        if not _wandb_key_known():
            values["WANDB_MODE"] = "offline"
        values = {k: v for k, v in values.items() if k not in os.environ}
        Path(run.logs).mkdir(parents=True, exist_ok=True)
    os.environ.update(values)
    try:
        yield
    finally:
        for key in values:
            os.environ.pop(key, None)


def attach(trainer, run: RunFolder) -> None:
    """TensorBoard event files go to the run's logs/ folder (the Trainer's default is under checkpoints/)."""
    from transformers.integrations import TensorBoardCallback

    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, TensorBoardCallback):
            callback.logging_dir = str(run.logs)
