"""The names every stage shares: the run folder's and the Kaggle bundle's files, the label columns, the
A<->B swap of the classes, the probability-sum tolerance, and fresh never-reused folders."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from arena.errors import UserError

# The source checkout arena runs from (an editable install): configs/, kernels/ and pyproject.toml are there.
SOURCE_ROOT = Path(__file__).resolve().parents[2]

# Lists, not tuples: pandas reads a tuple as one (multi-index) key.
LABEL_COLUMNS = ["winner_model_a", "winner_model_b", "winner_tie"]
# Validation predictions keep the truth beside each prediction under these names.
TRUE_COLUMNS = [f"true_{c}" for c in LABEL_COLUMNS]
SUBMISSION_COLUMNS = ["id", *LABEL_COLUMNS]

# Labels and predicted probabilities must sum to 1 within this. Files written with three decimals are valid
# (0.333 + 0.333 + 0.333 = 0.999); a row further off is not a rounded probability distribution.
SUM_TOLERANCE = 1e-3

# The class order seen from the other side: A's win is B's win and the reverse; a tie stays a tie. Swapping
# twice is the identity, so the same permutation maps a swapped row's labels forward and its predictions back.
SWAP = (1, 0, 2)


def swap_classes(values: np.ndarray) -> np.ndarray:
    """Class probabilities or logits (..., 3), or class indices (n,), with A and B exchanged."""
    values = np.asarray(values)
    if values.ndim == 1 and np.issubdtype(values.dtype, np.integer):
        return np.asarray(SWAP, dtype=values.dtype)[values]
    return values[..., list(SWAP)]


def stamp() -> str:
    return datetime.now().strftime("%Y%m%d-%H%M%S")


def new_folder(parent: str | Path, name: str) -> Path:
    """A new folder `parent/name-<stamp>` (suffixed when that exists): an earlier one is never reused."""
    root = Path(parent)
    root.mkdir(parents=True, exist_ok=True)
    base = f"{name}-{stamp()}"
    for attempt in range(1000):
        candidate = root / (base + (f"-{attempt}" if attempt else ""))
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise UserError(f"{root}: could not create a new folder for {name}")


@dataclass(frozen=True)
class RunFolder:
    """What `arena train` writes. An adapter dataset in a bundle has the same config + adapter layout."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def adapter(self) -> Path:
        """LoRA adapter + head weights (peft), tokenizer, and head.json."""
        return self.root / "adapter"

    @property
    def head(self) -> Path:
        """The head's shape and length-feature scaling, beside the weights."""
        return self.adapter / "head.json"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def val_predictions(self) -> Path:
        return self.root / "val_predictions.csv"

    @property
    def loss_curve(self) -> Path:
        return self.root / "loss_curve.png"

    @property
    def predictions(self) -> Path:
        """Where `arena predict` writes when no --out is given."""
        return self.root / "predictions"

    def new_bundle_path(self) -> Path:
        """Where `arena package` builds when no --out is given (created by the packager)."""
        return self.root / f"kaggle-bundle-{stamp()}"

    def is_trained(self) -> bool:
        return self.config.is_file() and self.adapter.is_dir()


@dataclass(frozen=True)
class CVFolder:
    """What `arena cv` writes: one run folder per fold inside, plus the out-of-fold summary."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    @property
    def oof_predictions(self) -> Path:
        return self.root / "oof_predictions.csv"

    @property
    def summary(self) -> Path:
        return self.root / "cv.json"


@dataclass(frozen=True)
class Bundle:
    """What `arena package` writes: two datasets and a kernel, each ready for the kaggle CLI."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    PARTS = ("adapter-dataset", "wheels-dataset", "kernel")

    @property
    def adapter_dataset(self) -> Path:
        """config.yaml + adapter/ of the run: a RunFolder layout that `arena predict --run` reads."""
        return self.root / "adapter-dataset"

    @property
    def run(self) -> RunFolder:
        return RunFolder(self.adapter_dataset)

    @property
    def wheels(self) -> Path:
        """The arena wheel, the pinned wheels Kaggle's image lacks, and the requirements.txt the kernel installs."""
        return self.root / "wheels-dataset"

    @property
    def wheel_requirements(self) -> Path:
        return self.wheels / "requirements.txt"

    @property
    def kernel(self) -> Path:
        return self.root / "kernel"

    @property
    def kernel_script(self) -> Path:
        return self.kernel / KERNEL_FILE

    @property
    def kernel_metadata(self) -> Path:
        return self.kernel / KERNEL_METADATA

    @property
    def preflight(self) -> Path:
        """The projected Kaggle wall time."""
        return self.root / "preflight.json"

    def missing_parts(self) -> list[str]:
        return [part for part in self.PARTS if not (self.root / part).is_dir()]


DATASET_METADATA = "dataset-metadata.json"
KERNEL_METADATA = "kernel-metadata.json"
KERNEL_FILE = "kernel.py"
SUBMISSION_FILE = "submission.csv"
