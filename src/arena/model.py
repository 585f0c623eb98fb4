"""Base model + 3-way classification head, quantization, PEFT adapters, per-device dtype and attention."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from arena.config import Config
from arena.embedded import resolve_model_path
from arena.errors import UserError

NUM_LABELS = 3
HEAD_FILE = "head.json"


@dataclass
class Runtime:
    """Where and how the model runs, derived once from the config and the machine."""

    device: str  # "cpu" | "cuda"
    dtype: torch.dtype  # compute dtype (bnb compute dtype, activations, and non-quantized weights)
    gradient_checkpointing: bool

    @property
    def fp16(self) -> bool:
        return self.device == "cuda" and self.dtype == torch.float16

    @property
    def bf16(self) -> bool:
        return self.device == "cuda" and self.dtype == torch.bfloat16


def runtime_for(cfg: Config) -> Runtime:
    device = cfg.model.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device == "cuda" and not torch.cuda.is_available():
        raise UserError("model.device: cuda requested but no CUDA device is available")
    if cfg.model.compute_dtype != "auto":
        dtype = getattr(torch, cfg.model.compute_dtype)
    elif device == "cpu":
        dtype = torch.float32
    elif torch.cuda.is_bf16_supported(including_emulation=False):
        dtype = torch.bfloat16  # Ampere and newer
    else:
        dtype = torch.float16  # T4 / pre-Ampere: no bf16
    checkpointing = {"on": True, "off": False, "auto": device == "cuda"}[cfg.model.gradient_checkpointing]
    return Runtime(device=device, dtype=dtype, gradient_checkpointing=checkpointing)


def quantization_config(method: str, dtype: torch.dtype):
    if method == "none":
        return None
    from transformers import BitsAndBytesConfig

    if method == "nf4":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
            llm_int8_skip_modules=["score"],
        )
    if method == "int8":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=["score"])
    raise UserError(f"model.quantization: unknown method {method!r}")


def attn_implementation(cfg: Config, model_type: str) -> str:
    if cfg.model.attn_implementation != "auto":
        return cfg.model.attn_implementation
    # Gemma-2's attention logit soft-capping is only applied by the eager implementation.
    return "eager" if model_type == "gemma2" else "sdpa"


def load_tokenizer(path: str | Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    # Left padding puts every row's last real token at position -1, where the classifier reads;
    # rotary position encodings are relative, so the offset does not change attention between real tokens.
    tokenizer.padding_side = "left"
    return tokenizer


def head_bias(cfg: Config, class_prior) -> list[float] | None:
    """Initial bias of the score head: the log class prior, or None for a bias-free head."""
    if cfg.model.head_init != "prior":
        return None
    if class_prior is None:
        class_prior = [1 / NUM_LABELS] * NUM_LABELS
    prior = [max(float(p), 1e-4) for p in class_prior]
    total = sum(prior)
    return [math.log(p / total) for p in prior]


class PreferenceHead(torch.nn.Module):
    """The `score` head: a linear map of the RMS-normalised hidden state, plus (optionally) a linear map of
    standardised length features of the full, untruncated texts.

    Gemma hidden states have norms in the hundreds, dominated by a few fixed outlier dimensions: fed raw,
    every optimizer step moves all logits together. Normalising makes one learning rate fit the head.
    The sequence-classification forward only passes hidden states to `score`, so the batch's features are
    attached to the head just before each forward (`with features_for(model, f): model(...)`).
    """

    def __init__(self, hidden_size: int, num_features: int, bias: bool, dtype: torch.dtype):
        super().__init__()
        self.proj = torch.nn.Linear(hidden_size, NUM_LABELS, bias=bias, dtype=dtype)
        self.features = torch.nn.Linear(num_features, NUM_LABELS, bias=False, dtype=dtype) if num_features else None
        self.pending_features: torch.Tensor | None = None

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        h = hidden_states.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6)
        logits = self.proj(h.to(self.proj.weight.dtype))
        if self.features is not None:
            if self.pending_features is None:
                raise RuntimeError("this head uses length features: call the model inside features_for(model, f)")
            f = self.pending_features.to(device=logits.device, dtype=self.features.weight.dtype)
            logits = logits + self.features(f)[:, None, :]
        return logits


class features_for:  # noqa: N801 - used as a context manager
    """Attach a batch's (n, num_features) standardised features to every PreferenceHead in `model`."""

    def __init__(self, model, features: torch.Tensor | None):
        self.heads = [m for m in model.modules() if isinstance(m, PreferenceHead)]
        self.features = features

    def __enter__(self):
        for head in self.heads:
            head.pending_features = self.features
        return self

    def __exit__(self, *exc):
        for head in self.heads:
            head.pending_features = None


def init_feature_head(model, coef, intercept) -> None:
    """Start the head at a fitted length-feature logistic regression: weights on the features, its intercept
    as the bias (the hidden-state projection stays at zero, so the first forward reproduces the regression)."""
    for head in (m for m in model.modules() if isinstance(m, PreferenceHead)):
        with torch.no_grad():
            head.features.weight.copy_(torch.as_tensor(coef, dtype=head.features.weight.dtype))
            if head.proj.bias is not None:
                head.proj.bias.copy_(torch.as_tensor(intercept, dtype=head.proj.bias.dtype))


