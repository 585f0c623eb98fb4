"""The model: a decoder backbone + the 3-way PreferenceHead, whose forward takes (input_ids, attention_mask,
features); its quantization, adapters (LoRA / prompt tuning), per-device dtype and attention, save and load."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from arena import hardware as hardware_mod
from arena import quiet
from arena.config import Config
from arena.embedded import resolve_model_path
from arena.errors import UserError
from arena.hardware import Hardware
from arena.layout import RunFolder

NUM_LABELS = 3


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


def compute_dtype_problems(cfg: Config, hf_config, hardware: Hardware | None = None) -> list[str]:
    """Settings under which a model that overflows in float16 would compute in float16, checked from config.json
    before the weights load: model.compute_dtype float16, or int8 weights (which cast to float16) on a machine
    without bf16."""
    attention = attn_implementation(cfg, hf_config.model_type)
    why = fp16_overflow(hf_config.model_type, attention)
    if why is None:
        return []
    hw = hardware or hardware_mod.current()
    what = f"{hf_config.model_type} with {attention} attention: {why}"
    problems = []
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
    sharded = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    rt = Runtime(device=hw.device, dtype=dtype, gradient_checkpointing=checkpointing, sharded=sharded, hardware=hw)
    if hw.simulated:
        _say_once(f"hardware: decisions of profile {hw.describe()}: compute dtype "
                  f"{str(dtype).removeprefix('torch.')}, gradient checkpointing {'on' if checkpointing else 'off'}"
                  f"{', float16 forwards under torch.autocast on the CPU' if dtype == torch.float16 else ''}")
    return rt


def compute_dtype(cfg: Config, hw: Hardware, hf_config=None) -> torch.dtype:
    """model.compute_dtype, or auto's choice for `hw` (the planner's too)."""
    if cfg.model.compute_dtype != "auto":
        return getattr(torch, cfg.model.compute_dtype)
    if not hw.is_gpu or hw.bf16:
        return hw.auto_compute_dtype(False)
    if hf_config is None:
        from transformers import AutoConfig

        hf_config = AutoConfig.from_pretrained(resolve_model_path(str(cfg.model.path)))
    overflows = fp16_overflow(hf_config.model_type, attn_implementation(cfg, hf_config.model_type))
    return hw.auto_compute_dtype(overflows is not None)


_SAID: set[str] = set()


def _say_once(message: str) -> None:
    if message not in _SAID:
        _SAID.add(message)
        print(message, flush=True)


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


def cuda_device_index() -> int:
    """This process's GPU: its LOCAL_RANK under `accelerate launch`, else 0. Set as the current device before
    anything is placed, since bitsandbytes quantizes onto torch.cuda.current_device() (under FSDP no device_map
    says otherwise, and every rank would load onto GPU 0)."""
    index = int(os.environ.get("LOCAL_RANK", 0))
    hardware_mod.select_gpu(index)
    return index


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
    tokenizer.padding_side = "left"  # see left_pad
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
    """Logits (n, 3) from the hidden state at each row's last real token, RMS-normalised, plus (optionally) a
    linear map of standardised length features of the full, untruncated texts.

    Gemma hidden states have norms in the hundreds, dominated by a few fixed outlier dimensions: fed raw,
    every optimizer step moves all logits together. Normalising makes one learning rate fit the head.
    """

    def __init__(self, hidden_size: int, num_features: int, bias: bool, dtype: torch.dtype):
        super().__init__()
        self.proj = torch.nn.Linear(hidden_size, NUM_LABELS, bias=bias, dtype=dtype)
        self.features = torch.nn.Linear(num_features, NUM_LABELS, bias=False, dtype=dtype) if num_features else None

    def forward(self, hidden: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        h = hidden.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6)
        logits = self.proj(h.to(self.proj.weight.dtype))
        if self.features is not None:
            if features is None:
                raise ValueError(f"this head reads {self.features.in_features} length features: pass features=")
            logits = logits + self.features(features.to(device=logits.device, dtype=self.features.weight.dtype))
        return logits


class PreferenceModel(torch.nn.Module):
    """A decoder backbone read by a PreferenceHead at each row's last real token:
    `forward(input_ids, attention_mask, features) -> logits (n, 3)`.

    The attributes are named `model` and `score` as in transformers' sequence-classification classes, so peft
    (task SEQ_CLS, which keeps `score` trainable and saved) and adapters saved by either class fit both.
    """

    # What the Trainer and peft ask of a quantized or device-mapped model: the backbone answers.
    # (_no_split_modules: the decoder layer class, which FSDP's transformer-based wrapping shards by.)
    _FROM_BACKBONE = frozenset({"device", "dtype", "_no_split_modules", "hf_device_map", "hf_quantizer",
                                "is_quantized", "quantization_method", "is_loaded_in_4bit", "is_loaded_in_8bit",
                                "name_or_path"})

    def __init__(self, backbone, head: PreferenceHead):
        super().__init__()
        self.model = backbone
        self.score = head
        self.config = backbone.config

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name in PreferenceModel._FROM_BACKBONE:
                return getattr(self._modules["model"], name)
            raise

    def get_input_embeddings(self):
        return self.model.get_input_embeddings()

    def enable_input_require_grads(self):
        """Deliberately nothing. peft calls this on an unquantized model (else it hooks the embeddings itself) so
        that reentrant checkpointing sees inputs that need gradients. arena checkpoints non-reentrant, which needs
        none (model.enable_checkpointing); with them, backward would run through the frozen layers too."""

    def forward(self, input_ids=None, attention_mask=None, features=None, inputs_embeds=None,
                labels=None, output_attentions=None, output_hidden_states=None, return_dict=None) -> torch.Tensor:
        """Logits (n, 3). `features`: the head's (n, num_features) standardised length features, when it reads
        them. peft's sequence-classification wrapper passes `inputs_embeds` (prompt tuning) and the last four
        arguments, which are unused: the caller computes the loss."""
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds,
                            use_cache=False).last_hidden_state
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        return self.score(hidden[rows, last_token_index(attention_mask, hidden.shape[1])], features)


def last_token_index(attention_mask: torch.Tensor | None, length: int) -> torch.Tensor | int:
    """Position of each row's last real token: -1 with left padding, found from the mask for any padding."""
    if attention_mask is None:
        return -1
    from_end = attention_mask.flip(-1).to(torch.int64).argmax(-1)
    return (length - 1 - from_end).to(attention_mask.device)


