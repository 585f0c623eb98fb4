"""The file names every stage shares: the run folder's, the CV folder's and the Kaggle bundle's files, and fresh
never-reused folders."""

from __future__ import annotations

import glob
import hashlib
import json
import re
from datetime import datetime
from pathlib import Path

from arena.errors import UserError
from arena.writes import sha256_of

# The source checkout arena runs from (an editable install): configs/, kernels/ and pyproject.toml are there.
SOURCE_ROOT = Path(__file__).resolve().parents[2]

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


def folders_of(parent: str | Path, name: str) -> list[Path]:
    """The folders new_folder(parent, name) made: `name-<stamp>[-N]` exactly (`exp` is not `exp-big-<stamp>`)."""
    own = re.compile(rf"{re.escape(name)}-\d{{8}}-\d{{6}}(-\d+)?")
    root = Path(parent)
    return [p for p in root.glob(f"{glob.escape(name)}-*") if p.is_dir() and own.fullmatch(p.name)] if root.is_dir() else []


DATASET_METADATA = "dataset-metadata.json"
KERNEL_METADATA = "kernel-metadata.json"
KERNEL_FILE = "kernel.py"
SUBMISSION_FILE = "submission.csv"


class _At:
    """A file or folder at a fixed place under a layout's root: `layout.name` is `root / parts...`."""

    def __init__(self, *parts: str):
        self.parts = parts

    def __get__(self, layout, owner=None):
        return self if layout is None else layout.root.joinpath(*self.parts)


class _Layout:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and other.root == self.root

    def __hash__(self) -> int:
        return hash((type(self), self.root))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r})"


class RunFolder(_Layout):
    """What `arena train` writes. A bundle's adapter dataset has the same config + adapter layout."""

    config = _At("config.yaml")  # the resolved config
    adapter = _At("adapter")  # LoRA adapter + head weights (peft), tokenizer, head.json; or a merged model (below)
    head = _At("adapter", "head.json")  # the head's shape and length-feature scaling
    # From `arena merge`: adapter/ holds the whole merged backbone (its config.json and safetensors, no
    # adapter_config.json), the tokenizer, head.json and the head's weights; the base model is not needed.
    merged_model_config = _At("adapter", "config.json")
    merged_head = _At("adapter", "head.safetensors")
    checkpoints = _At("checkpoints")  # Trainer checkpoints, for --resume
    metrics = _At("metrics.json")
    val_predictions = _At("val_predictions.csv")  # validation predictions beside the truth (the task's true_* columns)
    loss_curve = _At("loss_curve.png")
    predictions = _At("predictions")  # where `arena predict` writes when no --out is given
    recipe = _At("recipe.json")  # the recipe file, --set overrides and sweep tag the run came from
    data_hashes = _At("data_hashes.json")  # sha256 of each training file as the run first read it (for --resume)
    calibration = _At("calibration.json")  # from `arena calibrate`: applied by predict, blend and the kernel
    reliability = _At("reliability.png")  # predicted vs observed frequency per class, before/after calibration
    leaderboard = _At("leaderboard.json")  # leaderboard scores recorded by `arena runs --lb/--fetch-lb`
    logs = _At("logs")  # train.report_to: tensorboard event files
    lock = _At(".arena-lock")  # held (flock) by the process training the run; says which one (train/resume.py)

    def __init__(self, root: str | Path, config: str | Path | None = None):
        super().__init__(root)
        if config is not None:  # a bundled run read with its own config.yaml, kept outside the uploaded dataset
            self.config = Path(config)

    def new_bundle_path(self) -> Path:
        """Where `arena package` builds when no --out is given (created by the packager)."""
        return self.root / f"kaggle-bundle-{stamp()}"

    def is_trained(self) -> bool:
        return self.config.is_file() and self.adapter.is_dir()

    def is_finished(self) -> bool:
        """Training and its finish both done: metrics.json is the finish's last write (an adapter without it is a
        finish cut short, resumable)."""
        return self.adapter.is_dir() and self.metrics.is_file()

    def is_merged(self) -> bool:
        return self.merged_model_config.is_file()

    def fingerprint(self) -> str:
        """sha256 of a trained run's head.json and the weights its head is saved in (the adapter's file, or a merged
        model's head): the same for a run and the copy `arena package` puts in its bundle, different between runs.
        A merge's record of where its runs were is left out: the bundle's copy names them by their names only."""
        weights = self.merged_head if self.is_merged() else self.adapter / "adapter_model.safetensors"
        head = self.head.read_bytes()
        try:
            record = json.loads(head)
            record["merged"].pop("runs", None)
            head = json.dumps(record, sort_keys=True).encode("utf-8")
        except (ValueError, TypeError, KeyError, AttributeError):
            pass  # not a merge's head.json: its bytes as they are
        return hashlib.sha256(head + sha256_of(weights).encode("ascii")).hexdigest()


