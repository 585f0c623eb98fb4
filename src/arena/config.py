"""The typed run configuration: YAML -> dataclasses, dotted `--set a.b=value` overrides, strict checks.

Every key and type is checked, choices included (`Literal[...]` on the field); an error names the key's full
dotted path and the file it came from.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from arena.errors import UserError
from arena.layout import SOURCE_ROOT

CONFIG_DIR = SOURCE_ROOT / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "default.yaml"


class ConfigError(UserError):
    """A configuration problem; the message names the key path."""


# Prompt formats (arena.prompts has one frame per family).
Family = Literal["gemma", "llama3", "mistral", "phi2", "plain"]
Quantization = Literal["nf4", "int8", "none"]
# The generated, learnable sample in the competition's format (data.sample_rows rows) instead of a CSV.
SAMPLE = "sample"


@dataclass
class ModelConfig:
    # A local folder with config.json + weights, or "embedded:gemma3-270m" (the PyPI-shipped GGUF,
    # converted once to safetensors in the cache dir).
    path: str = "embedded:gemma3-270m"
    # Prompt format family: gemma | llama3 | mistral | phi2 | plain
    family: Family = "gemma"
    quantization: Quantization = "nf4"
    compute_dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    # auto: eager for Gemma-2 (its logit soft-capping is ignored by SDPA), sdpa otherwise
    attn_implementation: Literal["auto", "eager", "sdpa"] = "auto"
    # prior: bias = log class prior, or with length_features a logistic regression fit on them | zero | random
    head_init: Literal["prior", "zero", "random"] = "prior"
    # The head also sees log-scale length features of the full texts (a truncated window hides verbosity).
    length_features: bool = True
    gradient_checkpointing: Literal["auto", "on", "off"] = "auto"  # auto: on for GPU, off for CPU
    device: Literal["auto", "cpu", "cuda"] = "auto"


@dataclass
class PeftConfig:
    method: Literal["lora", "prompt_tuning"] = "lora"
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    layers_to_transform: list[int] | None = None
    num_virtual_tokens: int = 16


@dataclass
class PromptConfig:
    max_length: int = 256
    # Which end of an over-long part is kept: "left" truncation drops the start and keeps the last turns.
    truncation_side: Literal["left", "right"] = "left"
    # Share of the token budget each part may claim when the total is over budget; unused share flows
    # to the other parts. min_tokens is the floor every part keeps.
    prompt_share: float = 0.2
    response_share: float = 0.4
    min_tokens: int = 16
    # State each response's length (words) in the text, so a truncated window still sees verbosity.
    show_lengths: bool = True
    cut_marker: str = " [...] "


@dataclass
class DataConfig:
    # A competition-format CSV (e.g. data/train.csv from `make data`), or "sample": the generated, learnable
    # sample of sample_rows rows, written once to data/sample/ so it can be read.
    train: str = SAMPLE
    extra: list[str] = field(default_factory=list)
    sample_rows: int = 600
    dedup: bool = True
    folds: int = 5
    fold: int = 0  # the fold held out for validation by `arena train`
    max_rows: int | None = None  # cap on training rows (after the split), for quick runs


@dataclass
class TrainConfig:
    epochs: float = 1.0
    max_steps: int = -1
    learning_rate: float = 2e-4
    head_learning_rate: float | None = None  # learning rate of the score head; None = learning_rate
    per_device_batch_size: int = 4
    grad_accum: int = 2
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    lr_scheduler: str = "linear"
    optim: str = "adamw_torch"  # any TrainingArguments optim, e.g. paged_adamw_8bit on GPU
    # Optimizer steps between evaluations (and checkpoints), or a fraction (< 1) of the run's total steps.
    eval_steps: int | float = 50
    save_total_limit: int = 2
    swap_augment: bool = False
    # random, or group_by_length (LengthGroupedSampler: seeded mega-batches of similar length, less padding)
    sampling: Literal["random", "group_by_length"] = "random"
    max_eval_rows: int | None = None
    runs_dir: str = "runs"
    logging_steps: int = 10
    max_grad_norm: float = 1.0


@dataclass
class InferConfig:
    max_length: int = 256
    # Sorted dynamic batching: a batch holds at most this many tokens (rows x longest row).
    max_batch_tokens: int = 4096
    max_batch_size: int = 16
    tta: bool = True
    tta_average: Literal["prob", "logit"] = "prob"
    quantization: Quantization | None = None  # None = as in training; none = the compute dtype (fp16/bf16/fp32)
    # Inference throughput on Kaggle T4x2 in real (unpadded) tokens/s over both GPUs, with sorted
    # batching; the pre-flight projection before a push divides the test set's tokens by it. 0 = unknown.
    t4x2_tokens_per_s: float = 0.0


@dataclass
class KaggleConfig:
    competition: str = "lmsys-chatbot-arena"
    # Slugs are prefixed with the Kaggle username from kaggle.json.
    kernel_slug: str = "arena-inference"
    adapter_dataset_slug: str = "arena-adapter"
    wheels_dataset_slug: str = "arena-wheels"
    # Kaggle model/dataset holding the base weights, e.g. "google/gemma-2/transformers/gemma-2-9b-it/2".
    base_model_source: str = ""
    base_model_dataset: str = ""
    # Path of the base weights inside the kernel (under /kaggle/input).
    base_model_kernel_path: str = ""
    hidden_test_rows: int = 25000
    time_limit_hours: float = 9.0


@dataclass
class Config:
    name: str = "default"
    seed: int = 42
    model: ModelConfig = field(default_factory=ModelConfig)
    peft: PeftConfig = field(default_factory=PeftConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    infer: InferConfig = field(default_factory=InferConfig)
    kaggle: KaggleConfig = field(default_factory=KaggleConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)




def _coerce(value, tp, path: str, source: str):
    """Check `value` against the type hint `tp`, converting only where lossless (int -> float)."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            allowed = ", ".join(str(c) for c in choices)
            raise ConfigError(f"{source}: {path}: {value!r} is not one of {allowed}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, path, source)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0])
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{source}: {path}: expected a list, got {type(value).__name__} {value!r}")
        return [_coerce(v, item_tp, f"{path}[{i}]", source) for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {path}: expected a mapping, got {type(value).__name__} {value!r}")
        return _build(tp, value, path, source)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:
            return float(value)  # YAML 1.1 reads "1e-4" (no dot) as a string
        except ValueError:
            pass
    if tp is bool and not isinstance(value, bool):
        raise ConfigError(f"{source}: {path}: expected true/false, got {value!r}")
    if tp is int and isinstance(value, bool):
        raise ConfigError(f"{source}: {path}: expected an integer, got {value!r}")
    if not isinstance(value, tp):
        raise ConfigError(f"{source}: {path}: expected {tp.__name__}, got {type(value).__name__} {value!r}")
    return value


def _build(cls, data: dict, prefix: str, source: str):
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in known:
            full = f"{prefix}.{key}" if prefix else key
            raise ConfigError(f"{source}: unknown key '{full}' (known: {', '.join(sorted(known))})")
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else key
        kwargs[key] = _coerce(value, hints[key], full, source)
    return cls(**kwargs)


def _set_dotted(data: dict, key: str, raw: str, source: str) -> None:
    parts = key.split(".")
    node = data
    cls = Config
    for i, part in enumerate(parts):
        field_names = {f.name: f for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}
        if part not in field_names:
            raise ConfigError(f"{source}: unknown key '{'.'.join(parts[: i + 1])}'")
        if i == len(parts) - 1:
            node[part] = yaml.safe_load(raw) if raw != "" else ""
            return
        cls = typing.get_type_hints(cls)[part]
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{source}: '{'.'.join(parts[: i + 1])}' is not a section")


def from_dict(data: dict | None, overrides: list[str] | tuple[str, ...] = (), source: str = "<dict>") -> Config:
    data = dict(data or {})
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        _set_dotted(data, key.strip(), raw, "--set")
    return _build(Config, data, "", source)


def load(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load a YAML config (configs/default.yaml when `path` is None) and apply `--set` overrides."""
    path = Path(path) if path else DEFAULT_CONFIG
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from exc
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    return from_dict(data, overrides, source=str(path))


def dump(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), encoding="utf-8")