def left_pad(rows: list[list[int]], pad_token_id: int, length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) long tensors (len(rows), length), every row left-padded to `length` (default:
    the longest row). Left padding puts every row's last real token at the same position; rotary position
    encodings are relative, so the offset does not change attention between real tokens."""
    longest = max((len(r) for r in rows), default=0)
    length = longest if length is None else length
    if longest > length:
        too_long = [len(r) for r in rows if len(r) > length]
        raise ValueError(f"left_pad: {len(too_long)} row(s) longer than {length} tokens (max {longest})")
    ids = torch.full((len(rows), length), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, length - len(r):] = torch.tensor(r, dtype=torch.long)
            mask[i, length - len(r):] = 1
    return ids, mask


def init_feature_head(model, coef, intercept) -> None:
    """Start the head at a fitted length-feature logistic regression: weights on the features, its intercept
    as the bias (the hidden-state projection stays at zero, so the first forward reproduces the regression)."""
    for head in (m for m in model.modules() if isinstance(m, PreferenceHead)):
        with torch.no_grad():
            head.features.weight.copy_(torch.as_tensor(coef, dtype=head.features.weight.dtype))
            if head.proj.bias is not None:
                head.proj.bias.copy_(torch.as_tensor(intercept, dtype=head.proj.bias.dtype))


def _new_head(backbone, cfg: Config, bias: list[float] | None, dtype: torch.dtype, num_features: int) -> PreferenceHead:
    """A fresh head: zero weights (a random init gives logits worse than uniform), the bias at `bias`."""
    head = PreferenceHead(backbone.config.hidden_size, num_features, bias is not None, dtype)
    if cfg.model.head_init == "random":
        torch.nn.init.normal_(head.proj.weight, std=backbone.config.initializer_range)
    else:
        torch.nn.init.zeros_(head.proj.weight)
    if head.features is not None:
        torch.nn.init.zeros_(head.features.weight)
    if bias is not None:
        with torch.no_grad():
            head.proj.bias.copy_(torch.tensor(bias, dtype=dtype))
    return head


def load_base(cfg: Config, rt: Runtime, bias: list[float] | None, num_features: int,
              model_path: str | Path | None = None, quantization: str | None = None):
    """The base model with a fresh head, quantized and placed per the runtime (a PreferenceModel)."""
    from transformers import AutoConfig, AutoModel
    from transformers.utils import logging as hf_logging

    path = resolve_model_path(str(model_path or cfg.model.path))
    hf_config = AutoConfig.from_pretrained(path)
    kwargs = dict(
        config=hf_config,
        dtype=rt.dtype,
        attn_implementation=attn_implementation(cfg, hf_config.model_type),
        quantization_config=quantization_config(quantization or cfg.model.quantization, rt.dtype, rt.sharded),
    )
    problems = compute_dtype_problems(cfg, hf_config, rt.hardware)
    if problems:
        raise UserError(problems=problems)
    quiet.quiet_libraries()
    if rt.device == "cuda":
        index = cuda_device_index()
        if not rt.sharded:
            # One full copy per process (DDP under `accelerate launch`); never device_map="auto" across GPUs, which
            # is model-parallel. FSDP shards the weights itself, from this process's GPU.
            kwargs["device_map"] = {"": index}
    # Silence the load report: a causal-LM checkpoint's output layer is not part of the backbone, by design.
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        backbone = AutoModel.from_pretrained(path, **kwargs)
    finally:
        hf_logging.set_verbosity(verbosity)
    device = backbone.get_input_embeddings().weight.device
    head = _new_head(backbone, cfg, bias, rt.dtype, num_features).to(device)
    if rt.device == "cpu" and kwargs["quantization_config"] is not None:
        use_one_4bit_kernel(backbone)
    return PreferenceModel(backbone, head)


def meta_backbone(hf_config, dtype: torch.dtype | None = None, attn_implementation: str | None = None):
    """The backbone's architecture on the meta device: shapes and dtypes, no weights, no memory."""
    from transformers import AutoModel

    kwargs = {"dtype": dtype} if dtype is not None else {}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    with torch.device("meta"):
        return AutoModel.from_config(hf_config, **kwargs)


