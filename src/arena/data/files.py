"""Competition-format CSV files: reading with validation (every problem named by file, row id and column),
the label matrix, and the atomic, never-overwriting writer. Every CSV the package reads goes through
`cells.cells` (encoding, archives, CSV shape) and its one text rule; `read_table` gives any CSV's columns as text;
`cells.parse_number` reads every number.

`load(path)` is strict (training and validation data); `load_test(path)` repairs what a hidden test set may hold
(a turn that is not a string becomes its text, undecodable bytes and lone surrogates become U+FFFD, NUL characters
are dropped) and prints the counts.

In memory, `prompt`, `response_a` and `response_b` hold Python lists of strings (one per turn, all three
padded to the same number of turns); on disk they are JSON-encoded lists, as in the competition's CSVs.
"""

from __future__ import annotations

import json
import sys
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from arena.data.cells import DataError, cells, parse_label, parse_turns
from arena.labels import LABEL_COLUMNS, SUM_TOLERANCE
from arena.writes import atomic_file

TEXT_COLUMNS = ["prompt", "response_a", "response_b"]
REQUIRED_COLUMNS = ["id", *TEXT_COLUMNS]


def read_table(path, role: str, columns: list[str] | None = None) -> pd.DataFrame:
    """The columns of any CSV (every one, or `columns`) as text, through the same checks as the competition's
    data (encoding, archives, shape, the text rule). Only an empty cell is missing: an id spelled "NA" is an id.
    DataError naming the file (and the row id and column) lists every problem."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: {role} file not found")
    problems: list[str] = []
    parsed = cells(path, problems)
    if parsed is None:
        raise DataError(problems=problems)
    header, rows = parsed
    wanted = columns or list(dict.fromkeys(header))
    missing = [c for c in wanted if c not in header]
    if missing:
        found = ", ".join(header[:12]) + (", ..." if len(header) > 12 else "")
        problems.insert(0, f"{path}: missing column(s) {', '.join(missing)} (found: {found})")
    if problems:
        raise DataError(problems=problems)
    index = {c: header.index(c) for c in wanted}
    return pd.DataFrame({c: [row.fields[i] for row in rows] for c, i in index.items()}, dtype=object)


def _load(path, require_labels: bool | None, repairs: Counter | None = None) -> tuple[pd.DataFrame, int]:
    """Read and check a CSV; returns (frame, number of rows whose turn lists were padded). `repairs`: read
    leniently (a hidden test set), counting each repair there."""
    path = Path(path)
    name = str(path)
    problems: list[str] = []
    parsed = cells(path, problems, repairs)
    if parsed is None:
        raise DataError(problems=problems)
    header, rows = parsed

    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        problems.append(f"{name}: missing required column(s) {', '.join(missing)} (found: {', '.join(header)})")
    present_labels = [c for c in LABEL_COLUMNS if c in header]
    has_labels = len(present_labels) == len(LABEL_COLUMNS)
    if present_labels and not has_labels:
        absent = [c for c in LABEL_COLUMNS if c not in header]
        problems.append(f"{name}: has label column(s) {', '.join(present_labels)} but not {', '.join(absent)}")
    elif not present_labels and require_labels:
        problems.append(f"{name}: missing label columns {', '.join(LABEL_COLUMNS)} (labels are required here)")

    columns = list(dict.fromkeys(header))
    index = {c: header.index(c) for c in columns}
    values: dict[str, list] = {c: [] for c in columns}
    first_line_of_id: dict[str, int] = {}
    padded = 0

    for row in rows:
        where, rid, fields, bad = row.where, row.rid, row.fields, row.bad
        if "id" in index:
            if not rid.strip():
                problems.append(f"{where}: column id: missing id")
            elif rid in first_line_of_id:
                problems.append(f"{where}: column id: duplicate id (first on line {first_line_of_id[rid]})")
            else:
                first_line_of_id[rid] = row.first_line

        turns = {}
        for col in TEXT_COLUMNS:
            if col not in index or index[col] in bad:
                continue
            turns[col], error = parse_turns(fields[index[col]], repairs)
            if error:
                problems.append(f"{where}: column {col}: {error}")
        if all(turns.get(col) is not None for col in TEXT_COLUMNS):
            lengths = {len(t) for t in turns.values()}
            n_turns = max(max(lengths), 1)
            if len(lengths) > 1:
                padded += 1
            for col, t in turns.items():
                turns[col] = t + [""] * (n_turns - len(t))

        labels = []
        if has_labels:
            for col in LABEL_COLUMNS:
                value, error = parse_label(fields[index[col]])
                if error:
                    problems.append(f"{where}: column {col}: {error}")
                labels.append(value)
            if None not in labels and abs(sum(labels) - 1.0) > SUM_TOLERANCE:
                problems.append(f"{where}: column {'+'.join(LABEL_COLUMNS)}: labels sum to {sum(labels):g}, "
                                f"expected 1")

        for col in columns:
            if col in TEXT_COLUMNS:
                values[col].append(turns.get(col))
            elif has_labels and col in LABEL_COLUMNS:
                values[col].append(labels[LABEL_COLUMNS.index(col)])
            else:
                values[col].append(fields[index[col]])

    if problems:
        raise DataError(problems=problems)
    return canonical(pd.DataFrame(values)), padded


def canonical(df: pd.DataFrame) -> pd.DataFrame:
    """Canonical form: fresh index, str ids, float64 labels, int `label` (argmax: 0=A, 1=B, 2=tie)."""
    df = df.reset_index(drop=True)
    df["id"] = df["id"].astype(str)
    labels = label_matrix(df)
    if labels is not None:
        df[LABEL_COLUMNS] = labels
        df["label"] = labels.argmax(axis=1).astype("int64")
    return df


def load(path, require_labels: bool | None = None) -> pd.DataFrame:
    """Read a competition-format CSV (train.csv or test.csv). Raises DataError listing every problem.

    require_labels: True -> the three label columns must be there; None or False -> optional (all or none).
    """
    df, padded = _load(path, require_labels)
    if padded:
        warnings.warn(f"{path}: {padded} rows have prompt/response lists of different lengths; "
                      f"padded the shorter ones with empty turns", stacklevel=2)
    return df


def load_test(path) -> pd.DataFrame:
    """Read a test CSV to predict (the hidden test set in a submission kernel), repairing what would otherwise
    be refused: a turn that is not a string becomes its text, undecodable bytes and lone surrogates become
    U+FFFD, NUL characters are dropped. The counts are printed (stderr). Missing or duplicate ids and rows of the
    wrong shape are still errors: no submission could name them."""
    repairs: Counter = Counter()
    df, _ = _load(path, None, repairs)
    if repairs:
        print(f"{path}: repaired for prediction: " + ", ".join(f"{n} {what}" for what, n in sorted(repairs.items())),
              file=sys.stderr, flush=True)
    return df


def validate(path) -> str:
    """Load a CSV and return a one-line summary; raises DataError listing every problem."""
    df, padded = _load(path, None)
    labels = label_matrix(df)
    if labels is None:
        label_text = "labels: none"
    else:
        a, b, t = np.bincount(df["label"], minlength=3)
        soft = "yes" if not np.isin(labels, (0.0, 1.0)).all() else "no"
        label_text = f"labels A/B/tie = {a}/{b}/{t} (soft: {soft})"
    turns = df["prompt"].map(len)
    return (f"{path}: OK {len(df)} rows; {label_text}; turns: mean {turns.mean():.2f}, max {turns.max()}; "
            f"padded rows: {padded}")


def label_matrix(df: pd.DataFrame) -> np.ndarray | None:
    """(n, 3) float probabilities in LABEL_COLUMNS order, or None when df has no labels."""
    if not all(c in df.columns for c in LABEL_COLUMNS):
        return None
    return df[LABEL_COLUMNS].to_numpy(dtype="float64")


def write_csv(df: pd.DataFrame, path) -> None:
    """Write in the competition's format (JSON-list text columns), atomically; never overwrites a file."""
    path = Path(path)
    if path.exists():
        raise DataError(f"{path}: already exists; refusing to overwrite it")
    out = df.drop(columns=["label"], errors="ignore").copy()
    for col in TEXT_COLUMNS:
        if col in out.columns:
            out[col] = [json.dumps([t] if isinstance(t, str) else list(t), ensure_ascii=False) for t in out[col]]
    labels = label_matrix(out)
    if labels is not None and np.isin(labels, (0.0, 1.0)).all():
        out[LABEL_COLUMNS] = labels.astype("int64")
    with atomic_file(path) as tmp:
        out.to_csv(tmp, index=False, encoding="utf-8", lineterminator="\n")
