"""Grouped, stratified folds: a prompt never lands in two folds."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd

from arena.data.cells import DataError
from arena.data.files import label_matrix


def make_folds(df: pd.DataFrame, k: int, seed: int) -> np.ndarray:
    """Fold index per row: StratifiedGroupKFold stratified by `label` (argmax of soft labels), grouped by
    prompt so that the same prompt never lands in two folds. Deterministic by seed."""
    from sklearn.model_selection import StratifiedGroupKFold

    if k < 2:
        raise DataError(f"folds: k={k}; need at least 2 folds")
    groups = pd.factorize(pd.Series([json.dumps(p, ensure_ascii=False) for p in df["prompt"]]))[0]
    n_groups = int(groups.max()) + 1 if len(groups) else 0
    if n_groups < k:
        raise DataError(f"folds: cannot make {k} folds from {n_groups} distinct prompts ({len(df)} rows)")
    labels = label_matrix(df)
    y = labels.argmax(axis=1) if labels is not None else np.zeros(len(df), dtype="int64")
    folds = np.full(len(df), -1, dtype="int64")
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        # sklearn warns when a class has fewer members than folds; the folds are still valid.
        warnings.filterwarnings("ignore", message="The least populated class")
        for fold, (_, held_out) in enumerate(splitter.split(np.zeros(len(df)), y, groups)):
            folds[held_out] = fold
    return folds
