"""Results by segment: where a model loses. A file of predictions beside their truth (a run's val_predictions.csv, a
CV's oof_predictions.csv) also holds, per row, the segment columns the finish writes from the validation rows
(`segment_columns`): the row's `language` (the data's column; "unknown" where it has none), its number of `turns`,
and `length_diff`, |chars of response A - chars of response B| over all turns. Each kind of segment gives a table:
rows, log loss, accuracy and their difference to the whole set, the worst segment first (by the task's metric).
Two or three classes alike: the class columns are the file's (arena.task.of_columns).

Segments: languages with fewer than MIN_LANGUAGE_ROWS rows are pooled as "other" (a mean over fewer rows is mostly
noise); turns 1, 2, 3+; the length difference in quartile bins, each named by the inclusive range of characters it
holds."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from arena import data, metrics
from arena.errors import UserError
from arena.layout import CVFolder, RunFolder
from arena.task import Task, of_columns

SEGMENT_COLUMNS = ["language", "turns", "length_diff"]
KINDS = {"language": "language", "turns": "turns", "length_diff": "length difference (chars)"}
MIN_LANGUAGE_ROWS = 30
LENGTH_BINS = 4
UNKNOWN, OTHER, ALL = "unknown", "other", "all"
COLUMNS = ["segment", "rows", "log loss", "log loss vs all", "accuracy", "accuracy vs all"]


def segment_columns(rows: pd.DataFrame) -> pd.DataFrame:
    """The segment columns of data rows (text columns as lists of turns, as arena.data loads them), index 0..n-1."""
    features = data.length_features(rows)
    diff = features[:, data.LENGTH_FEATURE_NAMES.index("diff_chars")]
    language = rows["language"] if "language" in rows.columns else pd.Series([UNKNOWN] * len(rows))
    return pd.DataFrame({
        "language": [_language(v) for v in language],
        "turns": [len(t) for t in rows["prompt"]],
        "length_diff": np.abs(diff).astype("int64"),
    })


def _language(value) -> str:
    missing = value is None or (isinstance(value, float) and math.isnan(value)) or not str(value).strip()
    return UNKNOWN if missing else str(value).strip()


def read(path: str | Path) -> tuple[pd.DataFrame, Task]:
    """A predictions file with its truth: the class and true_* columns as numbers, the other columns as written.
    UserError naming the file, column and row ids of what is missing or not a number."""
    frame = data.read_table(path, "predictions")
    task = of_columns(frame.columns)
    if task is None:
        raise UserError(f"{path}: no class columns (winner_model_a, winner_model_b[, winner_tie])")
    numbers = [*task.label_columns, *task.true_columns]
    missing = [c for c in ["id", *numbers] if c not in frame.columns]
    if missing:
        raise UserError(f"{path}: missing column(s) {', '.join(missing)} (a run's val_predictions.csv or a CV's "
                        f"oof_predictions.csv has them)")
    values = frame[numbers].apply(pd.to_numeric, errors="coerce")
    problems = [f"{path}: column {c}: not a number in {data.ids_text(frame.loc[values[c].isna(), 'id'])}"
                for c in numbers if values[c].isna().any()]
    if problems:
        raise UserError(problems=problems)
    frame[numbers] = values
    return frame, task


def tables(frame: pd.DataFrame, task: Task | None = None,
           min_language_rows: int = MIN_LANGUAGE_ROWS) -> dict[str, pd.DataFrame]:
    """One table per kind of segment whose column the frame has (none for a file written before segment columns):
    the whole set first, then the segments, worst first by the task's metric."""
    task = task or of_columns(frame.columns)
    probs = frame[task.label_columns].to_numpy(dtype="float64")
    truth = frame[task.true_columns].to_numpy(dtype="float64")
    groups = {"language": lambda: languages(frame["language"], min_language_rows),
              "turns": lambda: turns(frame["turns"]),
              "length_diff": lambda: length_bins(frame["length_diff"])}
    return {kind: _table(probs, truth, make(), task) for kind, make in groups.items() if kind in frame.columns}


def _table(probs: np.ndarray, truth: np.ndarray, segment: pd.Series, task: Task) -> pd.DataFrame:
    def row(name, mask) -> dict:
        return {"segment": name, "rows": int(mask.sum()), "log loss": metrics.log_loss(truth[mask], probs[mask]),
                "accuracy": metrics.accuracy(truth[mask], probs[mask])}

    whole = row(ALL, np.ones(len(probs), dtype=bool))
    parts = pd.DataFrame([row(name, (segment == name).to_numpy()) for name in segment.unique()])
    worst_first = ["log loss", False] if task.metric == "log_loss" else ["accuracy", True]
    parts = parts.sort_values(worst_first[0], ascending=worst_first[1], kind="stable")
    table = pd.concat([pd.DataFrame([whole]), parts], ignore_index=True)
    table["log loss vs all"] = table["log loss"] - whole["log loss"]
    table["accuracy vs all"] = table["accuracy"] - whole["accuracy"]
    return table[COLUMNS]


