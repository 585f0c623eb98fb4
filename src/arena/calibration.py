"""Calibration of predicted class probabilities: a temperature and per-class biases, `softmax(log p / T + b)`,
fit on a run's validation predictions or a CV folder's out-of-fold predictions (which are raw model output:
nothing writes calibrated probabilities there). The reported gain is cross-fitted: each fold of those rows is
calibrated by parameters fit on the other folds, so no row is scored by a fit that saw it. The parameters
stored in calibration.json are then fit on all rows; predict, blend and the kernel apply them once."""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from arena import data, metrics
from arena.errors import UserError
from arena.layout import CVFolder, RunFolder
from arena.records import read_record
from arena.task import label_columns
from arena.writes import atomic_file, output_problems, write_text

FORM = "softmax(log p / T + b)"
FOLDS = 5
MIN_ROWS_PER_FOLD = 2
BINS = 10
_FLOOR = 1e-12  # log of a zero probability


@dataclass(frozen=True)
class Calibration:
    """Temperature T and per-class biases b (in the task's class order; the last is 0: softmax ignores a shift)."""

    temperature: float
    bias: tuple[float, ...]

    def apply(self, probs: np.ndarray) -> np.ndarray:
        z = np.log(np.clip(np.asarray(probs, dtype=np.float64), _FLOOR, 1.0)) / self.temperature + np.asarray(self.bias)
        return metrics.softmax(z)

    @classmethod
    def from_params(cls, params: np.ndarray) -> Calibration:
        """log T, then the biases of every class but the last."""
        return cls(temperature=float(math.exp(params[0])), bias=(*(float(b) for b in params[1:]), 0.0))


def fit(probs: np.ndarray, truth: np.ndarray) -> Calibration:
    """The temperature and biases that minimise the log loss of `probs` against `truth` (one-hot or soft)."""
    from scipy.optimize import minimize

    def loss(params):
        return metrics.log_loss(truth, Calibration.from_params(params).apply(probs))

    classes = probs.shape[1]
    best = minimize(loss, np.zeros(classes), method="L-BFGS-B", bounds=[(-3.0, 3.0)] + [(-5.0, 5.0)] * (classes - 1))
    return Calibration.from_params(best.x)


def cross_fit(probs: np.ndarray, truth: np.ndarray, folds: int = FOLDS, seed: int = 0) -> np.ndarray:
    """Each row calibrated by a fit on the other folds (stratified by the true class), so the log loss of the
    result is an honest estimate of what the calibration gains on unseen rows."""
    from sklearn.model_selection import StratifiedKFold

    labels = np.asarray(truth).argmax(axis=1)
    out = np.empty_like(probs, dtype=np.float64)
    for fit_rows, held in StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(probs, labels):
        out[held] = fit(probs[fit_rows], truth[fit_rows]).apply(probs[held])
    return out


# ---- where calibrations live ------------------------------------------------------------------------

def read(path: Path) -> Calibration:
    """A calibration.json; UserError listing every problem of it."""
    what = "not a calibration from `arena calibrate`"
    stored = read_record(path, "a calibration from `arena calibrate`")
    problems = []
    temperature, bias = stored.get("temperature"), stored.get("bias")
    if not _is_number(temperature) or not (math.isfinite(temperature) and temperature > 0):
        problems.append(f"{path}: temperature {temperature!r} is not a positive finite number ({what}?)")
    if not isinstance(bias, list) or len(bias) not in (2, 3):
        problems.append(f"{path}: bias {bias!r} is not a list of a number per class, 2 or 3 ({what}?)")
    else:
        problems += [f"{path}: bias[{i}] {b!r} is not a finite number" for i, b in enumerate(bias)
                     if not (_is_number(b) and math.isfinite(b))]
    if problems:
        raise UserError(problems=problems)
    return Calibration(temperature=float(temperature), bias=tuple(float(b) for b in bias))


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def file_for_run(run: RunFolder) -> Path | None:
    """The calibration a run's predictions get: its own, else that of the CV folder holding it (fit on the
    out-of-fold predictions of all its folds), else None."""
    if run.calibration.is_file():
        return run.calibration
    cv = CVFolder(run.root.parent)
    return cv.calibration if cv.calibration.is_file() else None


def for_run(run: RunFolder) -> tuple[Calibration, Path] | None:
    path = file_for_run(run)
    return None if path is None else (read(path), path)


def for_predictions_file(path: str | Path) -> tuple[Calibration, Path] | None:
    """The calibration of the folder a run's val_predictions.csv or a CV folder's OOF file lies in, if any."""
    path = Path(path)
    run, cv = RunFolder(path.parent), CVFolder(path.parent)
    if path.name == run.val_predictions.name:
        return for_run(run)
    if path.name == cv.oof_predictions.name and cv.calibration.is_file():
        return read(cv.calibration), cv.calibration
    return None


def describe(cal: Calibration) -> str:
    return f"T={cal.temperature:.3f}, b=({', '.join(f'{b:+.3f}' for b in cal.bias)})"


# ---- `arena calibrate` ------------------------------------------------------------------------------

def _source(run_dir, oof) -> tuple[RunFolder | CVFolder, Path]:
    """(the folder the calibration goes in, the predictions it is fit on)."""
    if (run_dir is None) == (oof is None):
        raise UserError("calibrate: give either --run RUN or --oof FILE (a CV folder's out-of-fold predictions)")
    if run_dir is not None:
        run = RunFolder(run_dir)
        if not run.val_predictions.is_file():
            raise UserError(f"--run {run_dir}: no {run.val_predictions.name} (not a finished run folder from "
                            "`arena train`)")
        return run, run.val_predictions
    path = Path(oof)
    cv = CVFolder(path if path.is_dir() else path.parent)
    if not cv.oof_predictions.is_file() or (path.is_file() and path.name != cv.oof_predictions.name):
        raise UserError(f"--oof {oof}: not a CV folder's {cv.oof_predictions.name} from `arena cv`")
    return cv, cv.oof_predictions


