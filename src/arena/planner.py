"""Memory and time plan of a recipe on a GPU, without weights (`arena plan`).

Memory: the recipe's architecture is built on the meta device (shapes only) and prepared for training by the
same code as a real run (adapter, float32 trainable weights, gradient checkpointing). A forward and backward on
meta tensors counts the bytes of every tensor the ops create while it is alive: activations, the eager attention
scores (heads x L^2), gradients and transients, exactly as the model's code allocates them. Weights, trainable
weights and optimizer state are counted from the parameters. Time: a FLOP model of the forward pass, at an
efficiency fitted to one public measurement, bounded by the time to read the weights once per batch.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from arena import config as config_mod
from arena import embedded
from arena import model as model_mod
from arena.config import Config
from arena.data.features import HEAD_FEATURE_NAMES
from arena.errors import UserError
from arena.hardware import PROFILES, Hardware
from arena.meta_trace import inference_activation_peak, training_activation_peak, training_flops

GIB = 2**30


# The GPUs a plan is made for (`--gpu`): the hardware profiles' figures, by card.
GPUS = {"t4": PROFILES["t4x2"], "a100": PROFILES["a100"], "h100": PROFILES["h100"]}
# `--hardware PROFILE` -> (--gpu, --gpus)
PROFILE_GPUS = {name: (gpu, hw.gpus) for gpu, hw in GPUS.items() for name in PROFILES if PROFILES[name] is hw}
GPUS_OF_GPU = {gpu: (gpu, hw.gpus) for gpu, hw in GPUS.items()}  # `--gpu t4` -> 2 GPUs by default, as on Kaggle
# Fraction of a GPU's memory a plan may fill: the caching allocator's fragmentation and the CUDA context need the
# rest. A plan above it is "tight", above the whole memory "does not fit".
SAFE_FRACTION = 0.9

# Published config.json of the recipes' base models, for planning where the weights are not on disk.
PUBLISHED = {
    "gemma-2-9b-it": dict(model_type="gemma2", hidden_size=3584, intermediate_size=14336, num_hidden_layers=42,
                          num_attention_heads=16, num_key_value_heads=8, head_dim=256, vocab_size=256000,
                          attn_logit_softcapping=50.0, final_logit_softcapping=30.0, query_pre_attn_scalar=256,
                          sliding_window=4096, max_position_embeddings=8192),
    "llama-3-8b-instruct": dict(model_type="llama", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                                num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                                rope_theta=500000.0, max_position_embeddings=8192),
    "llama-3-70b-instruct": dict(model_type="llama", hidden_size=8192, intermediate_size=28672, num_hidden_layers=80,
                                 num_attention_heads=64, num_key_value_heads=8, vocab_size=128256,
                                 rope_theta=500000.0, max_position_embeddings=8192),
    "mistral-7b-instruct": dict(model_type="mistral", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                                num_attention_heads=32, num_key_value_heads=8, vocab_size=32000,
                                sliding_window=4096, max_position_embeddings=32768),
    "phi-2": dict(model_type="phi", hidden_size=2560, intermediate_size=10240, num_hidden_layers=32,
                  num_attention_heads=32, num_key_value_heads=32, vocab_size=51200, partial_rotary_factor=0.4,
                  max_position_embeddings=2048),
    "gemma3-270m": dict(model_type="gemma3_text", hidden_size=640, intermediate_size=2048, num_hidden_layers=18,
                        num_attention_heads=4, num_key_value_heads=1, head_dim=256, vocab_size=262144,
                        query_pre_attn_scalar=256, sliding_window=512, max_position_embeddings=32768),
}

# The one public inference figure the time model is fitted to (../shared/DESIGN.md): the public Gemma-2 9B
# notebook, nf4, sorted batches at max_length 2048, ~4 h for one pass over the ~25k hidden rows on Kaggle's T4x2,
# at ~700 tokens per row.
ANCHOR = dict(architecture="gemma-2-9b-it", gpu="t4", gpus=2, rows=25_000, tokens_per_row=700, hours=4.0,
              source="the public Gemma-2 9B notebook: ~4 h per pass over ~25k rows on T4x2, ~700 tokens per row")


# ---- architecture --------------------------------------------------------------------------------------------

def architecture(cfg: Config, model_path: str | Path | None = None):
    """(transformers config, where it came from): the model folder's config.json when it is on disk (the
    embedded model's once converted), else the published config of a known recipe."""
    from transformers import AutoConfig

    path = str(model_path or cfg.model.path)
    folder = embedded.local_folder(path)
    name = folder.name if embedded.is_embedded(path) else folder.name.lower()
    if (folder / "config.json").is_file():
        return model_mod.model_config(folder), f"{folder}/config.json"
    if name in PUBLISHED:
        values = dict(PUBLISHED[name])
        return AutoConfig.for_model(values.pop("model_type"), **values), f"the published config of {name}"
    raise UserError(f"model.path: {path} has no config.json and is not a known recipe model "
                    f"({', '.join(sorted(PUBLISHED))}): the plan needs the architecture")


