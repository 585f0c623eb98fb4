"""`arena blend`: several runs' test predictions averaged with non-negative weights fit on their out-of-fold log
loss (each OOF file calibrated as its run's predictions were)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from arena import calibration, data, metrics
from arena.errors import UserError
from arena.inference.submission import prediction_frame, write_submission
from arena.inference.tta import softmax
from arena.task import of_columns
from arena.writes import output_problems


def fit_blend_weights(oof_probs: list[np.ndarray], truth: np.ndarray) -> np.ndarray:
    """Non-negative weights summing to 1 that minimise the OOF log loss of the weighted average."""
    from scipy.optimize import minimize

    def loss(theta):
        w = softmax(theta[None, :])[0]
        return metrics.log_loss(truth, sum(wi * p for wi, p in zip(w, oof_probs)))

    best = minimize(loss, np.zeros(len(oof_probs)), method="Nelder-Mead", options={"xatol": 1e-4, "fatol": 1e-6})
    return softmax(best.x[None, :])[0]


def blend_files(oof_paths: list[str], pred_paths: list[str], out_path: str, calibrate: bool = True) -> Path:
    """`arena blend`: weights fit on the runs' OOF log loss, applied to their test predictions. Every file is
    checked (readable, columns, values, the same ids across runs) before anything is fit or written. OOF files
    hold raw predictions: each is calibrated with the calibration of its run or CV folder, if any (unless
    `calibrate=False`), as `arena predict` calibrated that run's test predictions; those are taken as written."""

    problems = output_problems(out_path, "blended submission")
    if len(oof_paths) != len(pred_paths):
        problems.append(f"blend: give one --oof file per --preds file, in the same order "
                        f"(got {len(oof_paths)} and {len(pred_paths)})")
    oofs = _read_runs(oof_paths, "OOF", True, problems)
    preds = _read_runs(pred_paths, "prediction", False, problems)
    if len({of_columns(f.columns) for f in oofs + preds}) > 1:
        problems.append("blend: the files hold different label sets (two and three classes): blend runs of one task")
    cals = []
    for path in oof_paths if calibrate else ():
        try:
            cals.append(calibration.for_predictions_file(path))
        except UserError as exc:
            problems += exc.problems
    if problems:
        raise UserError(problems=problems)
    labels = of_columns(oofs[0].columns)
    classes, truth_columns = labels.label_columns, labels.true_columns
    for path, frame, cal in zip(oof_paths, oofs, cals):
        if cal is not None:
            frame[classes] = cal[0].apply(frame[classes].to_numpy())
            print(f"OOF {path}: calibrated with {calibration.describe(cal[0])} from {cal[1]}")
    ids, test_ids = oofs[0].index, preds[0].index
    truth = oofs[0].loc[ids, truth_columns].to_numpy()
    weights = fit_blend_weights([f.loc[ids, classes].to_numpy() for f in oofs], truth)
    blended = sum(w * f.loc[test_ids, classes].to_numpy() for w, f in zip(weights, preds))
    for path, w, frame in zip(oof_paths, weights, oofs):
        print(f"weight {w:.3f}  OOF log loss {metrics.log_loss(truth, frame.loc[ids, classes].to_numpy()):.4f}  {path}")
    oof_blend = sum(w * f.loc[ids, classes].to_numpy() for w, f in zip(weights, oofs))
    print(f"blended OOF log loss {metrics.log_loss(truth, oof_blend):.4f}")
    return write_submission(prediction_frame(test_ids, blended), test_ids, out_path)


def _read_runs(paths: list[str], role: str, truth: bool, problems: list[str]) -> list[pd.DataFrame]:
    """One frame per run (numeric columns indexed by id: the classes, with `truth` their true_* columns); every
    problem, ids differing from the first file's included, is added to `problems`."""
    frames = []
    for path in paths:
        try:
            raw, task = data.read_probabilities(path, role, truth)
        except UserError as exc:
            problems += exc.problems
            continue
        columns = [*task.label_columns, *(task.true_columns if truth else [])]
        found, _ = data.check_frame(raw[task.prediction_columns], str(path),
                                    expected_ids=frames[0].index if frames else None)
        bad_truth = raw[task.true_columns if truth else []].apply(pd.to_numeric, errors="coerce").isna()
        if bad_truth.to_numpy().any():
            found.append(f"{path}: missing or non-numeric true_* label values (an OOF file from `arena cv` or a "
                         f"run's val_predictions.csv has them)")
        problems += found
        if not found:
            frames.append(raw.set_index("id")[columns].astype(float))
    return frames
