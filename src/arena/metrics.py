"""Competition metric (multi-class log loss with Kaggle's semantics), accuracy, calibration, and the
scoring / validation of submission files."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from arena.errors import UserError
from arena.layout import LABEL_COLUMNS, SUBMISSION_COLUMNS, SUM_TOLERANCE

_SHOW_IDS = 5


def _pred_array(y_pred) -> np.ndarray:
    p = np.asarray(y_pred)
    if not np.issubdtype(p.dtype, np.floating):
        p = p.astype(np.float64)
    if p.ndim != 2 or p.shape[1] != len(LABEL_COLUMNS):
        raise ValueError(f"y_pred must have shape (n, {len(LABEL_COLUMNS)}), got {p.shape}")
    if not np.isfinite(p).all() or (p < 0).any():
        raise ValueError("y_pred holds negative or non-finite values")
    return p


def _true_array(y_true, n: int | None = None) -> np.ndarray:
    """(n, 3) float class probabilities from class indices (n,) or probabilities (n, 3)."""
    y = np.asarray(y_true)
    if y.ndim == 1:
        if y.size and (not np.all(np.isin(y, range(len(LABEL_COLUMNS))))):
            raise ValueError(f"class indices must be in 0..{len(LABEL_COLUMNS) - 1}")
        y = np.eye(len(LABEL_COLUMNS))[y.astype(int)]
    elif y.ndim != 2 or y.shape[1] != len(LABEL_COLUMNS):
        raise ValueError(f"y_true must be class indices (n,) or probabilities (n, {len(LABEL_COLUMNS)}), got {y.shape}")
    y = y.astype(np.float64)
    if n is not None and len(y) != n:
        raise ValueError(f"y_true has {len(y)} rows, y_pred {n}")
    return y


def _normalised(y_pred) -> np.ndarray:
    """Rows renormalised to sum 1, then clipped to [eps, 1 - eps] with eps of the array's dtype."""
    p = _pred_array(y_pred)
    sums = p.sum(axis=1, keepdims=True)
    if (sums <= 0).any():
        raise ValueError("y_pred has rows that sum to 0")
    eps = np.finfo(p.dtype).eps
    return np.clip(p / sums, eps, 1 - eps)


def log_loss(y_true, y_pred) -> float:
    """Mean multi-class log loss, as the competition scores it (= sklearn.metrics.log_loss for rows
    that sum to 1). `y_true`: class indices (n,) or soft labels (n, 3)."""
    p = _normalised(y_pred)
    y = _true_array(y_true, len(p))
    if not len(p):
        raise ValueError("log_loss of 0 rows")
    return float(-(y * np.log(p)).sum(axis=1).mean())


def accuracy(y_true, y_pred) -> float:
    """Share of rows whose most probable class is the true one (argmax of soft labels)."""
    p = _pred_array(y_pred)
    y = _true_array(y_true, len(p))
    return float((y.argmax(axis=1) == p.argmax(axis=1)).mean()) if len(p) else math.nan


def class_counts(y) -> dict:
    """Rows per class: class indices (n,) counted as is, probabilities (n, 3) by their argmax."""
    arr = np.asarray(y)
    idx = arr.astype(int) if arr.ndim == 1 else _true_array(arr).argmax(axis=1)
    counts = np.bincount(idx, minlength=len(LABEL_COLUMNS))
    return {name: int(c) for name, c in zip(LABEL_COLUMNS, counts, strict=True)}


