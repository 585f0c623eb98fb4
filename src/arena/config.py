"""The typed run configuration: YAML -> dataclasses, dotted `--set a.b=value` overrides, strict checks.

Every key is checked against its type, its choices (`Literal[...]`) and its range (`Annotated[..., Range]`),
all written on the field; relations between keys are checked after. Every problem is reported at once, each
naming the key's dotted path and where its value came from (the YAML file or --set).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import yaml

from arena.errors import UserError
from arena.layout import SOURCE_ROOT

CONFIG_DIR = SOURCE_ROOT / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "default.yaml"


class ConfigError(UserError):
    """A configuration problem; each line names the key path and where its value came from."""


@dataclass(frozen=True)
class Range:
    """Bounds of a number, with the reason where it is not obvious. NaN and infinities are never in range."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    why: str = ""

    def problem(self, value) -> str | None:
        if isinstance(value, float) and not math.isfinite(value):
            return f"{value!r} is not a finite number"
        checks = ((self.ge, lambda b: value >= b, "at least"), (self.gt, lambda b: value > b, "above"),
                  (self.le, lambda b: value <= b, "at most"), (self.lt, lambda b: value < b, "below"))
        for bound, holds, words in checks:
            if bound is not None and not holds(bound):
                return f"{value!r} must be {words} {bound:g}" + (f" ({self.why})" if self.why else "")
        return None


@dataclass(frozen=True)
class Pattern:
    """A string that must match `regex` in full; `what` says what it must be."""

    regex: str
    what: str

    def problem(self, value) -> str | None:
        return None if re.fullmatch(self.regex, value) else f"{value!r} is not {self.what}"


@dataclass(frozen=True)
class NonEmpty:
    what: str = "at least one item"

    def problem(self, value) -> str | None:
        return None if value else f"needs {self.what}"


Count = Annotated[int, Range(ge=1)]  # how many of something: at least one
Probability = Annotated[float, Range(ge=0, le=1)]
LearningRate = Annotated[float, Range(gt=0, le=1)]
# Run names become folder names under train.runs_dir: no separators, no leading dot.
RunName = Annotated[str, Pattern(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", "a folder name: letters, digits, '.', '_', '-' "
                                 "(no '/', not starting with '.'), at most 100 characters")]
Slug = Annotated[str, Pattern(r"[a-z0-9][a-z0-9-]{3,48}[a-z0-9]",
                              "a Kaggle slug: 5-50 lowercase letters, digits and hyphens")]
# Prompt formats (arena.prompts has one frame per family).
Family = Literal["gemma", "llama3", "mistral", "phi2", "plain"]
Quantization = Literal["nf4", "int8", "none"]
# transformers' SchedulerType values (a test keeps the two lists equal).
Scheduler = Literal["linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
                    "inverse_sqrt", "reduce_lr_on_plateau", "cosine_with_min_lr", "cosine_warmup_with_min_lr",
                    "warmup_stable_decay", "greedy"]
# The Kaggle competitions this pipeline targets (kaggle.competition). Both are code competitions on the same LMSYS
# data (train.csv 57,477 rows, the same columns; ~25k hidden test rows; log loss), internet off, a 9 h limit on
# T4x2: kaggle.hidden_test_rows and kaggle.time_limit_hours hold for either, and nothing else differs but the state.
# - lmsys-chatbot-arena: the original (closed 2024-08): a late submission is scored, its private score counts.
#   https://www.kaggle.com/competitions/lmsys-chatbot-arena
# - llm-classification-finetuning: the Getting Started competition on the same data, open: its public board counts.
#   https://www.kaggle.com/competitions/llm-classification-finetuning
Competition = Literal["lmsys-chatbot-arena", "llm-classification-finetuning"]
COMPETITIONS: tuple[str, ...] = typing.get_args(Competition)
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
    r: Count = 16
    alpha: Count = 32
    dropout: Annotated[float, Range(ge=0, lt=1)] = 0.05
    target_modules: Annotated[list[str], NonEmpty("at least one module name")] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    layers_to_transform: list[Annotated[int, Range(ge=0)]] | None = None
    num_virtual_tokens: Count = 16


