"""Where and how a model runs on a Hardware (the detected machine or a named profile): device, compute dtype per
model family, attention, gradient checkpointing, autocast, and this process's GPU."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from arena import hardware as hardware_mod
from arena.config import Config, ConfigError
from arena.embedded import resolve_model_path
from arena.errors import UserError
from arena.hardware import Hardware


@dataclass
class Runtime:
    """Where and how the model runs, derived once from the config and the Hardware."""

    device: str  # where tensors live: "cpu" | "cuda"
    dtype: torch.dtype  # compute dtype (bnb compute dtype, activations, and non-quantized weights)
    gradient_checkpointing: bool
    # FSDP under `accelerate launch` (configs/accelerate/fsdp-*.yaml): the weights are sharded across processes.
    sharded: bool = False
    hardware: Hardware = hardware_mod.CPU  # what the decisions were taken for

    @property
    def fp16(self) -> bool:
        """The Trainer's fp16 mixed precision (a grad scaler and autocast): a CUDA-only path in accelerate."""
        return self.device == "cuda" and self.dtype == torch.float16

    @property
    def bf16(self) -> bool:
        return self.device == "cuda" and self.dtype == torch.bfloat16


# Model families whose activations overflow float16's 65504 (every logit non-finite): model_type -> (attention
# implementations under which float16 is safe, why). On a GPU without bf16 such a model computes in float32.
FP16_OVERFLOWS = {
    "gemma3_text": (frozenset(), "Gemma-3's activations reach ~1e5 on real rows (transformers issue #36822)"),
    "gemma3": (frozenset(), "Gemma-3's activations reach ~1e5 on real rows (transformers issue #36822)"),
    "phi": (frozenset({"sdpa"}), "Phi's eager attention multiplies queries and keys in float16 before scaling "
                                 "(transformers PR #28163)"),
}


# bitsandbytes' 8-bit matmul casts its inputs to float16 whatever the compute dtype (MatMul8bitLt).
INT8_CASTS_TO_FP16 = "bitsandbytes' int8 matmul casts activations to float16 whatever the compute dtype"


def fp16_overflow(model_type: str, attention: str) -> str | None:
    """Why this model, with this attention, overflows in float16 (None when it does not)."""
    safe, why = FP16_OVERFLOWS.get(model_type, (None, None))
    return None if why is None or attention in safe else why


def bf16_problem(cfg: Config, hw: Hardware) -> str | None:
    """model.compute_dtype bfloat16 on a GPU without native bfloat16 (a T4, sm 7.5): torch emulates it there and
    transformers' bf16 check accepts emulation, so the run would train many times slower instead of failing."""
    if cfg.model.compute_dtype != "bfloat16" or not hw.is_gpu or hw.bf16:
        return None
    return (f"model.compute_dtype: bfloat16 on {hw.name} ({hw.gpu_name}), a GPU without native bfloat16: torch "
            f"would emulate it, many times slower; use auto (float16 there, float32 for a model that overflows in "
            f"float16), float16 or float32, e.g. --set model.compute_dtype=auto")


def compute_dtype_problems(cfg: Config, hf_config, hardware: Hardware | None = None) -> list[str]:
    """Compute dtypes this machine cannot run well, checked from config.json before the weights load: bfloat16 on
    a GPU without it, and for a model that overflows in float16, model.compute_dtype float16 or int8 weights (which
    cast to float16) on a machine without bf16."""
    hw = _hardware_for(cfg, hardware)
    problems = [problem] if (problem := bf16_problem(cfg, hw)) else []
    attention = attn_implementation(cfg, hf_config.model_type)
    why = fp16_overflow(hf_config.model_type, attention)
    if why is None:
        return problems
    what = f"{hf_config.model_type} with {attention} attention: {why}"
    if cfg.model.compute_dtype == "float16":
        problems.append(f"model.compute_dtype: float16 overflows on {what}; use float32, bfloat16 where the GPU "
                        f"has it, or auto (which picks one of them)")
    if hw.is_gpu and not hw.bf16:
        for key, quantization in (("model.quantization", cfg.model.quantization),
                                  ("infer.quantization", cfg.infer.quantization)):
            if quantization == "int8":
                problems.append(f"{key}: int8 on {hw.describe()} computes in float16 ({INT8_CASTS_TO_FP16}), which "
                                f"overflows on {what}; use nf4 or none (float32 there)")
    return problems


def device_for(cfg: Config, hardware: Hardware | None = None) -> str:
    """Where this config's tensors live on this machine ("cpu" | "cuda"): no model files are read."""
    return _hardware_for(cfg, hardware).device


def _hardware_for(cfg: Config, hardware: Hardware | None) -> Hardware:
    hw = hardware or hardware_mod.current()
    if cfg.model.device == "cpu":
        return hardware_mod.CPU
    if cfg.model.device == "cuda" and not hw.is_gpu:
        raise UserError("model.device: cuda requested but no CUDA device is available (a GPU profile: --hardware)")
    return hw