def meta_preference_model(cfg: Config, hf_config, dtype: torch.dtype, num_features: int = 0) -> PreferenceModel:
    """A PreferenceModel on the meta device with the base frozen as after loading, and a head as `load_base`
    builds it."""
    backbone = meta_backbone(hf_config, dtype, attn_implementation(cfg, hf_config.model_type))
    backbone.requires_grad_(False)
    with torch.device("meta"):
        head = PreferenceHead(hf_config.hidden_size, num_features, cfg.model.head_init == "prior", dtype)
    return PreferenceModel(backbone, head)


def adapter_problems(cfg: Config, path: Path | str, hf_config=None) -> list[str]:
    """Problems of peft.layers_to_transform and peft.target_modules against the base model's architecture, built
    from its config.json (or `hf_config`) on the meta device (no weights)."""
    from transformers import AutoConfig

    if cfg.peft.method != "lora":
        return []
    hf_config = hf_config or AutoConfig.from_pretrained(path)
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
    gradients of the trainable weights are the same either way (tests/test_gpu_path.py)."""
    backbone.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    backbone.disable_input_require_grads()


def prepare_for_training(model: PreferenceModel, cfg: Config, rt: Runtime):
    """Gradient checkpointing, the adapter, and float32 trainable weights: a PeftModel for the Trainer. The
    planner applies the same steps to a skeleton on the meta device."""
    from peft import get_peft_model

    from arena.versions import peft_without_old_torchao

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


# head.json's format: 2 since the model takes its features as a forward argument. Format 1 (no "format" key)
# saved the same weights under the same names, so it loads unchanged.
HEAD_FORMAT = 2


def save_trained(model, tokenizer, run: RunFolder, bias: list[float] | None, feature_scaler: dict | None = None,
                 state_dict: dict | None = None, class_prior=None) -> None:
    """Adapter + head (peft modules_to_save) + tokenizer, and head.json: the head's shape, feature scaling and the
    training rows' class prior (what predict gives a row without finite logits). `state_dict`: the model's full
    weights where the model itself holds only a shard (FSDP)."""
    run.adapter.mkdir(parents=True, exist_ok=False)
    model.save_pretrained(run.adapter, **({} if state_dict is None else {"state_dict": state_dict}))
    tokenizer.save_pretrained(run.adapter)
    head = {"format": HEAD_FORMAT, "bias": bias is not None, "num_labels": NUM_LABELS, "feature_scaler": feature_scaler}
    if class_prior is not None:
        head["class_prior"] = [float(p) for p in class_prior]
    run.head.write_text(json.dumps(head, indent=1))


def read_head(run: RunFolder) -> dict:
    """head.json of a trained run; a clear error for a folder that is not one or comes from another version."""
    problems: list[str] = []
    head = _load_head(run, problems)
    if problems:
        raise UserError(problems=problems)
    return head


def check_trained(run: RunFolder) -> list[str]:
    """Every problem of a trained run's adapter folder, found without loading a model: head.json and
    adapter_config.json parse and agree with the weight file's tensor names and shapes, the weights are whole,
    and the tokenizer loads. An empty list when the run can load."""
    if not run.adapter.is_dir() or not any(run.adapter.iterdir()):
        return [f"{run.adapter}: no trained adapter here (missing or empty): an unfinished run, or not a run folder"]
    problems: list[str] = []
    head = _load_head(run, problems)
    if run.is_merged():
        problems += _merged_problems(run, head)
    else:
        adapter_config = _read_json(run.adapter / "adapter_config.json", problems, "peft's adapter settings")
        weights = run.adapter / "adapter_model.safetensors"
        shapes = tensor_shapes(weights, problems)
        if head is not None and adapter_config is not None and shapes is not None and not problems:
            problems += [f"{weights}: {p}" for p in _weight_problems(adapter_config, head, shapes)]
    tokenizer_file = run.adapter / "tokenizer.json"
    if _read_json(tokenizer_file, problems, "the tokenizer") is not None:
        try:
            load_tokenizer(run.adapter)
        except Exception as exc:  # noqa: BLE001 - any failure here means the kernel could not tokenise
            problems.append(f"{tokenizer_file}: the tokenizer does not load ({type(exc).__name__}: {exc})")
    return problems


def _merged_problems(run: RunFolder, head: dict | None) -> list[str]:
    """A merged model folder (`arena merge`): its config.json parses, every weight file is whole, and the head's
    weights match head.json."""
    problems: list[str] = []
    _read_json(run.merged_model_config, problems, "the merged model's architecture")
    files = sorted(run.adapter.glob("model*.safetensors"))
    if not files:
        problems.append(f"{run.adapter}: no model*.safetensors (the merged weights)")
    for path in files:
        tensor_shapes(path, problems)
    shapes = tensor_shapes(run.merged_head, problems)
    if head is not None and shapes is not None:
        problems += [f"{run.merged_head}: {p}" for p in _head_weight_problems(head, shapes)]
    return problems


def _load_head(run: RunFolder, problems: list[str]) -> dict | None:
    head = _read_json(run.head, problems, "the head's shape and feature scaling: an unfinished run, or one made by "
                                          "an older version of arena")
    found = _head_problems(run, head) if head is not None else []
    problems += found
    return None if found else head


def _read_json(path: Path, problems: list[str], what: str):
    if not path.is_file():
        problems.append(f"{path}: missing ({what})")
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        problems.append(f"{path}: not valid JSON ({exc}); the file is damaged")
        return None


def _head_problems(run: RunFolder, head) -> list[str]:
    """Every problem of head.json's content (not only the first)."""
    if not isinstance(head, dict):
        return [f"{run.head}: not a head description (a JSON {type(head).__name__}, not an object): made by "
                f"another version of arena?"]
    problems = [f"{run.head}: no {key} key: not a head description made by arena" for key in ("bias", "num_labels")
                if key not in head]
    made = head.get("format", 1)
    if not isinstance(made, int) or made > HEAD_FORMAT:
        problems.append(f"{run.head}: made by a newer version of arena (head format {made}; this version reads up "
                        f"to {HEAD_FORMAT}): upgrade arena to load it")
    if "bias" in head and not isinstance(head["bias"], bool):
        problems.append(f"{run.head}: bias is {head['bias']!r}, expected true or false")
    if "num_labels" in head and head["num_labels"] != NUM_LABELS:
        problems.append(f"{run.head}: num_labels is {head['num_labels']!r}, expected {NUM_LABELS}")
    prior = head.get("class_prior")
    if prior is not None and not (isinstance(prior, list) and len(prior) == NUM_LABELS
                                  and all(isinstance(p, (int, float)) and p >= 0 for p in prior) and sum(prior) > 0):
        problems.append(f"{run.head}: class_prior is {prior!r}, expected {NUM_LABELS} non-negative numbers")
    scaler = head.get("feature_scaler")
    if scaler is not None:
        lengths = {len(scaler.get(k) or []) for k in ("names", "mean", "std")} if isinstance(scaler, dict) else {0}
        if len(lengths) != 1 or 0 in lengths:
            problems.append(f"{run.head}: feature_scaler needs names, mean and std of one length")
    return problems