@dataclass
class PromptConfig:
    # Tokens of one example. At least 3 x min_tokens; the scaffold of the format comes on top (checked with the
    # tokenizer before any model loads).
    max_length: Count = 256
    # Which end of an over-long part is kept: "left" truncation drops the start and keeps the last turns.
    truncation_side: Literal["left", "right"] = "left"
    # Share of the token budget each part may claim when the total is over budget; unused share flows
    # to the other parts. min_tokens is the floor every part keeps.
    prompt_share: Probability = 0.2
    response_share: Probability = 0.4
    min_tokens: Count = 16
    # State each response's length (words) in the text, so a truncated window still sees verbosity.
    show_lengths: bool = True
    cut_marker: str = " [...] "


@dataclass
class DataConfig:
    # A competition-format CSV (e.g. data/train.csv from `make data`), or "sample": the generated, learnable
    # sample of sample_rows rows, written once to data/sample/ so it can be read.
    train: str = SAMPLE
    extra: list[str] = field(default_factory=list)
    sample_rows: Count = 600
    dedup: bool = True
    folds: Annotated[int, Range(ge=2, why="one fold validates, the others train")] = 5
    fold: Annotated[int, Range(ge=0)] = 0  # the fold held out for validation by `arena train`
    max_rows: Count | None = None  # cap on training rows (after the split), for quick runs
    # Distillation: CSVs of teacher probabilities by id (an `arena cv` OOF file, a `predict` output, or any CSV of
    # id + the three class columns). Training rows a teacher covers learn from it too (train.distill_weight).
    teacher: list[Annotated[str, NonEmpty("a CSV path")]] = field(default_factory=list)


@dataclass
class TrainConfig:
    epochs: Annotated[float, Range(gt=0)] = 1.0
    max_steps: Annotated[int, Range(ge=-1, why="-1: as many as train.epochs take")] = -1
    learning_rate: LearningRate = 2e-4
    head_learning_rate: LearningRate | None = None  # learning rate of the score head; None = learning_rate
    per_device_batch_size: Count = 4
    grad_accum: Count = 2
    warmup_ratio: Annotated[float, Range(ge=0, lt=1, why="a share of the total steps")] = 0.05
    weight_decay: Annotated[float, Range(ge=0)] = 0.0
    lr_scheduler: Scheduler = "linear"
    optim: str = "adamw_torch"  # any TrainingArguments optim, e.g. paged_adamw_8bit on GPU
    # Optimizer steps between evaluations (and checkpoints), or a fraction (< 1) of the run's total steps.
    eval_steps: Annotated[int, Range(ge=1, why="or a fraction of the run below 1")] | Annotated[float, Range(gt=0, lt=1)] = 50
    save_total_limit: Count = 2
    # Also train every row with A and B swapped: random (rows and twins shuffled apart), paired (every batch holds
    # each row beside its swapped twin: both orders in the same optimizer step) or none. true/false in older
    # configs read as random/none.
    swap_augment: Literal["none", "random", "paired"] = "none"
    # Distillation (data.teacher): loss = (1 - w) * cross-entropy on the labels + w * T^2 * KL(teacher_T || model_T),
    # the teachers' KL terms weighted by teacher_weights (default equal); rows no teacher covers use the labels.
    distill_weight: Probability = 0.5
    distill_temperature: Annotated[float, Range(gt=0)] = 1.0
    teacher_weights: list[Annotated[float, Range(gt=0)]] | None = None
    # random, or group_by_length (LengthGroupedSampler: seeded mega-batches of similar length, less padding)
    sampling: Literal["random", "group_by_length"] = "random"
    max_eval_rows: Count | None = None
    runs_dir: Annotated[str, NonEmpty("a folder")] = "runs"
    logging_steps: Count = 10
    max_grad_norm: Annotated[float, Range(gt=0)] = 1.0
    # Stop (with a checkpoint) after this many consecutive optimizer steps with a non-finite loss or an update the
    # float16 grad scaler skipped: the sign of a compute dtype that overflows on the model.
    nan_patience: Count = 25
    # The Trainer's logging integration: tensorboard (event files in the run's logs/) or wandb (offline
    # without an API key); none by default.
    report_to: Literal["none", "tensorboard", "wandb"] = "none"
    # Wall-clock budget of one training process (a Kaggle session less a margin): training stops after the last
    # optimizer step that leaves time to save, keeps a whole checkpoint and exits 75; `--resume` continues. None: none.
    max_wall_hours: Annotated[float, Range(gt=0)] | None = None