def runtime_for(cfg: Config, hf_config=None, hardware: Hardware | None = None) -> Runtime:
    """Device, compute dtype and checkpointing for this config on this Hardware (the detected machine or the
    profile named by --hardware). compute_dtype auto: float32 on CPU, bfloat16 on Ampere and newer, float16
    before (T4), except for a model that overflows in float16, which gets float32 there. `hf_config`: the
    config.json of the model that will load (read from model.path when the choice needs it and none is given)."""
    hw = _hardware_for(cfg, hardware)
    dtype = compute_dtype(cfg, hw, hf_config)
    checkpointing = {"on": True, "off": False, "auto": hw.is_gpu}[cfg.model.gradient_checkpointing]
    sharded = fsdp_launched()
    rt = Runtime(device=hw.device, dtype=dtype, gradient_checkpointing=checkpointing, sharded=sharded, hardware=hw)
    if hw.simulated:
        print(f"hardware: decisions of profile {hw.describe()}: compute dtype "
              f"{str(dtype).removeprefix('torch.')}, gradient checkpointing {'on' if checkpointing else 'off'}"
              f"{', float16 forwards under torch.autocast on the CPU' if dtype == torch.float16 else ''}", flush=True)
    return rt


def fsdp_launched() -> bool:
    """Whether `accelerate launch` runs FSDP (ACCELERATE_USE_FSDP, FSDP_VERSION: set from its config file's
    distributed_type and fsdp_version). Version 1 is refused: arena's save, checkpoints and evaluation under FSDP are
    tested with version 2 (tests/test_distributed.py), and version 1 cannot run on CPU processes to be tested."""
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() != "true":
        return False
    version = os.environ.get("FSDP_VERSION", "1")
    if version != "2":
        raise UserError(f"FSDP_VERSION={version} with ACCELERATE_USE_FSDP=true (`accelerate launch` sets them from "
                        f"its config's fsdp_config.fsdp_version): arena trains under FSDP version 2 only; set "
                        f"fsdp_version: 2 (`accelerate to-fsdp2 --config_file OLD --output_file NEW` converts a "
                        f"config; configs/accelerate/fsdp-qlora-8.yaml is one)")
    return True


def compute_dtype(cfg: Config, hw: Hardware, hf_config=None) -> torch.dtype:
    """model.compute_dtype, or auto's choice for `hw` (the planner's too). bfloat16 on a GPU without it is a
    ConfigError (bf16_problem)."""
    if problem := bf16_problem(cfg, hw):
        raise ConfigError(problem)
    if cfg.model.compute_dtype != "auto":
        return getattr(torch, cfg.model.compute_dtype)
    if not hw.is_gpu or hw.bf16:
        return hw.auto_compute_dtype(False)
    if hf_config is None:
        from arena.model.backbone import model_config  # backbone imports this module

        hf_config = model_config(resolve_model_path(str(cfg.model.path)))
    overflows = fp16_overflow(hf_config.model_type, attn_implementation(cfg, hf_config.model_type))
    return hw.auto_compute_dtype(overflows is not None)


def attn_implementation(cfg: Config, model_type: str) -> str:
    if cfg.model.attn_implementation != "auto":
        return cfg.model.attn_implementation
    # Gemma-2's attention logit soft-capping is only applied by the eager implementation.
    return "eager" if model_type == "gemma2" else "sdpa"


def autocast(device: str, dtype: torch.dtype):
    """The context an inference or evaluation forward runs in: torch.autocast at a float16/bfloat16 compute dtype
    (on CUDA; on the CPU too, where a GPU profile decided it), else nothing. Without it peft's 4-bit LoRA layers
    run the adapter in float32."""
    import contextlib

    if dtype in (torch.float16, torch.bfloat16):
        return torch.autocast(device_type="cuda" if str(device).startswith("cuda") else "cpu", dtype=dtype)
    return contextlib.nullcontext()


def compute_dtype_of(model) -> torch.dtype:
    """The compute dtype a loaded model was built with (config.dtype, which transformers sets from the load)."""
    dtype = getattr(model.config, "dtype", None)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    return dtype if isinstance(dtype, torch.dtype) else torch.float32


def model_device(model) -> str:
    """Where this process's model lives: "cuda:<its GPU>" (one per process under `accelerate launch`) or "cpu".
    Adapter weights are loaded there (peft's default, infer_device(), is "cuda": GPU 0 on every rank)."""
    return str(next(model.parameters()).device)


def cuda_device_index() -> int:
    """This process's GPU: its LOCAL_RANK under `accelerate launch`, else 0. Set as the current device before
    anything is placed, since bitsandbytes quantizes onto torch.cuda.current_device() (under FSDP no device_map
    says otherwise, and every rank would load onto GPU 0)."""
    index = int(os.environ.get("LOCAL_RANK", 0))
    hardware_mod.select_gpu(index)
    return index