def languages(values: pd.Series, min_rows: int = MIN_LANGUAGE_ROWS) -> pd.Series:
    """Each row's language; those of fewer than `min_rows` rows pooled as "other" (rows without one: "unknown")."""
    named = values.map(_language)
    counts = named.value_counts()
    small = set(counts[counts < min_rows].index) - {UNKNOWN}
    return named.where(~named.isin(small), OTHER)


def turns(values: pd.Series) -> pd.Series:
    n = pd.to_numeric(values, errors="coerce")
    return pd.Series(np.where(n.isna(), UNKNOWN, np.where(n >= 3, "3+", n.fillna(0).astype(int).astype(str))),
                     index=values.index)


def length_bins(values: pd.Series, bins: int = LENGTH_BINS) -> pd.Series:
    """Each row's length difference in quantile bins (fewer where quantiles coincide), named by the inclusive
    range of whole characters each holds, e.g. "0-40", "41-180"."""
    chars = np.floor(pd.to_numeric(values, errors="coerce").to_numpy(dtype="float64"))
    known = chars[~np.isnan(chars)]
    if not len(known):
        return pd.Series([UNKNOWN] * len(values), index=values.index)
    edges = np.unique(np.floor(np.quantile(known, np.linspace(0, 1, bins + 1))))
    # bin k holds (edges[k], edges[k + 1]]; the first also its lower edge
    which = np.clip(np.searchsorted(edges, chars, side="left") - 1, 0, max(len(edges) - 2, 0))
    names = [f"{edges[0]:.0f}-{edges[1]:.0f}" if len(edges) > 1 else f"{edges[0]:.0f}"]
    names += [f"{lo + 1:.0f}-{hi:.0f}" for lo, hi in zip(edges[1:-1], edges[2:])]
    return pd.Series(np.where(np.isnan(chars), UNKNOWN, np.asarray(names, dtype=object)[which]), index=values.index)


# ---- rendering --------------------------------------------------------------------------------------

def render(found: dict[str, pd.DataFrame], fmt: str = "table", title: str | None = None) -> str:
    """The segment tables of one predictions file (`tables`) in `arena runs --format`: table or md (csv: one CSV of
    every kind, with a `kind` column); none say that the run predates segment columns."""
    from arena.tracking import render as render_table

    if fmt == "csv":
        return render_table(csv_frame(found), "csv")
    head = ([f"### {title}", ""] if fmt == "md" else [title]) if title else []
    if not found:
        return "\n".join([*head, predates()]) + "\n"
    parts = [f"**{KINDS[kind]}**\n\n{render_table(table, fmt)}" if fmt == "md" else
             f"{KINDS[kind]}\n{render_table(table, fmt)}" for kind, table in found.items()]
    return "\n".join([*head, *parts])


def csv_frame(found: dict[str, pd.DataFrame]) -> pd.DataFrame:
    return pd.concat([t.assign(kind=KINDS[k]) for k, t in found.items()] or [pd.DataFrame(columns=COLUMNS)],
                     ignore_index=True).reindex(columns=["kind", *COLUMNS])


def predates(file: str = "its predictions file") -> str:
    return (f"the run predates segment columns ({file} has no {', '.join(SEGMENT_COLUMNS)} column): a run trained "
            f"by this arena writes them")


def predictions_file(folder: RunFolder | CVFolder) -> Path:
    return folder.oof_predictions if isinstance(folder, CVFolder) else folder.val_predictions


def report(folders: list[tuple[str, RunFolder | CVFolder]], fmt: str = "table",
           strict: bool = False) -> tuple[str, list[str]]:
    """`arena runs --segments`: each folder's segment tables under its name (csv: one CSV with a `run` column),
    and a line for each folder that has none to show: no predictions file, one from before segment columns, or a
    damaged one (`strict`, for runs named on the command line: UserError naming every damaged file instead)."""
    from arena.tracking import render as render_table

    texts, frames, notes, damaged = [], [], [], []
    for name, folder in folders:
        path = predictions_file(folder)
        if not path.is_file():
            notes.append(f"{name}: no {path.name} (an unfinished run)")
            continue
        try:
            frame, task = read(path)
        except UserError as exc:
            damaged += exc.problems
            continue
        found = tables(frame, task)
        if not found:
            notes.append(f"{name}: {predates(path.name)}")
        elif fmt == "csv":
            frames.append(csv_frame(found).assign(run=name))
        else:
            texts.append(render(found, fmt, f"{name}: {path.name}, {len(frame)} rows"))
    if damaged and strict:
        raise UserError(problems=damaged)
    notes += [f"{line} (left out)" for line in damaged]
    if fmt == "csv":
        combined = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        return render_table(combined.reindex(columns=["run", "kind", *COLUMNS]), "csv"), notes
    return "\n".join(texts), notes