def _compute_dtype(cfg: Config, gpu: Hardware, hf_config) -> torch.dtype:
    """As model.runtime_for picks it on that GPU (the same function): float32 where float16 would overflow."""

    return model_mod.compute_dtype(cfg, gpu, hf_config)


def _dtype_bytes(dtype: torch.dtype) -> int:
    return torch.empty(0, dtype=dtype).element_size()


# ---- static memory ----------------------------------------------------------------------------------------------

def quantized_linear_bytes(numel: int, out_features: int, quantization: str, dtype: torch.dtype) -> int:
    """Bytes of one linear layer's weight as bitsandbytes stores it."""
    if quantization == "nf4":
        blocks = math.ceil(numel / 64)
        # 4-bit codes, one 8-bit absmax per block of 64 (double quantization) and a float32 one per 256 of those
        return math.ceil(numel / 2) + blocks + 4 * math.ceil(blocks / 256)
    if quantization == "int8":
        return numel + 4 * out_features  # int8 weights and a float32 scale per output row
    return numel * _dtype_bytes(dtype)


def weight_bytes(backbone, quantization: str, dtype: torch.dtype) -> dict:
    """The frozen base: linear layers as quantized, everything else (embeddings, norms) in the compute dtype."""
    linear = other = 0
    largest_linear = 0
    linear_ids = set()
    for module in backbone.modules():
        if isinstance(module, torch.nn.Linear):
            linear += quantized_linear_bytes(module.weight.numel(), module.out_features, quantization, dtype)
            largest_linear = max(largest_linear, module.weight.numel())
            linear_ids.update(id(p) for p in module.parameters())
    for p in backbone.parameters():
        if id(p) not in linear_ids:
            other += p.numel() * _dtype_bytes(dtype)
    # bitsandbytes multiplies a batch by dequantizing one layer's weight to the compute dtype at a time
    dequant = largest_linear * _dtype_bytes(dtype) if quantization != "none" else 0
    return {"linear": linear, "other": other, "dequantize_buffer": dequant}


def optimizer_state_bytes_per_param(optim: str) -> int:
    """Optimizer state per trainable parameter: Adam keeps two moments (float32, or 8-bit in bitsandbytes'
    8-bit optimizers); SGD without momentum and Adafactor (factored) keep next to nothing."""
    name = optim.lower()
    if "adafactor" in name or name.startswith("sgd"):
        return 0
    if "lion" in name:
        return 1 if "8bit" in name else 4
    return 2 if "8bit" in name else 8


# ---- the plan ---------------------------------------------------------------------------------------------------

def _num_features(cfg: Config) -> int:
    if not cfg.model.length_features:
        return 0

    return len(HEAD_FEATURE_NAMES)


def _meta_model(cfg: Config, hf_config, dtype: torch.dtype, checkpointing: bool, sharded: bool):
    return model_mod.meta_prepared(cfg, hf_config, dtype, _num_features(cfg), checkpointing, sharded)


def _set_checkpointing(base, on: bool) -> None:
    if on:
        model_mod.enable_checkpointing(base.model)
    else:
        base.model.activation_checkpointing_disable()