@dataclass
class InferConfig:
    max_length: Count = 256  # as prompt.max_length, at inference
    # Sorted dynamic batching: a batch holds at most this many tokens (rows x longest row).
    max_batch_tokens: Count = 4096
    max_batch_size: Count = 16
    tta: bool = True
    tta_average: Literal["prob", "logit"] = "prob"
    quantization: Quantization | None = None  # None = as in training; none = the compute dtype (fp16/bf16/fp32)
    # Inference throughput on Kaggle T4x2 in real (unpadded) tokens/s over both GPUs, with sorted batching, as
    # measured on Kaggle; the pre-flight projection divides the test set's tokens by it. 0 = use the planner's
    # projection for the architecture (`arena plan`).
    t4x2_tokens_per_s: Annotated[float, Range(ge=0)] = 0.0
    # P(tie) given to rows whose two responses are the same text after whitespace normalisation (the others split
    # evenly between A and B); null = predicted as any row. Measured in the README ("Identical responses"): on the
    # one file here that has such rows every one is a tie; 0.8 rather than higher, as 6 rows are few.
    identical_tie: Annotated[float, Range(ge=0, le=1)] | None = 0.8


@dataclass
class KaggleConfig:
    competition: Competition = "lmsys-chatbot-arena"  # see COMPETITIONS above
    # Slugs are prefixed with the Kaggle username from kaggle.json.
    kernel_slug: Slug = "arena-inference"
    adapter_dataset_slug: Slug = "arena-adapter"
    wheels_dataset_slug: Slug = "arena-wheels"
    # The Kaggle model holding the base weights, owner/model/framework/variation/version (e.g.
    # "google/gemma-2/transformers/gemma-2-9b-it/2"), or a dataset of them, owner/slug: attached to the kernel,
    # which finds them in Kaggle's mount layout (/kaggle/input/models/<source>, older: /kaggle/input/<model>/...).
    base_model_source: str = ""
    base_model_dataset: Annotated[str, Pattern(r"|[^/\s]+/[^/\s]+", "empty or a Kaggle dataset owner/slug")] = ""
    # Old key, still honoured: the path of the base weights inside the kernel (the kernel also looks for the same
    # model in the other mount layout). Not needed with base_model_source.
    base_model_kernel_path: str = ""
    hidden_test_rows: Count = 25000
    time_limit_hours: Annotated[float, Range(gt=0)] = 9.0
    # The kernel's deadline is time_limit_hours less this margin, from the kernel's start: what runs after the last
    # prediction (blend, writing) and slack for a slower session. Swap TTA covers what fits before it.
    deadline_margin_minutes: Annotated[float, Range(ge=0)] = 20.0
    # Training on Kaggle (`arena kaggle train`): the kernel, the dataset of its data files and config, and the
    # session: each kernel version trains until kaggle.session_hours less the margin (saving the output and the
    # kernel's own end need it), then the next version resumes.
    train_kernel_slug: Slug = "arena-train"
    train_data_dataset_slug: Slug = "arena-train-data"
    session_hours: Annotated[float, Range(gt=0)] = 12.0
    session_margin_hours: Annotated[float, Range(ge=0)] = 0.5


