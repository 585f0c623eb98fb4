"""The model, by concern: runtime.py (where and how it runs on a Hardware), quantize.py (bitsandbytes), head.py (the
PreferenceHead and head.json), backbone.py (PreferenceModel, loading, the meta-device skeleton), adapters.py (LoRA /
prompt tuning, checkpointing, prepared for the Trainer), artifacts.py (a trained run saved, checked, loaded).
`from arena import model; model.load_trained(...)` and every name below keep working from `arena.model`."""

from arena.embedded import resolve_model_path
from arena.errors import UserError
from arena.model.adapters import (
    adapter_problems,
    build_for_training,
    enable_checkpointing,
    meta_prepared,
    peft_config,
    prepare_for_training,
)
from arena.model.artifacts import check_trained, load_trained, save_trained, tensor_shapes
from arena.model.backbone import (
    PreferenceModel,
    last_token_index,
    load_base,
    load_tokenizer,
    meta_backbone,
    meta_preference_model,
    model_config,
    right_pad,
)
from arena.model.head import (
    HEAD_FORMAT,
    HEAD_MODULE,
    PreferenceHead,
    head_bias,
    init_feature_head,
    model_classes,
    name_in_head,
    num_labels,
    read_head,
    write_head,
)
from arena.model.quantize import quantization_config, use_one_4bit_kernel
from arena.model.runtime import (
    FP16_OVERFLOWS,
    INT8_CASTS_TO_FP16,
    Runtime,
    attn_implementation,
    autocast,
    bf16_problem,
    compute_dtype,
    compute_dtype_of,
    compute_dtype_problems,
    cuda_device_index,
    device_for,
    fp16_overflow,
    model_device,
    runtime_for,
)

__all__ = ["FP16_OVERFLOWS", "HEAD_FORMAT", "HEAD_MODULE", "INT8_CASTS_TO_FP16", "PreferenceHead", "PreferenceModel",
           "Runtime", "UserError", "adapter_problems", "attn_implementation", "autocast", "build_for_training",
           "bf16_problem", "check_trained", "compute_dtype", "compute_dtype_of", "compute_dtype_problems",
           "cuda_device_index", "device_for", "enable_checkpointing", "fp16_overflow", "head_bias", "model_classes", "num_labels", "init_feature_head",
           "last_token_index", "load_base", "load_tokenizer", "load_trained", "meta_backbone", "meta_preference_model",
           "meta_prepared", "model_config", "model_device", "name_in_head",
           "peft_config", "prepare_for_training", "quantization_config", "read_head", "resolve_model_path",
           "right_pad", "runtime_for", "save_trained", "tensor_shapes", "use_one_4bit_kernel", "write_head"]
