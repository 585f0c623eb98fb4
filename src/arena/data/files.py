"""Competition-format files: reading with validation (every problem named by file, row id and column), the label
matrix, and the atomic, never-overwriting writer. Every file the package reads goes through `cells.cells`
(encoding, archives, CSV or parquet shape) and its one text rule; `read_table` gives any CSV's columns as text;
`cells.parse_number` reads every number.

Two forms, as the competitions give them: a CSV whose text cells are JSON lists of turns and whose labels are one
column per class (LMSYS), or a parquet file of plain strings with a `winner` column (model_a / model_b; WSDM Cup).
The labels read are the task's (arena.task): `winner` values map to its classes, and a tie in a two-way task is
named as such.

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

from arena import task as task_mod
from arena.data.cells import DataError, cells, parse_label, parse_turns
from arena.task import SUM_TOLERANCE, THREE_WAY, WINNER_CLASSES, Task
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


def _winner_labels(raw: str, task: Task) -> tuple[list[float] | None, str | None]:
    """One-hot labels of a `winner` cell in the task's classes, or the problem."""
    column = WINNER_CLASSES.get(raw.strip())
    if column is None:
        return None, (f"winner {raw.strip()!r} is not one of {', '.join(WINNER_CLASSES)}" if raw.strip()
                      else "missing winner")
    if column not in task.label_columns:
        return None, f"winner {raw.strip()!r}: a tie, and a {task.labels} task has none"
    return [float(c == column) for c in task.label_columns], None


def _load(path, require_labels: bool | None, repairs: Counter | None = None,
          task: Task | None = None) -> tuple[pd.DataFrame, int]:
    """Read and check a CSV or parquet file; returns (frame, number of rows whose turn lists were padded).
    `repairs`: read leniently (a hidden test set), counting each repair there. `task`: whose labels are read
    (None: the file's own label columns, else three-way)."""
    path = Path(path)
    name = str(path)
    problems: list[str] = []
    parsed = cells(path, problems, repairs, list_columns=TEXT_COLUMNS)
    if parsed is None:
        raise DataError(problems=problems)
    header, rows = parsed
    task = task or task_mod.of_columns(header) or THREE_WAY
    label_columns = task.label_columns

    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        problems.append(f"{name}: missing required column(s) {', '.join(missing)} (found: {', '.join(header)})")
    present_labels = [c for c in label_columns if c in header]
    has_labels = len(present_labels) == len(label_columns)
    winner = not present_labels and "winner" in header
    if present_labels and not has_labels:
        absent = [c for c in label_columns if c not in header]
        problems.append(f"{name}: has label column(s) {', '.join(present_labels)} but not {', '.join(absent)}")
    elif not present_labels and not winner and require_labels:
        problems.append(f"{name}: missing label columns {', '.join(label_columns)} or a winner column (labels are "
                        f"required here)")
    tie_column = task.labels == "two-way" and task_mod.TIE in header

    columns = list(dict.fromkeys(header))
    index = {c: header.index(c) for c in columns}
    values: dict[str, list] = {c: [] for c in columns if not (tie_column and c == task_mod.TIE)}
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
            for col in label_columns:
                value, error = parse_label(fields[index[col]])
                if error:
                    problems.append(f"{where}: column {col}: {error}")
                labels.append(value)
            if None not in labels and abs(sum(labels) - 1.0) > SUM_TOLERANCE:
                tie = (f" ({task_mod.TIE} is set: a {task.labels} task has no tie; give the file as data.extra, "
                       f"which drops ties)" if tie_column else "")
                problems.append(f"{where}: column {'+'.join(label_columns)}: labels sum to {sum(labels):g}, "
                                f"expected 1{tie}")
        elif winner:
            labels, error = _winner_labels(fields[index["winner"]], task)
            if error:
                problems.append(f"{where}: column winner: {error}")

        for col in columns:
            if col in TEXT_COLUMNS:
                values[col].append(turns.get(col))
            elif (has_labels or winner) and col in label_columns:
                values[col].append(labels[label_columns.index(col)] if labels else None)
            elif not (tie_column and col == task_mod.TIE):
                values[col].append(fields[index[col]])
        if winner:
            for col, value in zip(label_columns, labels or [None] * len(label_columns)):
                values.setdefault(col, []).append(value)

    if problems:
        raise DataError(problems=problems)
    return canonical(pd.DataFrame(values)), padded


def row_keys(df: pd.DataFrame) -> pd.Series:
    """Each row's (prompt, response_a, response_b) as one text: equal keys are the same pair."""
    return pd.Series([json.dumps(row, ensure_ascii=False) for row in zip(*(df[c] for c in TEXT_COLUMNS))],
                     index=df.index)


