"""The task as data: the classes a model predicts, the metric that scores them, the submission Kaggle takes and the
form of the competition's files. A config picks one (`kaggle.competition`, or `task.*` outright: `of_config`);
every module asks the task (or the columns of a file it reads: `of_columns`), none keeps its own copy of the classes.

Class indices are the same in every task: 0 = A wins, 1 = B wins, 2 = tie (three-way tasks only). The A<->B swap
exchanges the first two and keeps the tie, so it needs no task (`swap_classes`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

A, B, TIE = "winner_model_a", "winner_model_b", "winner_tie"
# The `winner` column's value for each class (WSDM Cup's submissions and data; the public arena datasets), and the
# class of each value the public arena datasets use (a tie both sides lost is a tie).
WINNER_VALUES = {A: "model_a", B: "model_b", TIE: "tie"}
WINNER_CLASSES = {"model_a": A, "model_b": B, "tie": TIE, "tie (bothbad)": TIE, "both_bad": TIE}

# Labels and predicted probabilities must sum to 1 within this. Files written with three decimals are valid
# (0.333 + 0.333 + 0.333 = 0.999); a row further off is not a rounded probability distribution.
SUM_TOLERANCE = 1e-3

Labels = Literal["three-way", "two-way"]
Metric = Literal["log_loss", "accuracy"]
Submission = Literal["probabilities", "winner"]
DataFormat = Literal["csv", "parquet"]


@dataclass(frozen=True)
class Task:
    """labels: three-way (A / B / tie) or two-way (A / B); metric: what Kaggle scores; submission: `id` and one
    probability column per class, or `id,winner` (model_a / model_b); data_format: the competition's files
    (train.csv of JSON-list cells, or train.parquet of plain strings)."""

    labels: Labels = "three-way"
    metric: Metric = "log_loss"
    submission: Submission = "probabilities"
    data_format: DataFormat = "csv"

    @property
    def label_columns(self) -> list[str]:
        # Lists, not tuples: pandas reads a tuple as one (multi-index) key.
        return [A, B, TIE] if self.labels == "three-way" else [A, B]

    @property
    def classes(self) -> int:
        return len(self.label_columns)

    @property
    def true_columns(self) -> list[str]:
        """Validation predictions keep the truth beside each prediction under these names."""
        return [f"true_{c}" for c in self.label_columns]

    @property
    def prediction_columns(self) -> list[str]:
        """A file of probabilities (`arena predict`, OOF, teachers): id and one column per class."""
        return ["id", *self.label_columns]

    @property
    def submission_columns(self) -> list[str]:
        return self.prediction_columns if self.submission == "probabilities" else ["id", "winner"]

    @property
    def winner_values(self) -> list[str]:
        return [WINNER_VALUES[c] for c in self.label_columns]

    @property
    def test_file(self) -> str:
        return f"test.{self.data_format}"

    @property
    def train_file(self) -> str:
        return f"train.{self.data_format}"

    @property
    def describe(self) -> str:
        return f"{self.labels} ({' / '.join(self.winner_values)}), {self.metric}, submission {self.submission}"

    def submission_frame(self, ids, probs: np.ndarray) -> pd.DataFrame:
        """What Kaggle takes: the probabilities as they are, or the most probable of model_a / model_b."""
        frame = pd.DataFrame({"id": list(ids)})
        if self.submission == "probabilities":
            frame[self.label_columns] = probs
        else:
            frame["winner"] = np.asarray(self.winner_values)[np.asarray(probs)[:, :2].argmax(axis=1)]
        return frame


THREE_WAY = Task()
TWO_WAY = Task(labels="two-way", metric="accuracy", submission="winner", data_format="parquet")

# The Kaggle competitions arena knows, and their tasks. Any other slug names its task in `task.*`.
# - llm-classification-finetuning: the open Getting Started competition on the LMSYS data and format: the default.
# - lmsys-chatbot-arena: the original (closed 2024-08); a late submission is scored. Log loss over three classes.
# - wsdm-cup-multilingual-chatbot-arena: WSDM Cup 2025: two-way, multilingual, parquet, scored by accuracy.
COMPETITIONS: dict[str, Task] = {
    "llm-classification-finetuning": THREE_WAY,
    "lmsys-chatbot-arena": THREE_WAY,
    "wsdm-cup-multilingual-chatbot-arena": TWO_WAY,
}
DEFAULT_COMPETITION = "llm-classification-finetuning"


def of_config(cfg) -> Task:
    """The config's task: `task.*` where given ("auto": the competition's), the rest from `kaggle.competition`.
    (config.relations refuses an unknown competition whose task is not given in full.)"""
    known = COMPETITIONS.get(cfg.kaggle.competition, THREE_WAY)
    given = {k: v for k, v in vars(cfg.task).items() if v != "auto"}
    return Task(**{**vars(known), **given})


def of_columns(columns) -> Task | None:
    """The label set of a file of probabilities or labels, from its header: three-way where it has a tie column,
    two-way where it has A and B alone; None where it has neither."""
    columns = set(columns)
    if {A, B} <= columns:
        return THREE_WAY if TIE in columns else TWO_WAY
    return None


def label_columns(classes: int) -> list[str]:
    """The class columns of an array of probabilities with this many columns (two-way A, B; three-way A, B, tie)."""
    if classes not in (2, 3):
        raise ValueError(f"{classes} classes: arena's tasks have 2 (A / B) or 3 (A / B / tie)")
    return (THREE_WAY if classes == 3 else TWO_WAY).label_columns


def swap_classes(values: np.ndarray) -> np.ndarray:
    """Class probabilities or logits (..., classes), or class indices (n,), with A and B exchanged (a tie stays a
    tie). Swapping twice is the identity, so the same permutation maps a swapped row's labels forward and its
    predictions back."""
    values = np.asarray(values)
    if values.ndim == 1 and np.issubdtype(values.dtype, np.integer):
        return np.where(values < 2, 1 - values, values).astype(values.dtype)
    order = [1, 0, *range(2, values.shape[-1])]
    return values[..., order]