def calibration(y_true, y_pred, bins: int = 10) -> dict:
    """Per-class reliability: probabilities binned into `bins` equal-width bins.

    Returns {"ece": {class: expected calibration error}, "mean_ece": float, "table": [rows]} where each
    table row is {class, bin_low, bin_high, count, mean_pred, frac_true} (empty bins left out).
    """
    p = _normalised(y_pred)
    y = _true_array(y_true, len(p))
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece, table = {}, []
    for k, name in enumerate(LABEL_COLUMNS):
        which = np.clip(np.digitize(p[:, k], edges[1:-1]), 0, bins - 1)
        error = 0.0
        for b in range(bins):
            mask = which == b
            count = int(mask.sum())
            if not count:
                continue
            mean_pred, frac_true = float(p[mask, k].mean()), float(y[mask, k].mean())
            error += count / len(p) * abs(mean_pred - frac_true)
            table.append({"class": name, "bin_low": float(edges[b]), "bin_high": float(edges[b + 1]),
                          "count": count, "mean_pred": mean_pred, "frac_true": frac_true})
        ece[name] = error
    return {"ece": ece, "mean_ece": float(np.mean(list(ece.values()))), "table": table}


# ---- files ------------------------------------------------------------------------------------------

def ids_text(ids) -> str:
    ids = list(ids)
    shown = ", ".join(str(i) for i in ids[:_SHOW_IDS])
    return f"{len(ids)} row(s) (ids: {shown}{', ...' if len(ids) > _SHOW_IDS else ''})"


def read_columns(path, role: str, columns: list[str] = SUBMISSION_COLUMNS) -> pd.DataFrame:
    """`columns` of a CSV of predictions or labels, as text (read by the package's one CSV reader: only an empty
    cell is missing, so an id spelled "NA" or "null" is an id); UserError naming the file, row and column."""
    from arena.data.files import read_table  # arena.data imports this module

    return read_table(path, role, columns)


def check_frame(df: pd.DataFrame, name: str, expected_ids=None, rescaled: bool = False) -> tuple[list[str], pd.DataFrame]:
    """Problems of one frame of id + the three label columns, and those columns as numbers indexed by id."""
    return _check(df, name, expected_ids, rescaled)


def _check(df: pd.DataFrame, name: str, expected_ids=None, rescaled: bool = False) -> tuple[list[str], pd.DataFrame]:
    """Problems of one competition-format frame, and its numeric label columns. `rescaled`: rows are divided by
    their sum before use (as Kaggle does with predictions), so they need only be non-negative with a positive
    sum; otherwise every value is in [0, 1] and rows sum to 1 within SUM_TOLERANCE."""
    missing_cols = [c for c in SUBMISSION_COLUMNS if c not in df.columns]
    if missing_cols:
        return [f"{name}: missing column(s) {', '.join(missing_cols)}"], pd.DataFrame()
    problems = []
    ids = df["id"]
    null_id = ids.isna() | (ids.astype(str).str.strip() == "")
    if null_id.any():
        problems.append(f"{name}: {int(null_id.sum())} row(s) with an empty id (rows: "
                        f"{', '.join(str(i) for i in np.flatnonzero(null_id.to_numpy())[:_SHOW_IDS])})")
    ids = ids.astype(str)
    dup = ids[ids.duplicated(keep="first") & ~null_id].unique()
    if len(dup):
        problems.append(f"{name}: duplicated ids: {ids_text(dup)}")
    if expected_ids is not None:
        got = set(ids[~null_id])
        want = {str(i) for i in expected_ids}
        absent = [i for i in dict.fromkeys(str(i) for i in expected_ids) if i not in got]
        extra = [i for i in ids[~null_id].unique() if i not in want]
        if absent:
            problems.append(f"{name}: ids missing: {ids_text(absent)}")
        if extra:
            problems.append(f"{name}: unexpected ids: {ids_text(extra)}")

    from arena.data.files import parse_number  # the one number reader: score takes what validate takes

    parsed = [[parse_number(cell) for cell in row] for row in df[LABEL_COLUMNS].itertuples(index=False)]
    values = pd.DataFrame([[np.nan if v is None else v for v, _ in row] for row in parsed], columns=LABEL_COLUMNS,
                          dtype=np.float64)
    nan = pd.Series([any(e == "missing" for _, e in row) for row in parsed], dtype=bool)
    bad = pd.Series([any(e == "not a number" for _, e in row) for row in parsed], dtype=bool) & ~nan
    checks = [
        (nan, "missing (NaN) values"),
        (bad, "non-numeric values"),
    ]
    v = values.to_numpy()
    valid = ~values.isna().any(axis=1).to_numpy()
    with np.errstate(invalid="ignore"):
        if rescaled:
            checks += [(valid & ~np.isfinite(v).all(axis=1), "infinite values"),
                       (valid & (v < 0).any(axis=1), "negative values"),
                       (valid & np.isfinite(v).all(axis=1) & (v.sum(axis=1) <= 0), "rows summing to 0")]
        else:
            checks += [(valid & ((v < 0) | (v > 1)).any(axis=1), "values outside [0, 1]"),
                       (valid & (np.abs(v.sum(axis=1) - 1) > SUM_TOLERANCE),
                        f"rows not summing to 1 (tolerance {SUM_TOLERANCE:g})")]
    for mask, what in checks:
        mask = np.asarray(mask, dtype=bool)
        if mask.any():
            problems.append(f"{name}: {what} in {ids_text(ids[mask])}")
    values.index = ids
    return problems, values


