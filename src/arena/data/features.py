"""Length features of the full, untruncated texts: the table for length baselines, and the head's standardised
log-scale subset with its scaler (fit on training rows, saved with the adapter)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from arena.data.rows import swap_ab


def _side_stats(turns_column) -> np.ndarray:
    """chars, words, lines and turns (non-empty) per row of a list[str] column."""
    stats = np.zeros((len(turns_column), 4), dtype="float64")
    for i, turns in enumerate(turns_column):
        stats[i, 0] = sum(len(t) for t in turns)
        stats[i, 1] = sum(len(t.split()) for t in turns)
        stats[i, 2] = sum(t.count("\n") + 1 for t in turns if t)
        stats[i, 3] = sum(1 for t in turns if t)
    return stats


LENGTH_FEATURE_NAMES = [
    *(f"{side}_{what}" for side in ("a", "b") for what in (
        "chars", "words", "lines", "log_chars", "log_words", "log_lines", "turns")),
    "diff_chars", "diff_words", "diff_lines",
    "logratio_chars", "logratio_words", "logratio_lines",
    "abs_logratio_chars", "abs_logratio_words", "abs_logratio_lines",
    "prompt_chars", "prompt_log_chars",
]


def length_features(df: pd.DataFrame) -> np.ndarray:
    """Length features (float64, columns LENGTH_FEATURE_NAMES) for a length baseline."""
    a = _side_stats(df["response_a"])
    b = _side_stats(df["response_b"])
    prompt_chars = _side_stats(df["prompt"])[:, :1]
    log_a, log_b = np.log1p(a[:, :3]), np.log1p(b[:, :3])
    ratio = log_a - log_b
    return np.hstack([
        a[:, :3], log_a, a[:, 3:],
        b[:, :3], log_b, b[:, 3:],
        a[:, :3] - b[:, :3], ratio, np.abs(ratio),
        prompt_chars, np.log1p(prompt_chars),
    ]).astype("float64")


# The model's head sees only the log-scale length features (and turn counts): raw counts are heavy-tailed,
# and a head fit on them extrapolates wildly when test responses are much longer than training ones.
HEAD_FEATURE_NAMES = [n for n in LENGTH_FEATURE_NAMES if "log" in n or n.endswith("_turns")]
_HEAD_FEATURES = [LENGTH_FEATURE_NAMES.index(n) for n in HEAD_FEATURE_NAMES]
HEAD_FEATURE_CLIP = 4.0  # standard deviations


def fit_feature_scaler(df: pd.DataFrame) -> dict:
    """Mean/std of the head's length features on training rows (saved with the adapter, used at inference)."""
    x = length_features(df)[:, _HEAD_FEATURES]
    std = x.std(axis=0)
    return {"names": HEAD_FEATURE_NAMES, "mean": x.mean(axis=0).tolist(),
            "std": np.where(std > 1e-6, std, 1.0).tolist()}


def head_features(df: pd.DataFrame, scaler: dict, swap: bool = False) -> np.ndarray:
    """Standardised head features (float32) of the rows, of the A<->B swapped rows with swap=True; clipped so
    that a response far longer than any seen in training cannot push the logits without bound."""
    x = length_features(swap_ab(df) if swap else df)[:, _HEAD_FEATURES]
    z = (x - np.asarray(scaler["mean"])) / np.asarray(scaler["std"])
    return np.clip(z, -HEAD_FEATURE_CLIP, HEAD_FEATURE_CLIP).astype("float32")