def canonical(df: pd.DataFrame) -> pd.DataFrame:
    """Canonical form: fresh index, str ids, float64 labels, int `label` (argmax: 0=A, 1=B, 2=tie)."""
    df = df.reset_index(drop=True)
    df["id"] = df["id"].astype(str)
    labels = label_matrix(df)
    if labels is not None:
        df[task_mod.of_columns(df.columns).label_columns] = labels
        df["label"] = labels.argmax(axis=1).astype("int64")
    return df


def load(path, require_labels: bool | None = None, task: Task | None = None) -> pd.DataFrame:
    """Read a competition-format file (train or test, CSV or parquet). Raises DataError listing every problem.

    require_labels: True -> the task's labels must be there (a column per class, or `winner`); None or False ->
    optional (all or none). `task`: whose classes the labels are (None: the file's own, else three-way).
    """
    df, padded = _load(path, require_labels, task=task)
    if padded:
        warnings.warn(f"{path}: {padded} rows have prompt/response lists of different lengths; "
                      f"padded the shorter ones with empty turns", stacklevel=2)
    return df


def load_test(path, task: Task | None = None) -> pd.DataFrame:
    """Read a test CSV to predict (the hidden test set in a submission kernel), repairing what would otherwise
    be refused: a turn that is not a string becomes its text, undecodable bytes and lone surrogates become
    U+FFFD, NUL characters are dropped. The counts are printed (stderr). Missing or duplicate ids and rows of the
    wrong shape are still errors: no submission could name them."""
    repairs: Counter = Counter()
    df, _ = _load(path, None, repairs, task)
    if repairs:
        print(f"{path}: repaired for prediction: " + ", ".join(f"{n} {what}" for what, n in sorted(repairs.items())),
              file=sys.stderr, flush=True)
    return df


def validate(path) -> str:
    """Load a CSV or parquet file and return a one-line summary; raises DataError listing every problem."""
    df, padded = _load(path, None)
    labels = label_matrix(df)
    if labels is None:
        label_text = "labels: none"
    else:
        counts = "/".join(str(n) for n in np.bincount(df["label"], minlength=labels.shape[1]))
        soft = "yes" if not np.isin(labels, (0.0, 1.0)).all() else "no"
        label_text = f"labels {'/'.join(['A', 'B', 'tie'][:labels.shape[1]])} = {counts} (soft: {soft})"
    turns = df["prompt"].map(len)
    return (f"{path}: OK {len(df)} rows; {label_text}; turns: mean {turns.mean():.2f}, max {turns.max()}; "
            f"padded rows: {padded}")


def label_matrix(df: pd.DataFrame) -> np.ndarray | None:
    """(n, classes) float probabilities in the order of the frame's label columns (arena.task), or None when df
    has no labels."""
    task = task_mod.of_columns(df.columns)
    return None if task is None else df[task.label_columns].to_numpy(dtype="float64")


def write_csv(df: pd.DataFrame, path) -> None:
    """Write in the competition's format, atomically; never overwrites a file. A CSV holds JSON-list text columns
    and a column per class; a parquet file (by its suffix) holds the WSDM Cup's form: plain strings (lists of them
    where a row has several turns) and `winner` (model_a / model_b / tie) where the labels are hard."""
    path = Path(path)
    if path.exists():
        raise DataError(f"{path}: already exists; refusing to overwrite it")
    out = df.drop(columns=["label"], errors="ignore").copy()
    labels = label_matrix(out)
    columns = [] if labels is None else task_mod.of_columns(out.columns).label_columns
    hard = labels is not None and bool(np.isin(labels, (0.0, 1.0)).all())
    if path.suffix.lower() == ".parquet":
        turns = {col: [[t] if isinstance(t, str) else list(t) for t in out[col]] for col in TEXT_COLUMNS if col in out}
        plain = all(len(t) == 1 for values in turns.values() for t in values)
        for col, values in turns.items():
            out[col] = [t[0] for t in values] if plain else values
        if hard:
            out = out.drop(columns=columns).assign(winner=[task_mod.WINNER_VALUES[columns[k]]
                                                           for k in labels.argmax(axis=1)])
        with atomic_file(path) as tmp:
            out.to_parquet(tmp, index=False)
        return
    for col in TEXT_COLUMNS:
        if col in out.columns:
            out[col] = [json.dumps([t] if isinstance(t, str) else list(t), ensure_ascii=False) for t in out[col]]
    if hard:
        out[columns] = labels.astype("int64")
    with atomic_file(path) as tmp:
        out.to_csv(tmp, index=False, encoding="utf-8", lineterminator="\n")
