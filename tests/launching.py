"""Several CPU processes launched as accelerate launches them on GPUs (gloo): the launch line and the tiny run's
settings the launched processes train with.

`python -m tests.launching fsdp-on-cpu MODULE ARGS...` runs `python -m MODULE ARGS` in a process that `accelerate
launch` started from an FSDP config, with the one gate that keeps FSDP off CPUs opened: accelerate 1.15 applies the
launched FSDP plugin only to accelerator types (AcceleratorState turns MULTI_GPU into FSDP, never MULTI_CPU), so on
CPU the Trainer would silently run plain data parallel. Everything else (the config's FSDP_* settings, accelerate's
preparation of the model, the Trainer's checkpoints) is the library's own; each rank prints `FSDP {json}`: what the
preparation sharded."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DDP_2 = REPO / "configs" / "accelerate" / "ddp-2.yaml"
FSDP_RECIPE = REPO / "configs" / "accelerate" / "fsdp-qlora-8.yaml"  # configs/llama3-70b-qlora-fsdp8.yaml's launch
HANG_DUMP_MARGIN_S = 20  # a hung rank prints its stack this long before the launch times out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(*args: str, cwd: Path, config: Path = DDP_2, processes: int | None = None,
           timeout: float = 600) -> subprocess.CompletedProcess:
    """`accelerate launch --config_file CONFIG [--num_processes N] -m ARGS` (ddp-2.yaml: 2 processes), from `cwd`.
    Past `timeout` seconds the launcher and every rank it started are killed (a rank hung in a collective would
    otherwise outlive the test) and the result says so: return code -9, "timed out" in stderr."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACCELERATE_", "FSDP_", "LOCAL_RANK", "RANK",
                                                                       "WORLD_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env["ARENA_TEST_DUMP_STACKS_AFTER_S"] = str(max(1, timeout - HANG_DUMP_MARGIN_S))
    count = ["--num_processes", str(processes)] if processes else []
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config), *count,
               "--main_process_port", str(free_port()), "-m", *args]
    with subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            return subprocess.CompletedProcess(command, -9, out, f"{err}\ntimed out after {timeout:.0f} s")
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


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


def fsdp_on_cpu(module: str, *args: str) -> None:
    """`python -m module args` with accelerate's launched FSDP plugin applied on CPU (see the module docstring).
    The interpreter's finalization, if the rank reaches it, prints FINALIZED (processes.leave skips it)."""
    import atexit
    import faulthandler
    import runpy

    import accelerate.accelerator
    import torch.distributed as dist
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedType
    from torch.distributed.tensor import DTensor

    faulthandler.dump_traceback_later(float(os.environ.get("ARENA_TEST_DUMP_STACKS_AFTER_S", 600)), exit=True)
    init, prepare = AcceleratorState.__init__, accelerate.accelerator.fsdp2_prepare_model

    def init_with_fsdp_on_cpu(self, *a, fsdp_plugin=None, **kw):
        init(self, *a, fsdp_plugin=fsdp_plugin, **kw)
        if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
            self.distributed_type, self.fsdp_plugin = DistributedType.FSDP, fsdp_plugin

    def reported_prepare(accelerator, model):
        model = prepare(accelerator, model)
        params = dict(model.named_parameters())
        four_bit = [p for name, p in params.items() if name.endswith("base_layer.weight") and p.shape[-1] == 1]
        print("FSDP " + json.dumps({
            "rank": dist.get_rank(), "version": accelerator.state.fsdp_plugin.fsdp_version, "params": len(params),
            "sharded": sum(isinstance(p, DTensor) for p in params.values()),
            "four_bit_sharded": sum(isinstance(p, DTensor) and p.to_local().shape[0] < p.shape[0] for p in four_bit),
            "four_bit": len(four_bit)}), flush=True)
        return model

    AcceleratorState.__init__, accelerate.accelerator.fsdp2_prepare_model = init_with_fsdp_on_cpu, reported_prepare
    atexit.register(print, "FINALIZED", flush=True)
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    if sys.argv[1:2] != ["fsdp-on-cpu"]:
        raise SystemExit("usage: python -m tests.launching fsdp-on-cpu MODULE ARGS...")
    fsdp_on_cpu(*sys.argv[2:])