def tensor_shapes(path: Path, problems: list[str]) -> dict[str, list[int]] | None:
    """Tensor name -> shape from a safetensors header; the library also checks the file covers every tensor."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        problems.append(f"{path}: missing (the adapter's weights)")
        return None
    try:
        with safe_open(path, "pt") as f:
            return {name: list(f.get_slice(name).get_shape()) for name in f.keys()}
    except (SafetensorError, OSError) as exc:
        problems.append(f"{path}: not a whole safetensors file ({exc}); the file is damaged or truncated")
        return None


def _weight_problems(adapter_config: dict, head: dict, shapes: dict[str, list[int]]) -> list[str]:
    """Tensor names and shapes against adapter_config.json (the adapter) and head.json (the head)."""
    score = {name.split(".score.", 1)[1]: shape for name, shape in shapes.items() if ".score." in name}
    return _head_weight_problems(head, score) + _adapter_weight_problems(adapter_config, shapes)


def _head_weight_problems(head: dict, score: dict[str, list[int]]) -> list[str]:
    """The head's tensors (names inside the head) against head.json."""
    problems = []
    scaler = head.get("feature_scaler")
    expected = {"proj.weight": NUM_LABELS}
    if head["bias"]:
        expected["proj.bias"] = NUM_LABELS
    if scaler:
        expected["features.weight"] = NUM_LABELS
    for name, rows in expected.items():
        if name not in score:
            problems.append(f"no head tensor score.{name} (head.json describes one)")
        elif score[name][0] != rows:
            problems.append(f"head tensor score.{name} has shape {score[name]}, expected {rows} rows")
    if scaler and "features.weight" in score and score["features.weight"][-1] != len(scaler["mean"]):
        problems.append(f"head tensor score.features.weight reads {score['features.weight'][-1]} features, head.json "
                        f"scales {len(scaler['mean'])}")
    return problems