def inference_batch(cfg: Config) -> tuple[int, int]:
    """(rows, length) of the largest inference batch: rows at infer.max_length, as many as max_batch_tokens and
    max_batch_size allow."""
    length = cfg.infer.max_length
    return max(1, min(cfg.infer.max_batch_size, cfg.infer.max_batch_tokens // length)), length


def memory_plan(cfg: Config, gpu: str = "t4", gpus: int = 1, sharded: bool = False) -> dict:
    """Bytes of a training step and of inference on one GPU for the recipe, planned on the meta device."""

    if gpu not in GPUS:
        raise UserError(f"--gpu {gpu}: unknown (known: {', '.join(GPUS)})")
    device = GPUS[gpu]
    hf_config, source = architecture(cfg)
    dtype = _compute_dtype(cfg, device, hf_config)
    checkpointing = cfg.model.gradient_checkpointing != "off"  # "auto" turns it on for CUDA
    quantization = cfg.model.quantization
    infer_quantization = cfg.infer.quantization or quantization
    shards = gpus if sharded else 1

    problems = model_mod.adapter_problems(cfg, source, hf_config)
    positions = getattr(hf_config, "max_position_embeddings", None)
    if positions:  # before any meta tensor of prompt.max_length^2 overflows
        problems += [f"{key}: {problem}" for key, problem in config_mod.length_problems(cfg, positions, source)]
    if problems:
        raise UserError("\n".join(problems))
    base, model = _meta_model(cfg, hf_config, dtype, checkpointing, sharded)
    weights = weight_bytes(base.model, quantization, dtype)
    infer_weights = weight_bytes(base.model, infer_quantization, dtype)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    trainable_bytes = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    optimizer = trainable * optimizer_state_bytes_per_param(cfg.train.optim)
    rows, length = cfg.train.per_device_batch_size, cfg.prompt.max_length
    features = _num_features(cfg)

    step_activations = training_activation_peak(model, rows, length, features)
    step_flops = training_flops(model, rows, length, features)
    per_sequence = {}
    for on in (checkpointing, not checkpointing):
        _set_checkpointing(base, on)
        key = "with_checkpointing" if on else "without_checkpointing"
        same = on == checkpointing and rows == 1
        per_sequence[key] = step_activations if same else training_activation_peak(model, 1, length, features)
    _set_checkpointing(base, checkpointing)
    infer_rows, infer_length = inference_batch(cfg)
    infer_activations = inference_activation_peak(model, infer_rows, infer_length, features)

    static = (weights["linear"] + weights["other"] + trainable_bytes + optimizer) / shards
    train_peak = static + step_activations + weights["dequantize_buffer"]
    infer_static = (infer_weights["linear"] + infer_weights["other"] + trainable_bytes) / shards
    infer_peak = infer_static + infer_activations + infer_weights["dequantize_buffer"]
    budget = device.memory_gib * GIB

    def verdict(peak: float) -> str:
        return "fits" if peak <= SAFE_FRACTION * budget else "tight" if peak <= budget else "does not fit"

    return {
        "recipe": cfg.name, "architecture": source, "model_type": hf_config.model_type, "gpu": gpu,
        "gpu_name": device.gpu_name, "gpu_memory_gib": device.memory_gib, "gpus": gpus, "sharded": sharded,
        "compute_dtype": str(dtype).removeprefix("torch."), "quantization": quantization,
        "infer_quantization": infer_quantization, "gradient_checkpointing": checkpointing,
        "bytes": {
            "quantized_weights": weights["linear"], "other_weights": weights["other"],
            "trainable_parameters": trainable, "trainable_weights": trainable_bytes,
            "optimizer_state": optimizer, "dequantize_buffer": weights["dequantize_buffer"],
            "activations_per_sequence": per_sequence, "training_step_activations": step_activations,
            "inference_weights": infer_weights["linear"] + infer_weights["other"],
            "inference_activations": infer_activations,
        },
        "train_batch": {"rows": rows, "length": length}, "infer_batch": {"rows": infer_rows, "length": infer_length},
        "training_flops_per_step": step_flops,
        "training_peak": round(train_peak), "inference_peak": round(infer_peak),
        "training_verdict": verdict(train_peak), "inference_verdict": verdict(infer_peak),
        "safe_fraction": SAFE_FRACTION,
    }


# ---- time -------------------------------------------------------------------------------------------------------

def forward_flops_per_token(hf_config, linear_weights: int, tokens: float) -> float:
    """2 FLOPs per multiply-add of every linear weight, plus the attention's QK^T and AV over a sequence of
    `tokens` (the full L x L product, as eager attention computes it)."""
    heads = hf_config.num_attention_heads
    head_dim = getattr(hf_config, "head_dim", None) or hf_config.hidden_size // heads
    return 2 * linear_weights + 4 * hf_config.num_hidden_layers * heads * head_dim * tokens


def _linear_numel(backbone) -> int:
    return sum(m.weight.numel() for m in backbone.modules() if isinstance(m, torch.nn.Linear))


def anchor_efficiency() -> float:
    """Fraction of the T4's tensor peak the public notebook reached: its FLOPs over its GPU-hours."""
    from transformers import AutoConfig

    values = dict(PUBLISHED[ANCHOR["architecture"]])
    hf_config = AutoConfig.for_model(values.pop("model_type"), **values)
    linear = _linear_numel(model_mod.meta_backbone(hf_config))
    tokens = ANCHOR["tokens_per_row"]
    flops = ANCHOR["rows"] * tokens * forward_flops_per_token(hf_config, linear, tokens)
    available = ANCHOR["hours"] * 3600 * ANCHOR["gpus"] * GPUS[ANCHOR["gpu"]].tensor_tflops * 1e12
    return flops / available


def throughput(cfg: Config, tokens_per_row: float, gpu: str = "t4", gpus: int = 2, model_path=None) -> dict:
    """Projected inference tokens/s over `gpus` GPUs (one model per GPU), with the method in words."""

    device = GPUS[gpu]
    hf_config, source = architecture(cfg, model_path)
    backbone = model_mod.meta_backbone(hf_config)
    efficiency = anchor_efficiency()
    flops = forward_flops_per_token(hf_config, _linear_numel(backbone), tokens_per_row)
    compute_bound = gpus * device.tensor_tflops * 1e12 * efficiency / flops
    weights = weight_bytes(backbone, cfg.infer.quantization or cfg.model.quantization, _compute_dtype(cfg, device, hf_config))
    batch_tokens = min(cfg.infer.max_batch_tokens, cfg.infer.max_batch_size * tokens_per_row)
    read_bound = gpus * batch_tokens * device.bandwidth_gb_s * 1e9 / (weights["linear"] + weights["other"])
    method = (f"{gpus} x {device.gpu_name} at {device.tensor_tflops:g} TFLOP/s x efficiency {efficiency:.3f} / "
              f"{flops / 1e9:.1f} GFLOP per token ({source}, {tokens_per_row:.0f} tokens per row: linear weights "
              f"+ attention); the efficiency is fitted to {ANCHOR['source']}; bounded by reading the weights once "
              f"per batch of {batch_tokens:.0f} tokens at {device.bandwidth_gb_s:g} GB/s. Projected, not measured")
    return {"tokens_per_s": min(compute_bound, read_bound), "efficiency": efficiency, "flops_per_token": flops,
            "compute_bound_tokens_per_s": compute_bound, "read_bound_tokens_per_s": read_bound, "method": method}


def format_memory_plan(plan: dict) -> str:
    b = plan["bytes"]

    def gib(n) -> str:
        return f"{n / GIB:7.2f} GiB"

    share = f" (sharded over {plan['gpus']} GPUs)" if plan["sharded"] else ""
    per_seq = b["activations_per_sequence"]
    lines = [
        f"plan for {plan['recipe']} on {plan['gpu_name']} ({plan['gpu_memory_gib']:g} GiB){share}",
        f"  architecture: {plan['architecture']} ({plan['model_type']}); compute {plan['compute_dtype']}, "
        f"weights {plan['quantization']} (inference {plan['infer_quantization']}), gradient checkpointing "
        f"{'on' if plan['gradient_checkpointing'] else 'off'}",
        f"  quantized linear weights     {gib(b['quantized_weights'])}",
        f"  other weights (embeddings)   {gib(b['other_weights'])}",
        f"  trainable weights            {gib(b['trainable_weights'])}  ({b['trainable_parameters']:,} parameters)",
        f"  optimizer state              {gib(b['optimizer_state'])}",
        f"  activations per sequence at {plan['train_batch']['length']} tokens: "
        f"{gib(per_seq['with_checkpointing']).strip()} with gradient checkpointing, "
        f"{gib(per_seq['without_checkpointing']).strip()} without",
        f"  training step ({plan['train_batch']['rows']} x {plan['train_batch']['length']} tokens): activations "
        f"{gib(b['training_step_activations']).strip()}, peak {gib(plan['training_peak']).strip()} -> "
        f"{plan['training_verdict'].upper()}",
        f"  training compute per micro-batch: {plan['training_flops_per_step'] / 1e12:.2f} TFLOP (forward, backward "
        f"and recompute, counted on the meta device; backward stops at the first layer with trainable weights)",
        f"  inference ({plan['infer_batch']['rows']} x {plan['infer_batch']['length']} tokens): weights "
        f"{gib(b['inference_weights']).strip()}, activations {gib(b['inference_activations']).strip()}, peak "
        f"{gib(plan['inference_peak']).strip()} -> {plan['inference_verdict'].upper()}",
        f"  method: tensors counted through a forward and backward of the recipe's model on the meta device; "
        f"'fits' means at most {plan['safe_fraction']:.0%} of the GPU's memory (allocator and CUDA context need "
        f"the rest). Planned, not measured.",
    ]
    return "\n".join(lines)


def tokenizer_for(cfg: Config):
    """(tokenizer, description) to measure token lengths with: the model folder's own, else the embedded
    Gemma-3 tokenizer as a stand-in (a SentencePiece vocabulary of Gemma-2's size) when the weights are not on disk."""

    path = cfg.model.path
    if embedded.is_embedded(path) or (Path(path).expanduser() / "config.json").is_file():
        return model_mod.load_tokenizer(model_mod.resolve_model_path(path)), f"the tokenizer of {path}"
    stand_in = f"{embedded.EMBEDDED_PREFIX}gemma3-270m"
    return (model_mod.load_tokenizer(model_mod.resolve_model_path(stand_in)),
            f"the embedded Gemma-3 tokenizer as a stand-in ({path} is not on disk)")