@dataclass
class Config:
    name: RunName = "default"
    seed: Annotated[int, Range(ge=0)] = 42
    model: ModelConfig = field(default_factory=ModelConfig)
    peft: PeftConfig = field(default_factory=PeftConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    infer: InferConfig = field(default_factory=InferConfig)
    kaggle: KaggleConfig = field(default_factory=KaggleConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)




class _WrongType(ConfigError):
    """The value is not of the field's type at all (as opposed to out of range or not a choice)."""


class _Origins:
    """Where each key's value came from: the YAML file, or --set for the keys (and sections) it overrode."""

    def __init__(self, source: str, overridden: set[str]):
        self.source = source
        self.overridden = overridden

    def __call__(self, key: str) -> str:
        for k in self.overridden:
            if key == k or key.startswith((k + ".", k + "[")):
                return "--set"
        return self.source


def _coerce(value, tp, path: str, origin: _Origins):
    """Check `value` against the type hint `tp` (its choices and range included), converting only where
    lossless (int -> float). Raises ConfigError naming the key and where the value came from."""
    where = origin(path)
    kind = typing.get_origin(tp)
    if kind is Annotated:
        base, *constraints = typing.get_args(tp)
        value = _coerce(value, base, path, origin)
        for constraint in constraints:
            problem = constraint.problem(value)
            if problem:
                raise ConfigError(f"{where}: {path}: {problem}")
        return value
    if kind is Literal:
        choices = typing.get_args(tp)
        if isinstance(value, bool) and {"on", "off"} <= set(choices):  # YAML 1.1 reads a bare on/off as true/false
            value = "on" if value else "off"
        if value not in choices:
            allowed = ", ".join(str(c) for c in choices)
            raise ConfigError(f"{where}: {path}: {value!r} is not one of {allowed}")
        return value
    if kind in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, path, origin)
            except ConfigError as exc:
                errors.append(exc)
        # An alternative whose type matched explains best: "must be at least 1" beats "expected int".
        raise next((e for e in errors if not isinstance(e, _WrongType)), errors[0])
    if kind is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise _WrongType(f"{where}: {path}: expected a list, got {type(value).__name__} {value!r}")
        return [_coerce(v, item_tp, f"{path}[{i}]", origin) for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise _WrongType(f"{where}: {path}: expected a mapping, got {type(value).__name__} {value!r}")
        return _build(tp, value, path, origin)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:
            return float(value)  # YAML 1.1 reads "1e-4" (no dot) as a string
        except ValueError:
            pass
    if tp is bool and not isinstance(value, bool):
        raise _WrongType(f"{where}: {path}: expected true/false, got {value!r}")
    if tp is int and isinstance(value, bool):
        raise _WrongType(f"{where}: {path}: expected an integer, got {value!r}")
    if not isinstance(value, tp):
        raise _WrongType(f"{where}: {path}: expected {tp.__name__}, got {type(value).__name__} {value!r}")
    return value


def all_keys(cls=None, prefix: str = "") -> list[str]:
    """Every dotted key of the schema (sections and leaves), e.g. model, model.path, train.learning_rate."""
    keys = []
    for f in dataclasses.fields(cls or Config):
        full = f"{prefix}{f.name}"
        keys.append(full)
        tp = typing.get_type_hints(cls or Config)[f.name]
        if dataclasses.is_dataclass(tp):
            keys += all_keys(tp, full + ".")
    return keys


def _did_you_mean(key: str) -> str:
    """' (did you mean a.b?)' for the nearest known keys: by the whole path, else by its last part anywhere."""
    keys = all_keys()
    near = difflib.get_close_matches(key, keys, n=3, cutoff=0.75)
    if not near:
        leaf = key.rsplit(".", 1)[-1]
        near = [k for k in keys if k.rsplit(".", 1)[-1] in difflib.get_close_matches(
            leaf, [k.rsplit(".", 1)[-1] for k in keys], n=3, cutoff=0.75)][:3]
    return f" (did you mean {' or '.join(near)}?)" if near else ""


def _build(cls, data: dict, prefix: str, origin: _Origins):
    """The dataclass `cls` from a mapping; raises ConfigError listing the problem of every key."""
    hints = typing.get_type_hints(cls, include_extras=True)
    known = {f.name for f in dataclasses.fields(cls)}
    problems, kwargs = [], {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else key
        if key not in known:
            problems.append(f"{origin(full)}: unknown key '{full}'{_did_you_mean(full)} (known here: "
                            f"{', '.join(sorted(known))})")
            continue
        try:
            kwargs[key] = _coerce(value, hints[key], full, origin)
        except ConfigError as exc:
            problems.extend(exc.problems or [str(exc)])
    if problems:
        raise ConfigError(problems=problems)
    return cls(**kwargs)


def model_positions(model_path: str) -> tuple[int, str] | None:
    """(max_position_embeddings, its config.json) of a base model on disk, read as plain JSON (no model code, no
    weights); None when the folder (or the embedded model's converted copy) is not there yet."""
    from arena import embedded

    if embedded.is_embedded(model_path):
        folder = embedded.cache_dir() / model_path[len(embedded.EMBEDDED_PREFIX):]
    else:
        folder = Path(model_path).expanduser()
    path = folder / "config.json"
    try:
        hf = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # absent here (a Kaggle path), or damaged: the model checks name that
        return None
    hf = hf if isinstance(hf, dict) else {}
    limit = hf.get("max_position_embeddings", (hf.get("text_config") or {}).get("max_position_embeddings"))
    return (limit, str(path)) if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0 else None


def length_problems(cfg: Config, positions: int, source: str) -> list[tuple[str, str]]:
    """(key, problem) for prompt.max_length and infer.max_length beyond the model's `positions`."""
    return [(key, f"{length} is more than the {positions} positions the base model has (max_position_embeddings "
                  f"in {source})")
            for key, length in (("prompt.max_length", cfg.prompt.max_length), ("infer.max_length", cfg.infer.max_length))
            if length > positions]


def _relations(cfg: Config) -> list[tuple[str, str]]:
    """(key, problem) for values that are fine alone but not together (and with the base model's config.json)."""
    problems = []
    positions = model_positions(cfg.model.path)
    if positions:
        problems += length_problems(cfg, *positions)
    floor = 3 * cfg.prompt.min_tokens
    for key, length in (("prompt.max_length", cfg.prompt.max_length), ("infer.max_length", cfg.infer.max_length)):
        if length < floor:
            problems.append((key, f"{length} cannot hold 3 parts of prompt.min_tokens={cfg.prompt.min_tokens} "
                                  f"tokens (needs at least {floor}, plus the format's scaffold)"))
    if cfg.prompt.prompt_share + cfg.prompt.response_share <= 0:
        problems.append(("prompt.prompt_share", "0 with prompt.response_share 0: no part of an example gets a share"))
    if cfg.data.fold >= cfg.data.folds:
        problems.append(("data.fold", f"{cfg.data.fold} is not in 0..{cfg.data.folds - 1} (data.folds={cfg.data.folds})"))
    if cfg.train.swap_augment == "paired":
        if cfg.train.per_device_batch_size % 2:
            problems.append(("train.per_device_batch_size", f"{cfg.train.per_device_batch_size} is odd: "
                             "train.swap_augment paired puts each row and its swapped twin in the same batch"))
        if cfg.train.sampling != "random":
            problems.append(("train.sampling", f"{cfg.train.sampling} would split the swapped twins of "
                             "train.swap_augment paired (use random)"))
    if cfg.train.teacher_weights is not None and len(cfg.train.teacher_weights) != len(cfg.data.teacher):
        problems.append(("train.teacher_weights", f"{len(cfg.train.teacher_weights)} weight(s) for "
                         f"{len(cfg.data.teacher)} teacher CSV(s) in data.teacher"))
    if cfg.train.max_steps == 0:
        problems.append(("train.max_steps", "0 trains nothing (-1: as many as train.epochs take)"))
    return problems


def _set_dotted(data: dict, key: str, raw: str) -> None:
    parts = key.split(".")
    node = data
    cls = Config
    for i, part in enumerate(parts):
        field_names = {f.name: f for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}
        if part not in field_names:
            known = f" (known here: {', '.join(sorted(field_names))})" if field_names else ""
            raise ConfigError(f"--set: unknown key '{'.'.join(parts[: i + 1])}'{_did_you_mean(key)}{known}")
        if i == len(parts) - 1:
            try:
                node[part] = yaml.safe_load(raw) if raw != "" else ""
            except yaml.YAMLError as exc:
                raise ConfigError(f"--set: {key}: {raw!r} is not a YAML value ({exc.problem})") from None
            return
        cls = typing.get_type_hints(cls)[part]
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set: '{'.'.join(parts[: i + 1])}' is not a section")


def _upgrade(data: dict) -> None:
    """Older spellings of keys, so that earlier run folders still load: swap_augment was true/false."""
    train = data.get("train")
    if isinstance(train, dict) and isinstance(train.get("swap_augment"), bool):
        train["swap_augment"] = "random" if train["swap_augment"] else "none"


def from_dict(data: dict | None, overrides: list[str] | tuple[str, ...] = (), source: str = "<dict>") -> Config:
    """A checked Config from a mapping plus `--set key=value` overrides; ConfigError lists every problem."""
    data = dict(data or {})
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    problems, overridden = [], set()
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            problems.append(f"--set {item!r}: expected key=value")
            continue
        try:
            _set_dotted(data, key.strip(), raw)
            overridden.add(key.strip())
        except ConfigError as exc:
            problems.append(str(exc))
    origin = _Origins(source, overridden)
    _upgrade(data)
    try:
        cfg = _build(Config, data, "", origin)
    except ConfigError as exc:
        raise ConfigError(problems=problems + exc.problems) from None
    problems += [f"{origin(key)}: {key}: {problem}" for key, problem in _relations(cfg)]
    if problems:
        raise ConfigError(problems=problems)
    return cfg


def load(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load a YAML config (configs/default.yaml when `path` is None) and apply `--set` overrides."""
    path = Path(path) if path else DEFAULT_CONFIG
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    if not data:
        raise ConfigError(f"{path}: an empty recipe (no keys): it would train on the schema's defaults, which are not "
                          f"{DEFAULT_CONFIG.name}'s; write the keys to train with (copy {DEFAULT_CONFIG} to start)")
    return from_dict(data, overrides, source=str(path))


def origin(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (), **tags) -> dict:
    """Where a config came from, as a run stores it (layout.RunFolder.recipe): the recipe file, the --set
    overrides, the recipe's own resolved values (to list the keys a run changed), and tags such as a sweep's."""
    path = Path(path) if path else DEFAULT_CONFIG
    try:
        recipe = load(path).to_dict()
    except ConfigError:  # valid only with its overrides: the run lists those instead of a comparison
        recipe = None
    return {"file": str(path), "overrides": list(overrides), "recipe": recipe, **tags}


def load_run(run, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """The resolved config of a trained run folder (a layout.RunFolder; a bundle's adapter dataset has the same
    layout), with `--set` overrides."""
    if not run.is_trained():
        raise ConfigError(f"{run.root}: not a run folder from `arena train` (needs {run.config.name} and "
                          f"{run.adapter.name}/)")
    return load(run.config, overrides)


def dump(cfg: Config, path: str | Path) -> None:
    """The config as YAML, written atomically; never over an existing file."""
    from arena.writes import write_text

    write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