def validate_submission(df: pd.DataFrame, expected_ids, name: str = "submission") -> None:
    """Raise UserError listing every problem of a submission frame (id + the three class columns; other
    columns are ignored): ids missing, unexpected or duplicated, NaN or non-numeric values, values
    outside [0, 1], rows not summing to 1."""
    problems, _ = _check(df, name, expected_ids)
    if problems:
        raise UserError(problems=problems)


def score_files(pred_path, truth_path) -> dict:
    """Score a submission CSV against any competition-format CSV holding id + the three label columns.

    As Kaggle does, each prediction row is divided by its sum before scoring, so rows need not sum to 1
    (they must be non-negative with a positive sum); the labels must sum to 1 within SUM_TOLERANCE.
    """
    frames, problems = {}, []
    for role, path in (("labels", truth_path), ("prediction", pred_path)):
        try:
            frames[role] = read_columns(path, role)
        except UserError as exc:
            problems += exc.problems
    if problems:
        raise UserError(problems=problems)
    truth_problems, y = _check(frames["labels"], str(truth_path))
    if not len(y) and not truth_problems:
        truth_problems.append(f"{truth_path}: no rows")
    pred_problems, p = _check(frames["prediction"], str(pred_path), expected_ids=y.index, rescaled=True)
    if truth_problems or pred_problems:
        raise UserError(problems=truth_problems + pred_problems)
    y_true = y.to_numpy()
    y_pred = p.loc[y.index].to_numpy()
    sums = y_pred.sum(axis=1)
    prior = y_true.mean(axis=0)
    return {
        "rows": len(y_true),
        "log_loss": log_loss(y_true, y_pred),
        "accuracy": accuracy(y_true, y_pred),
        "uniform_log_loss": log_loss(y_true, np.full_like(y_true, 1 / len(LABEL_COLUMNS))),
        "prior_log_loss": log_loss(y_true, np.tile(prior, (len(y_true), 1))),
        "rescaled_rows": int((np.abs(sums - 1) > SUM_TOLERANCE).sum()),
        "pred_counts": class_counts(y_pred),
        "true_counts": class_counts(y_true),
    }


def format_score(result: dict) -> str:
    text = (f"log_loss {result['log_loss']:.4f}  accuracy {result['accuracy']:.4f}  rows {result['rows']}  "
            f"(uniform {result['uniform_log_loss']:.4f}, class prior {result['prior_log_loss']:.4f})")
    if result["rescaled_rows"]:
        text += (f"\nnote: {result['rescaled_rows']} prediction row(s) did not sum to 1; each row was divided by its "
                 f"sum before scoring, as Kaggle does")
    return text
