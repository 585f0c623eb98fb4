"""The competition metric (multi-class log loss with Kaggle's semantics), accuracy and calibration: pure functions
of arrays (the files they score are read and checked by arena.data.predictions)."""

from __future__ import annotations

import math

import numpy as np

from arena.task import label_columns

_SHOW_IDS = 5


def _pred_array(y_pred) -> np.ndarray:
    p = np.asarray(y_pred)
    if not np.issubdtype(p.dtype, np.floating):
        p = p.astype(np.float64)
    if p.ndim != 2 or p.shape[1] not in (2, 3):
        raise ValueError(f"y_pred must have shape (n, classes) with 2 or 3 classes, got {p.shape}")
    if not np.isfinite(p).all() or (p < 0).any():
        raise ValueError("y_pred holds negative or non-finite values")
    return p


def _true_array(y_true, n: int | None = None, classes: int = 3) -> np.ndarray:
    """(n, classes) float class probabilities from class indices (n,) or probabilities (n, classes)."""
    y = np.asarray(y_true)
    if y.ndim == 1:
        if y.size and (not np.all(np.isin(y, range(classes)))):
            raise ValueError(f"class indices must be in 0..{classes - 1}")
        y = np.eye(classes)[y.astype(int)]
    elif y.ndim != 2 or y.shape[1] != classes:
        raise ValueError(f"y_true must be class indices (n,) or probabilities (n, {classes}), got {y.shape}")
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
    that sum to 1). `y_true`: class indices (n,) or soft labels (n, classes)."""
    p = _normalised(y_pred)
    y = _true_array(y_true, len(p), p.shape[1])
    if not len(p):
        raise ValueError("log_loss of 0 rows")
    return float(-(y * np.log(p)).sum(axis=1).mean())


def accuracy(y_true, y_pred) -> float:
    """Share of rows whose most probable class is the true one (argmax of soft labels)."""
    p = _pred_array(y_pred)
    y = _true_array(y_true, len(p), p.shape[1])
    return float((y.argmax(axis=1) == p.argmax(axis=1)).mean()) if len(p) else math.nan


def class_counts(y, classes: int | None = None) -> dict:
    """Rows per class: class indices (n,) counted as is (`classes` of them, 3 by default), probabilities
    (n, classes) by their argmax."""
    arr = np.asarray(y)
    classes = classes or (arr.shape[1] if arr.ndim == 2 else 3)
    idx = arr.astype(int) if arr.ndim == 1 else _true_array(arr, classes=classes).argmax(axis=1)
    counts = np.bincount(idx, minlength=classes)
    return {name: int(c) for name, c in zip(label_columns(classes), counts, strict=True)}


def class_prior(labels) -> np.ndarray:
    """Class frequencies of one-hot or soft labels (n, classes) with one pseudo-row per class (Laplace): a class
    the rows never show keeps a small share instead of zero, which would make its log loss unbounded."""
    arr = np.asarray(labels, dtype="float64")
    return (arr.sum(axis=0) + 1.0) / (len(arr) + arr.shape[1])


def calibration(y_true, y_pred, bins: int = 10) -> dict:
    """Per-class reliability: probabilities binned into `bins` equal-width bins.

    Returns {"ece": {class: expected calibration error}, "mean_ece": float, "table": [rows]} where each
    table row is {class, bin_low, bin_high, count, mean_pred, frac_true} (empty bins left out).
    """
    p = _normalised(y_pred)
    y = _true_array(y_true, len(p), p.shape[1])
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece, table = {}, []
    for k, name in enumerate(label_columns(p.shape[1])):
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


def score(metric: str, y_true, y_pred) -> float:
    """The task's metric (arena.task.Task.metric): log_loss or accuracy."""
    return accuracy(y_true, y_pred) if metric == "accuracy" else log_loss(y_true, y_pred)


def softmax(logits) -> np.ndarray:
    """Row-wise softmax of (n, classes) logits, shifted by each row's maximum (no overflow)."""
    z = np.asarray(logits) - np.asarray(logits).max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
