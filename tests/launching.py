"""Several CPU processes launched as accelerate launches them on GPUs (gloo): the launch line and the tiny run's
settings the launched processes train with."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DDP_2 = REPO / "configs" / "accelerate" / "ddp-2.yaml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`accelerate launch --config_file configs/accelerate/ddp-2.yaml -m ARGS` (2 processes), from `cwd`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACCELERATE_", "LOCAL_RANK", "RANK", "WORLD_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(DDP_2),
                           "--main_process_port", str(free_port()), "-m", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def train_args(model_dir: Path, csv: Path, runs: Path, *extra: str) -> list[str]:
    return ["arena.cli", "train", "--set", "model.device=cpu", "--set", f"model.path={model_dir}", "--set",
            "model.family=plain", "--set", f"data.train={csv}", "--set", "data.folds=4", "--set",
            "prompt.max_length=96", "--set", "prompt.min_tokens=8", "--set", "infer.max_length=96", "--set",
            "peft.layers_to_transform=null", "--set", f"train.runs_dir={runs}", "--set", "train.per_device_batch_size=2",
            "--set", "train.grad_accum=2", "--set", "train.max_steps=4", "--set", "train.eval_steps=2", *extra]


def cfg_json(model_dir: Path, csv: Path, runs: Path, **sections) -> str:
    cfg = {"model": {"path": str(model_dir), "family": "plain", "device": "cpu"},
           "prompt": {"max_length": 96, "min_tokens": 8}, "infer": {"max_length": 96},
           "peft": {"layers_to_transform": None},
           "data": {"train": str(csv), "folds": 4},
           "train": {"runs_dir": str(runs), "per_device_batch_size": 2, "grad_accum": 2, "max_steps": 6,
                     "eval_steps": 2}}
    for section, values in sections.items():
        cfg.setdefault(section, {}).update(values)
    return json.dumps(cfg)