def read_predictions(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(predicted probabilities, true labels) of a predictions file with the true_* columns; every problem
    reported."""
    frame, task = data.read_probabilities(path, "predictions", truth=True)
    problems, values = data.check_frame(frame[task.prediction_columns], str(path))
    truth_frame = frame[["id", *task.true_columns]].set_axis(task.prediction_columns, axis=1)
    truth_problems, truth = data.check_frame(truth_frame, f"{path} (its {', '.join(task.true_columns)} labels)")
    problems += [p for p in truth_problems if "duplicated ids" not in p and "empty id" not in p]  # named once
    if problems:
        raise UserError(problems=problems)
    return values.to_numpy(), truth.to_numpy(dtype=np.float64)


def calibrate(run_dir=None, oof=None, folds: int = FOLDS, seed: int = 0) -> dict:
    """`arena calibrate`: fit on the run's validation (or the CV folder's OOF) predictions, report the log loss
    before and cross-fitted after, write calibration.json and reliability.png in that folder (never over
    earlier ones)."""
    problems = [f"--folds {folds}: cross-fitting needs at least 2 folds"] if folds < 2 else []
    target = source = None
    try:
        target, source = _source(run_dir, oof)
    except UserError as exc:
        problems += exc.problems
    if target is not None:
        problems += output_problems(target.calibration, "calibration") + output_problems(target.reliability, "plot")
        try:
            probs, truth = read_predictions(source)
        except UserError as exc:
            problems += exc.problems
    if problems:
        raise UserError(problems=problems)
    if len(truth) < MIN_ROWS_PER_FOLD * folds:
        raise UserError(f"{source}: {len(truth)} rows: too few to cross-fit {folds} folds (at least "
                        f"{MIN_ROWS_PER_FOLD * folds})")
    counts = np.bincount(truth.argmax(axis=1), minlength=truth.shape[1])
    if counts.min() < folds:
        print(f"note: {source} has {counts.min()} row(s) of its rarest class, fewer than the {folds} folds: the "
              "cross-fitted figure is a rough one")
    with warnings.catch_warnings():  # the note above says it once
        warnings.filterwarnings("ignore", "The least populated class", UserWarning)
        crossed = cross_fit(probs, truth, folds, seed)
    cal = fit(probs, truth)
    before, after = metrics.calibration(truth, probs, BINS), metrics.calibration(truth, crossed, BINS)
    result = {
        "form": FORM, **asdict(cal), "classes": label_columns(truth.shape[1]), "fitted_on": str(source), "rows": len(truth),
        "tta": True,  # validation and OOF predictions are swap-averaged (train.evaluate)
        "cross_fit": {"folds": folds, "seed": seed, "stratified_by": "true class"},
        "log_loss_before": metrics.log_loss(truth, probs),
        "log_loss_after_cross_fitted": metrics.log_loss(truth, crossed),
        "log_loss_after_in_sample": metrics.log_loss(truth, cal.apply(probs)),
        "accuracy_before": metrics.accuracy(truth, probs), "accuracy_after_cross_fitted": metrics.accuracy(truth, crossed),
        "ece_before": before["mean_ece"], "ece_after_cross_fitted": after["mean_ece"],
    }
    plot_reliability(before, after, target.reliability)
    write_text(target.calibration, json.dumps(result, indent=2) + "\n")
    print(format_result(result))
    print(f"wrote {target.calibration} and {target.reliability.name}; predict, blend and the kernel apply it "
          "(--no-calibration turns it off)")
    if result["log_loss_after_cross_fitted"] >= result["log_loss_before"]:
        print(f"warning: cross-fitted, the calibration did not lower the log loss of these {len(truth)} rows: it may "
              "not help on new rows either; weigh it on held-out data or predict with --no-calibration")
    return result


def format_result(result: dict) -> str:
    change = result["log_loss_after_cross_fitted"] - result["log_loss_before"]
    cross = result["cross_fit"]
    return (f"calibration on {result['rows']} rows of {result['fitted_on']}: log loss {result['log_loss_before']:.4f} "
            f"-> {result['log_loss_after_cross_fitted']:.4f} cross-fitted ({cross['folds']} folds; {change:+.4f}), "
            f"accuracy {result['accuracy_before']:.3f} -> {result['accuracy_after_cross_fitted']:.3f}, mean ECE "
            f"{result['ece_before']:.3f} -> {result['ece_after_cross_fitted']:.3f}; fitted on all rows: "
            f"{describe(Calibration(result['temperature'], tuple(result['bias'])))}")


def plot_reliability(before: dict, after: dict, path: Path) -> None:
    """Per class: mean predicted probability vs observed frequency in each bin, before and after (cross-fitted)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(before["ece"])
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 4), sharey=True)
    for ax, name in zip(axes, names):
        ax.plot([0, 1], [0, 1], linestyle=":", color="grey", label="perfect")
        for table, label in ((before, "before"), (after, "after (cross-fitted)")):
            pts = [(r["mean_pred"], r["frac_true"], r["count"]) for r in table["table"] if r["class"] == name]
            if pts:
                x, y, n = zip(*pts)
                ax.plot(x, y, marker="o", label=f"{label}, ECE {table['ece'][name]:.3f}")
        ax.set_title(name)
        ax.set_xlabel("predicted probability")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("observed frequency")
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
