"""Every setting on one page: the run configuration's sections as dataclasses, each field with its type, choices,
range and default (checked by constraints.py)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Annotated, Literal

from arena.config.constraints import NonEmpty, Pattern, Range
from arena.task import DEFAULT_COMPETITION, DataFormat, Labels, Metric, Submission

Count = Annotated[int, Range(ge=1)]  # how many of something: at least one
Probability = Annotated[float, Range(ge=0, le=1)]
LearningRate = Annotated[float, Range(gt=0, le=1)]
# Run names become folder names under train.runs_dir: no separators, no leading dot.
RunName = Annotated[str, Pattern(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", "a folder name: letters, digits, '.', '_', '-' "
                                 "(no '/', not starting with '.'), at most 100 characters")]
SLUG_PATTERN = r"[a-z0-9][a-z0-9-]{3,48}[a-z0-9]"
Slug = Annotated[str, Pattern(SLUG_PATTERN,
                              "a Kaggle slug: 5-50 lowercase letters, digits and hyphens")]
# Prompt formats (arena.prompts has one frame per family).
Family = Literal["gemma", "llama3", "mistral", "phi2", "plain"]
Quantization = Literal["nf4", "int8", "none"]
# transformers' SchedulerType values (a test keeps the two lists equal).
Scheduler = Literal["linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
                    "inverse_sqrt", "reduce_lr_on_plateau", "cosine_with_min_lr", "cosine_warmup_with_min_lr",
                    "warmup_stable_decay", "greedy"]
# Any Kaggle competition by its slug (kaggle.competition); arena.task.COMPETITIONS names the ones whose task arena
# knows (the LMSYS pair, three-way log loss; the WSDM Cup, two-way accuracy). Another names its task in `task.*`.
Competition = Slug
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
    # Which end of an over-long part is kept: "left" truncation drops the start and keeps the last turns; "middle"
    # keeps the head and the tail of each part and cuts between them, marked "(... N tokens cut ...)" (the template
    # says what the marker means; it counts in the part's budget; each text is then tokenised in full).
    truncation_side: Literal["left", "right", "middle"] = "left"
    # Share of the token budget each part may claim when the total is over budget; unused share flows
    # to the other parts. min_tokens is the floor every part keeps.
    prompt_share: Probability = 0.2
    response_share: Probability = 0.4
    min_tokens: Count = 16
    # State each response's length (words) in the text, so a truncated window still sees verbosity.
    show_lengths: bool = True
    cut_marker: str = " [...] "  # marks a left or right cut (middle has its own, with the count)


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
    # Evaluate the start (before the first optimizer step) and keep it as the run's model when no checkpoint beats it
    # on the validation rows: a run never ends worse than it began there.
    eval_on_start: bool = True
    # Also train every row with A and B swapped: random (rows and twins shuffled apart), paired (every batch holds
    # each row beside its swapped twin: both orders in the same optimizer step) or none. true/false in older
    # configs read as random/none.
    swap_augment: Literal["none", "random", "paired"] = "none"
    # Distillation (data.teacher): loss = (1 - w) * cross-entropy on the labels + w * T^2 * KL(teacher_T || model_T),
    # the teachers' KL terms weighted by teacher_weights (default equal); rows no teacher covers use the labels.
    distill_weight: Probability = 0.5
    distill_temperature: Annotated[float, Range(gt=0)] = 1.0
    teacher_weights: list[Annotated[float, Range(gt=0)]] | None = None
    # Label smoothing: hard (one-hot) labels are trained as (1 - s) * one-hot + s / classes (0.1: 0.95 / 0.05 in the
    # two-way task). Rows whose labels are soft already (votes, a --soft-labels file) and the teachers' probabilities
    # are used as they are; evaluation scores the true labels.
    label_smoothing: Annotated[float, Range(ge=0, lt=1, why="a share of the label given to the other classes")] = 0.0
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
    # Which rows the swapped order covers first when the deadline leaves time for only some: uncertain = those whose
    # plain-order prediction is least certain (its top probability lowest), as the WSDM Cup winners did; shortest =
    # the shortest rows (the most rows per second). The default stays shortest until uncertain measures better here
    # (docs/kaggle.md, "When time runs short": `python -m benchmarks.tta_order`).
    tta_order: Literal["uncertain", "shortest"] = "shortest"
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
class TaskConfig:
    # What is predicted and scored (arena.task): each key "auto" takes kaggle.competition's; a competition arena does
    # not know needs all four. labels: three-way (A / B / tie) or two-way (A / B); metric: log_loss or accuracy;
    # submission: probabilities (id + a column per class) or winner (id,winner as model_a / model_b); data_format:
    # the competition's files, csv (JSON-list cells) or parquet (plain strings).
    labels: Literal["auto"] | Labels = "auto"
    metric: Literal["auto"] | Metric = "auto"
    submission: Literal["auto"] | Submission = "auto"
    data_format: Literal["auto"] | DataFormat = "auto"


@dataclass
class KaggleConfig:
    # The Kaggle competition: its slug picks the task (see TaskConfig) and where the kernel submits.
    competition: Competition = DEFAULT_COMPETITION
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
    task: TaskConfig = field(default_factory=TaskConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
