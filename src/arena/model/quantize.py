"""bitsandbytes settings for the backbone's linear layers, and the 4-bit CPU kernel choice."""

from __future__ import annotations

import torch


def quantization_config(method: str, dtype: torch.dtype, sharded: bool = False):
    """bitsandbytes settings for the backbone's linear layers (the head is built after loading: never quantized).
    `sharded`: FSDP flattens every parameter of a unit into one tensor of one dtype, so the 4-bit weights are
    stored in the compute dtype (FSDP-QLoRA, peft PR #1550)."""
    if method == "none":
        return None
    from transformers import BitsAndBytesConfig

    if method == "nf4":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
            bnb_4bit_quant_storage=dtype if sharded else torch.uint8,
        )
    return BitsAndBytesConfig(load_in_8bit=True)


def use_one_4bit_kernel(model) -> None:
    """bitsandbytes on a CPU with AVX512-BF16 repacks a 4-bit layer's weight the first time it runs in eval mode,
    and from then on multiplies in bfloat16 with a kernel that has no backward. During training (an evaluation
    between steps) the gradient through the frozen weight is lost and every adapter below gets wrong gradients;
    at inference the logits differ from those the Trainer's evaluation computed (the run's validation
    predictions) by about 1e-3. The packing stays off on CPU, for training and inference alike
    (tests/test_model.py checks both)."""
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False