def _adapter_weight_problems(adapter_config: dict, shapes: dict[str, list[int]]) -> list[str]:
    problems = []
    peft_type = adapter_config.get("peft_type")
    if peft_type == "LORA":
        targets = adapter_config.get("target_modules") or []
        lora = [name for name in shapes if ".lora_A." in name or ".lora_B." in name]
        if not lora:
            problems.append("no LoRA tensors, though adapter_config.json says LORA")
        # (a regular expression in target_modules, which arena never writes, is not checked here)
        stray = [name for name in lora if isinstance(targets, list) and not any(f".{t}.lora_" in name for t in targets)]
        if stray:
            problems.append(f"LoRA tensors for modules adapter_config.json does not target, e.g. {stray[0]}")
        rank = adapter_config.get("r")
        odd = [name for name in lora if ".lora_A." in name and shapes[name][0] != rank]
        if odd:
            problems.append(f"{odd[0]} has rank {shapes[odd[0]][0]}, adapter_config.json says r={rank}")
    elif peft_type == "PROMPT_TUNING":
        if not any("prompt_embeddings" in name for name in shapes):
            problems.append("no prompt embeddings, though adapter_config.json says PROMPT_TUNING")
    else:
        problems.append(f"adapter_config.json: peft_type {peft_type!r} is not LORA or PROMPT_TUNING")
    return problems


def load_trained(cfg: Config, run: RunFolder, base_model: str | Path | None = None, quantization: str | None = None):
    """A trained run's model for inference: (PeftModel over a PreferenceModel, or the PreferenceModel of a merged
    folder, tokenizer, runtime)."""
    from peft import PeftModel
    from transformers import AutoConfig

    from arena.versions import peft_without_old_torchao

    peft_without_old_torchao()  # Kaggle's torchao 0.10.0: see there
    head = read_head(run)
    # the model that loads decides float16 or float32 on a GPU without bf16: never the training machine's folder
    weights = run.adapter if run.is_merged() else (base_model or cfg.model.path)
    rt = runtime_for(cfg, AutoConfig.from_pretrained(resolve_model_path(str(weights))))
    # The real values come from the adapter's saved head; this only sizes the module.
    bias = [0.0] * NUM_LABELS if head["bias"] else None
    scaler = head.get("feature_scaler")
    num_features = len(scaler["mean"]) if scaler else 0
    if run.is_merged():  # `arena merge`: the backbone in the folder, quantized as asked when it loads
        from safetensors.torch import load_file

        if base_model is not None:
            print(f"note: {run.root} is a merged model with its own weights; the base model {base_model} is not used")
        model = load_base(cfg, rt, bias, num_features, model_path=run.adapter, quantization=quantization)
        weights = load_file(run.merged_head)
        model.score.load_state_dict({k: v.to(model.score.proj.weight.dtype) for k, v in weights.items()})
    else:
        model = load_base(cfg, rt, bias, num_features, model_path=base_model, quantization=quantization)
        model = PeftModel.from_pretrained(model, run.adapter)
    model.eval()
    return model, load_tokenizer(run.adapter), rt
