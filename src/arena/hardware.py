"""What machine this is, or which one to act as: one `Hardware` value that every device decision reads (where
tensors live, the compute dtype, gradient checkpointing, the quantizations allowed, processes per machine, the
kernel's GPU check, the planner's memory and speed). No other module asks torch.cuda what the machine is.

A named profile (`--hardware t4x2`, or ARENA_HARDWARE=t4x2 for every process a command starts) takes each
decision as that machine would. On a machine without that GPU it executes them on the CPU: float16 where the
profile decides float16 (4-bit layers, LoRA and the head run forward under torch.autocast("cpu", float16)), so
a T4's numerics and code paths are rehearsed here; CUDA kernels, NCCL and speed are not.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

import torch

from arena import environment
from arena.errors import UserError

PROFILE_ENV = environment.HARDWARE  # a profile name: set by --hardware, inherited by launched processes and kernels


@dataclass(frozen=True)
class Hardware:
    name: str  # a profile name, or "detected"
    accelerator: str  # "cpu" | "cuda": the kind of machine the decisions are taken for
    gpu_name: str | None  # as `nvidia-smi -L` and torch name it ("Tesla T4")
    gpus: int  # per machine (0 on a CPU)
    memory_gib: float  # what one process can allocate on one GPU
    compute_capability: tuple[int, int] | None
    bf16: bool  # native bfloat16 (Ampere, sm 8.0, and newer)
    tensor_tflops: float = 0.0  # dense fp16/bf16 tensor-core peak (the planner's time model)
    bandwidth_gb_s: float = 0.0
    machine_shape: str | None = None  # kernel-metadata.json's machine_shape that gives this machine on Kaggle
    simulated: bool = False  # decisions from the profile, execution on this machine's CPU

    @property
    def device(self) -> str:
        """Where tensors live: the GPU of a real CUDA machine, else the CPU (also for a simulated GPU profile)."""
        return "cuda" if self.accelerator == "cuda" and not self.simulated else "cpu"

    @property
    def is_gpu(self) -> bool:
        return self.accelerator == "cuda"

    def auto_compute_dtype(self, overflows_in_float16: bool) -> torch.dtype:
        """compute_dtype auto: float32 on a CPU, bfloat16 where the GPU has it, else float16, except for a model
        whose activations overflow float16 (then float32)."""
        if not self.is_gpu:
            return torch.float32
        if self.bf16:
            return torch.bfloat16
        return torch.float32 if overflows_in_float16 else torch.float16

    def processes(self) -> int:
        """Processes per machine for inference and DDP training: one per GPU."""
        return max(1, self.gpus)

    def describe(self) -> str:
        if not self.is_gpu:
            return f"{self.name} (CPU)"
        cc = ".".join(map(str, self.compute_capability)) if self.compute_capability else "?"
        text = (f"{self.name}: {self.gpus} x {self.gpu_name}, sm {cc}, {self.memory_gib:g} GiB each, "
                f"{'bf16' if self.bf16 else 'no bf16'}")
        return text + (", simulated on this machine's CPU" if self.simulated else "")


CPU = Hardware("cpu", "cpu", None, 0, 0.0, None, bf16=False)
PROFILES = {
    "cpu": CPU,
    # Kaggle's "GPU T4 x2": 16 GB cards of which ~15 GiB can be allocated; no bf16, no FlashAttention-2 (sm 7.5).
    "t4x2": Hardware("t4x2", "cuda", "Tesla T4", 2, 15.0, (7, 5), bf16=False, tensor_tflops=65.0,
                     bandwidth_gb_s=320.0, machine_shape="NvidiaTeslaT4"),
    "a100": Hardware("a100", "cuda", "NVIDIA A100-SXM4-80GB", 1, 80.0, (8, 0), bf16=True, tensor_tflops=312.0,
                     bandwidth_gb_s=2039.0),
    "h100": Hardware("h100", "cuda", "NVIDIA H100 80GB HBM3", 1, 80.0, (9, 0), bf16=True, tensor_tflops=989.0,
                     bandwidth_gb_s=3350.0),
}


def profile(name: str, origin: str | None = None) -> Hardware:
    """A named profile; simulated on this CPU unless this machine has CUDA (then a GPU profile's decisions run on
    the real GPU, e.g. T4 float16 on an H100). `origin`: where the name came from (default: --hardware)."""
    if name not in PROFILES:
        raise UserError(f"{origin or '--hardware ' + name}: unknown profile (known: {', '.join(PROFILES)})")
    chosen = PROFILES[name]
    return replace(chosen, simulated=chosen.is_gpu and not torch.cuda.is_available())


def detect() -> Hardware:
    """This machine as torch sees it."""
    if not torch.cuda.is_available():
        return CPU
    props = torch.cuda.get_device_properties(0)
    return Hardware("detected", "cuda", props.name, torch.cuda.device_count(),
                    round(props.total_memory / 2**30, 1), (props.major, props.minor),
                    bf16=torch.cuda.is_bf16_supported(including_emulation=False))


def current() -> Hardware:
    """The profile named by ARENA_HARDWARE, else the detected machine."""
    found = environment.setting(PROFILE_ENV)
    return profile(found.value, found.origin) if found and found.value else detect()


def use_profile(name: str | None) -> None:
    """`--hardware NAME`: this process and every process it starts (accelerate launch, the kernel) act as NAME."""
    if name:
        profile(name)  # an unknown name is an error here, before any work
        os.environ[PROFILE_ENV] = name


def select_gpu(index: int) -> None:
    """Make GPU `index` this process's current device (bitsandbytes quantizes onto the current device)."""
    torch.cuda.set_device(index)


def empty_cache() -> None:
    """Give cached GPU memory back to the device (nothing on a CPU)."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def visible_gpus() -> int:
    """CUDA devices this process can see (0 without CUDA): how many processes one per GPU can have."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0
