"""Adapters over the backbone: peft LoRA / prompt tuning settings checked against the architecture, gradient
checkpointing, and the model prepared for the Trainer."""

from __future__ import annotations

from pathlib import Path

import torch

from arena.config import Config
from arena.embedded import resolve_model_path
from arena.model.backbone import (
    PreferenceModel,
    load_base,
    load_tokenizer,
    meta_backbone,
    meta_preference_model,
    model_config,
)
from arena.model.head import head_bias
from arena.model.runtime import Runtime, runtime_for
from arena.versions import peft_without_old_torchao


def adapter_problems(cfg: Config, path: Path | str, hf_config=None) -> list[str]:
    """Problems of peft.layers_to_transform and peft.target_modules against the base model's architecture, built
    from its config.json (or `hf_config`) on the meta device (no weights)."""
    if cfg.peft.method != "lora":
        return []
    hf_config = hf_config or model_config(path)
    problems = []
    layers = hf_config.num_hidden_layers
    beyond = [i for i in cfg.peft.layers_to_transform or [] if i >= layers]
    if beyond:
        problems.append(f"peft.layers_to_transform: layer(s) {beyond} do not exist: {path} has {layers} layers "
                        f"(0-{layers - 1})")
    skeleton = meta_backbone(hf_config)
    linear = sorted({name.rsplit(".", 1)[-1] for name, m in skeleton.named_modules()
                     if isinstance(m, torch.nn.Linear)})
    absent = [t for t in cfg.peft.target_modules if t not in linear]
    if absent:
        problems.append(f"peft.target_modules: {absent} are not linear layers of {path} "
                        f"({hf_config.model_type}: {', '.join(linear)})")
    return problems


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
    return PromptTuningConfig(
        task_type=TaskType.SEQ_CLS,
        num_virtual_tokens=p.num_virtual_tokens,
        prompt_tuning_init=PromptTuningInit.RANDOM,
    )


def build_for_training(cfg: Config, class_prior=None, num_features: int = 0, tokenizer=None):
    """Base + head + adapter ready for the Trainer; returns (model, tokenizer, runtime). `tokenizer`: the base
    model's, when the caller has it already."""
    rt = runtime_for(cfg)
    bias = head_bias(cfg, class_prior)
    model = load_base(cfg, rt, bias, num_features)
    tokenizer = tokenizer or load_tokenizer(resolve_model_path(cfg.model.path))
    return prepare_for_training(model, cfg, rt), tokenizer, rt


def enable_checkpointing(backbone) -> None:
    """Non-reentrant activation checkpointing, without the hook transformers adds that makes the input embeddings
    require gradients: only reentrant checkpointing needs it, and with it backward (and its recompute) runs through
    the frozen layers below the first adapter (the 9B recipe, 1 x 512 tokens: 26.3 vs 19.6 TFLOP per step). The
    gradients of the trainable weights are the same either way (tests/test_model.py)."""
    backbone.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    backbone.disable_input_require_grads()


def meta_prepared(cfg: Config, hf_config, dtype: torch.dtype, num_features: int, checkpointing: bool = False,
                  sharded: bool = False) -> tuple[PreferenceModel, object]:
    """(the base, the base prepared for training) on the meta device: shapes and dtypes as a real run has them,
    no weights (the planner's memory and FLOPs, the room check's trainable size)."""
    rt = Runtime(device="meta", dtype=dtype, gradient_checkpointing=checkpointing, sharded=sharded)
    base = meta_preference_model(cfg, hf_config, dtype, num_features)
    return base, prepare_for_training(base, cfg, rt)


def prepare_for_training(model: PreferenceModel, cfg: Config, rt: Runtime):
    """Gradient checkpointing, the adapter, and float32 trainable weights: a PeftModel for the Trainer. The
    planner applies the same steps to a skeleton on the meta device."""
    from peft import get_peft_model

    peft_without_old_torchao()  # Kaggle's torchao 0.10.0: see there
    if rt.gradient_checkpointing:
        enable_checkpointing(model.model)
    model = get_peft_model(model, peft_config(cfg))
    # Trainable weights (adapter + head) stay float32: fp16 master weights break the grad scaler. Under FSDP they
    # keep the compute dtype (bf16 on the GPUs FSDP recipes use, no grad scaler), as a unit's tensors share one.
    for param in model.parameters():
        if param.requires_grad and not rt.sharded:
            param.data = param.data.float()
    return model
