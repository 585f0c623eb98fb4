"""What a benchmark run measures: the data sources, how many rows each gives, why, and the run's sizes."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# The full-size GPU recipe that this command describes but does not measure without a GPU; its windows are
# among the padding lengths counted (tokens only, not timed).
GPU_RECIPE = "gemma2-9b-qlora-t4x2.yaml"


@dataclass(frozen=True)
class SourcePlan:
    """How one shared-data file is used: rows held out (whole prompts), rows sampled for training from the
    rest (None = all of the rest), whether its held-out rows count in the main (arena-like) evaluation, and
    why (rendered in the report beside the file's measured composition)."""

    file: str
    held_out: int
    train: int | None
    main_eval: bool = True
    reason: str = ""


@dataclass(frozen=True)
class Plan:
    sources: list[SourcePlan]
    folds: int  # arena.train holds out one fold of the training file for checkpoint selection
    max_rows: int  # data.max_rows: cap on the model's training rows
    speed_rows: int
    repeats: int
    # A second timed sorted-vs-fixed comparison at a longer window (None: skip), where padding every row to
    # max_length costs more than at the default's.
    long_length: int | None = None
    overrides: list[str] = field(default_factory=list)  # config overrides beyond data/run placement

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


ARENA_LIKE = "Arena-like: a person picks the better of two chat responses to one prompt, or calls a tie"
FULL = Plan(
    sources=[
        SourcePlan("autoj_pairwise_dev.csv", held_out=280, train=None,
                   reason=f"{ARENA_LIKE}, over many task scenarios: most of the main held-out set"),
        SourcePlan("pandalm_human.csv", held_out=90, train=150,
                   reason=f"{ARENA_LIKE}; several response pairs per prompt, so a few held-out prompts make many "
                          "rows, and a sample of the rest trains"),
        SourcePlan("hh_rlhf_harmless.csv", held_out=64, train=56, main_eval=False,
                   reason="Judges harmlessness, not overall preference; mixed in whole, its tie rate would pull the "
                          "model's tie predictions away from arena-like data, so only a small sample trains and its "
                          "held-out prompts are scored on their own as a side set"),
    ],
    folds=10,
    max_rows=360,
    speed_rows=32,
    repeats=3,
    long_length=512,
)

QUICK = Plan(
    sources=[
        dataclasses.replace(FULL.sources[0], held_out=6, train=16),
        dataclasses.replace(FULL.sources[1], held_out=1, train=6),  # one prompt
        dataclasses.replace(FULL.sources[2], held_out=2, train=2),
    ],
    folds=4,
    max_rows=24,
    speed_rows=4,
    repeats=1,
    long_length=256,
    # max_length 192: the middle-truncation variant's scaffold (its note) fits with the tiny model's tokenizer
    overrides=["train.max_steps=2", "train.eval_steps=2", "train.logging_steps=1", "train.per_device_batch_size=2",
               "train.grad_accum=1", "prompt.max_length=192", "infer.max_length=192"],
)

GENERATED = "generated_sample.csv"


def generated_plan(plan: Plan, rows: int) -> Plan:
    """The plan when ../shared/data is absent: one generated (synthetic) source, a third of it held out."""
    source = SourcePlan(GENERATED, held_out=rows // 3, train=None,
                        reason="Generated (synthetic labels): checks that every stage runs, not a quality benchmark")
    return dataclasses.replace(plan, sources=[source])


def shared_data_dir() -> Path | None:
    """../shared/data (next to the repository or the working directory), or $ARENA_SHARED_DATA."""
    candidates = [os.environ.get("ARENA_SHARED_DATA"), Path.cwd().parent / "shared" / "data",
                  REPO.parent / "shared" / "data"]
    for c in candidates:
        if c and (Path(c) / FULL.sources[0].file).is_file():
            return Path(c)
    return None


def padding_lengths(default_length: int, long_length: int | None, gpu_cfg) -> list[int]:
    """Windows at which the held-out rows' padding is counted: the benchmarked one, the timed longer one and the
    GPU recipe's training and inference windows."""
    return sorted({default_length, *([long_length] if long_length else []), gpu_cfg.prompt.max_length,
                   gpu_cfg.infer.max_length})


def display_path(p: Path) -> str:
    """`p` relative to the working directory when it can be (what a user typed), else absolute."""
    try:
        return os.path.relpath(p, Path.cwd())
    except ValueError:
        return str(p)