def _install_head(model, cfg: Config, bias: list[float] | None, dtype: torch.dtype, num_features: int) -> None:
    """Replace the randomly initialised `score` head (its default init gives logits worse than uniform)."""
    head = PreferenceHead(model.score.in_features, num_features, bias is not None, dtype)
    if cfg.model.head_init == "random":
        torch.nn.init.normal_(head.proj.weight, std=model.config.initializer_range)
    else:
        torch.nn.init.zeros_(head.proj.weight)
    if head.features is not None:
        torch.nn.init.zeros_(head.features.weight)
    if bias is not None:
        with torch.no_grad():
            head.proj.bias.copy_(torch.tensor(bias, dtype=dtype))
    model.score = head.to(model.score.weight.device)


def load_base(cfg: Config, rt: Runtime, bias: list[float] | None, num_features: int,
              model_path: str | Path | None = None, quantization: str | None = None):
    """The base model with a fresh 3-way head, quantized and placed per the runtime."""
    from transformers import AutoConfig, AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    path = resolve_model_path(str(model_path or cfg.model.path))
    tokenizer = load_tokenizer(path)
    hf_config = AutoConfig.from_pretrained(path, num_labels=NUM_LABELS)
    hf_config.pad_token_id = tokenizer.pad_token_id
    quant = quantization or cfg.model.quantization
    kwargs = dict(
        config=hf_config,
        dtype=rt.dtype,
        attn_implementation=attn_implementation(cfg, hf_config.model_type),
        quantization_config=quantization_config(quant, rt.dtype),
    )
    if rt.device == "cuda":
        # One full copy per process (DDP under `accelerate launch`); never shard a model across GPUs.
        kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", 0))}
    # Silence the load report: the base checkpoint has no `score` weights by design (replaced just below).
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model = AutoModelForSequenceClassification.from_pretrained(path, **kwargs)
    finally:
        hf_logging.set_verbosity(verbosity)
    _install_head(model, cfg, bias, rt.dtype, num_features)
    model.config.use_cache = False
    return model, tokenizer


def peft_config(cfg: Config):
    from peft import LoraConfig, PromptTuningConfig, PromptTuningInit, TaskType

    p = cfg.peft
    if p.method == "lora":
        return LoraConfig(
            task_type=TaskType.SEQ_CLS,
            r=p.r,
            lora_alpha=p.alpha,
            lora_dropout=p.dropout,
            target_modules=p.target_modules,
            layers_to_transform=p.layers_to_transform,
            bias="none",
            modules_to_save=["score"],
        )
    if p.method == "prompt_tuning":
        return PromptTuningConfig(
            task_type=TaskType.SEQ_CLS,
            num_virtual_tokens=p.num_virtual_tokens,
            prompt_tuning_init=PromptTuningInit.RANDOM,
        )
    raise UserError(f"peft.method: unknown method {p.method!r}")


def build_for_training(cfg: Config, class_prior=None, num_features: int = 0):
    """Base + head + adapter ready for the Trainer; returns (model, tokenizer, runtime)."""
    from peft import get_peft_model

    rt = runtime_for(cfg)
    bias = head_bias(cfg, class_prior)
    model, tokenizer = load_base(cfg, rt, bias, num_features)
    if rt.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model = get_peft_model(model, peft_config(cfg))
    # Trainable weights (adapter + head) stay float32: fp16 master weights break the grad scaler.
    for param in model.parameters():
        if param.requires_grad:
            param.data = param.data.float()
    return model, tokenizer, rt


def save_trained(model, tokenizer, out_dir: Path, bias: list[float] | None, feature_scaler: dict | None = None) -> None:
    """Adapter + head (peft modules_to_save) + tokenizer, and head.json: the head's shape and feature scaling."""
    out_dir.mkdir(parents=True, exist_ok=False)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    head = {"bias": bias is not None, "num_labels": NUM_LABELS, "feature_scaler": feature_scaler}
    (out_dir / HEAD_FILE).write_text(json.dumps(head, indent=1))


def read_head(adapter_dir: str | Path) -> dict:
    path = Path(adapter_dir) / HEAD_FILE
    if not path.is_file():
        raise UserError(f"{adapter_dir}: not a trained adapter folder (no {HEAD_FILE})")
    return json.loads(path.read_text())


def load_trained(cfg: Config, adapter_dir: str | Path, base_model: str | Path | None = None,
                 quantization: str | None = None):
    """A trained model for inference from an adapter folder written by save_trained."""
    from peft import PeftModel

    adapter_dir = Path(adapter_dir)
    head = read_head(adapter_dir)
    rt = runtime_for(cfg)
    # The real values come from the adapter's saved head; this only sizes the module.
    bias = [0.0] * NUM_LABELS if head["bias"] else None
    scaler = head.get("feature_scaler")
    num_features = len(scaler["mean"]) if scaler else 0
    model, _ = load_base(cfg, rt, bias, num_features, model_path=base_model, quantization=quantization)
    if (adapter_dir / "adapter_config.json").is_file():
        model = PeftModel.from_pretrained(model, adapter_dir)
    else:
        raise UserError(f"{adapter_dir}: no adapter_config.json")
    model.eval()
    tokenizer = load_tokenizer(adapter_dir)
    return model, tokenizer, rt