class CVFolder(_Layout):
    """What `arena cv` writes: one run folder per fold inside, plus the out-of-fold summary."""

    oof_predictions = _At("oof_predictions.csv")
    summary = _At("cv.json")
    config = _At("cv_config.yaml")  # the resolved config every fold starts from (not config.yaml: a run has that)
    plan = _At("cv_plan.json")  # the folds and the selection: what `arena cv --resume` finishes
    recipe = _At("recipe.json")
    calibration = _At("calibration.json")  # fit on the OOF predictions; the fold runs inside use it
    reliability = _At("reliability.png")
    leaderboard = _At("leaderboard.json")

    def is_cv(self) -> bool:
        return self.summary.is_file()


class Sweep(_Layout):
    """What `arena sweep` keeps beside the runs it trains (normal run folders tagged in their recipe.json)."""

    plan = _At("sweep.json")  # the recipes and grid points, in order


class Bundle(_Layout):
    """What `arena package` writes: two datasets and a kernel, each ready for the kaggle CLI."""

    PARTS = ("adapter-dataset", "wheels-dataset", "kernel")
    adapter_dataset = _At("adapter-dataset")  # config.yaml + adapter/ (+ calibration.json) of the run: a RunFolder layout
    wheels = _At("wheels-dataset")  # the arena wheel, the pinned wheels Kaggle's image lacks
    wheel_requirements = _At("wheels-dataset", "requirements.txt")  # what the kernel installs from them
    kernel = _At("kernel")
    kernel_script = _At("kernel", KERNEL_FILE)
    kernel_metadata = _At("kernel", KERNEL_METADATA)
    preflight = _At("preflight.json")  # the projected Kaggle wall time (an ensemble's: every member's, and the sum)
    ensemble = _At("adapter-dataset", "ensemble.json")  # only in an ensemble bundle: see EnsembleDataset
    # Never uploaded: each run's config.yaml as it was (its local paths; the dataset's names none) at the place it
    # has in adapter-dataset/, and an ensemble's ensemble.json: what the checks and the rehearsal here read.
    local = _At("local")

    @property
    def run(self) -> RunFolder:
        return RunFolder(self.adapter_dataset)

    @property
    def dataset(self) -> EnsembleDataset:
        return EnsembleDataset(self.adapter_dataset)

    def member_runs(self) -> list[RunFolder]:
        """The runs the kernel predicts with, in order: every member of an ensemble, else the one run; each read
        with its own config.yaml where local/ keeps it (its base model's folder here, for the rehearsal)."""
        runs = self.dataset.member_runs() if self.ensemble.is_file() else [self.run]
        kept = [self.local / run.root.relative_to(self.adapter_dataset) / run.config.name for run in runs]
        return [RunFolder(run.root, local if local.is_file() else None) for run, local in zip(runs, kept)]

    def missing_parts(self) -> list[str]:
        return [part for part in self.PARTS if not (self.root / part).is_dir()]


class EnsembleDataset(_Layout):
    """The adapter dataset of an ensemble bundle (`arena package` with several --run), as the kernel sees it:
    one RunFolder layout per member instead of the run's own, and the blend weights."""

    ensemble = _At("ensemble.json")  # members in order, their weights and how the weights were fit
    members = _At("members")

    def member(self, index: int) -> RunFolder:
        return RunFolder(self.members / f"member-{index}")

    def member_runs(self) -> list[RunFolder]:
        runs = []
        while self.member(len(runs)).root.is_dir():
            runs.append(self.member(len(runs)))
        return runs

    @staticmethod
    def member_predictions(index: int) -> str:
        """The file the kernel's `arena predict` of member `index` writes in its working folder."""
        return f"member-{index}-predictions.csv"
