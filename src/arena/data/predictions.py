"""Files of probabilities (submissions, predictions, OOF and label files): read by the package's one CSV reader,
checked against the competition's format and the expected ids (every problem named by file and id), and scored."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from arena.data.cells import parse_number
from arena.data.files import read_table
from arena.errors import UserError
from arena.metrics import accuracy, class_counts, log_loss
from arena.task import SUM_TOLERANCE, THREE_WAY, TIE, TWO_WAY, WINNER_CLASSES, Task, of_columns

_SHOW_IDS = 5


def ids_text(ids) -> str:
    ids = list(ids)
    shown = ", ".join(str(i) for i in ids[:_SHOW_IDS])
    return f"{len(ids)} row(s) (ids: {shown}{', ...' if len(ids) > _SHOW_IDS else ''})"


def read_columns(path, role: str, columns: list[str] = THREE_WAY.prediction_columns) -> pd.DataFrame:
    """`columns` of a CSV of predictions or labels, as text (read by the package's one CSV reader: only an empty
    cell is missing, so an id spelled "NA" or "null" is an id); UserError naming the file, row and column."""
    return read_table(path, role, columns)


def probabilities_path(path) -> Path:
    """Where a `winner` submission keeps its probabilities (arena predict writes both)."""
    path = Path(path)
    return path.with_name(f"{path.stem}.probabilities.csv")


def read_probabilities(path, role: str, truth: bool = False, task: Task | None = None) -> tuple[pd.DataFrame, Task]:
    """A file of probabilities (id and a column per class, with `truth` also the true_* columns) as text, and its
    label set: `task`'s, else the file's own (arena.task.of_columns: two or three classes). A file of `id,winner` (a
    two-way submission, the WSDM Cup's labels) reads as its probabilities where `arena predict` wrote them beside
    it, else as one-hot probabilities. UserError naming the file and the columns it lacks."""
    frame = read_table(path, role)
    if "winner" in frame.columns and of_columns(frame.columns) is None and probabilities_path(path).is_file():
        frame = read_table(probabilities_path(path), role)
    if of_columns(frame.columns) is None and not truth and {"id", "winner"} <= set(frame.columns):
        frame = _winner_one_hot(frame, path)
    task = task or of_columns(frame.columns) or THREE_WAY
    needed = task.prediction_columns + (task.true_columns if truth else [])
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise UserError(f"{path}: missing column(s) {', '.join(missing)}")
    return frame[needed], task


def _winner_one_hot(frame: pd.DataFrame, path) -> pd.DataFrame:
    classes = frame["winner"].map(lambda v: WINNER_CLASSES.get(str(v).strip()))
    unknown = frame.loc[classes.isna(), "id"]
    if len(unknown):
        raise UserError(f"{path}: column winner: not one of {', '.join(WINNER_CLASSES)} in {ids_text(unknown)}")
    columns = (THREE_WAY if (classes == TIE).any() else TWO_WAY).label_columns
    out = pd.DataFrame({"id": frame["id"]})
    for c in columns:
        out[c] = (classes == c).astype(float).astype(str)
    return out


def check_frame(df: pd.DataFrame, name: str, expected_ids=None, rescaled: bool = False) -> tuple[list[str], pd.DataFrame]:
    """Problems of one competition-format frame, and its numeric label columns. `rescaled`: rows are divided by
    their sum before use (as Kaggle does with predictions), so they need only be non-negative with a positive
    sum; otherwise every value is in [0, 1] and rows sum to 1 within SUM_TOLERANCE."""
    task = of_columns(df.columns) or THREE_WAY
    label_columns = task.label_columns
    missing_cols = [c for c in task.prediction_columns if c not in df.columns]
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

    parsed = [[parse_number(cell) for cell in row] for row in df[label_columns].itertuples(index=False)]
    values = pd.DataFrame([[np.nan if v is None else v for v, _ in row] for row in parsed], columns=label_columns,
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
    """Raise UserError listing every problem of a submission frame (id + a column per class; other
    columns are ignored): ids missing, unexpected or duplicated, NaN or non-numeric values, values
    outside [0, 1], rows not summing to 1."""
    problems, _ = check_frame(df, name, expected_ids)
    if problems:
        raise UserError(problems=problems)


def score_files(pred_path, truth_path) -> dict:
    """Score a submission CSV against any competition-format CSV holding id + the label columns (or `winner`).
    The classes are the truth file's; a two-way submission of `id,winner` is scored as one-hot probabilities.

    As Kaggle does, each prediction row is divided by its sum before scoring, so rows need not sum to 1
    (they must be non-negative with a positive sum); the labels must sum to 1 within SUM_TOLERANCE.
    """
    frames, problems = {}, []
    for role, path in (("labels", truth_path), ("prediction", pred_path)):
        try:
            frames[role], _ = read_probabilities(path, role)
        except UserError as exc:
            problems += exc.problems
    if problems:
        raise UserError(problems=problems)
    classes = of_columns(frames["labels"].columns).label_columns
    missing = [c for c in classes if c not in frames["prediction"].columns]
    if missing:
        raise UserError(f"{pred_path}: missing column(s) {', '.join(missing)} (the classes of {truth_path})")
    frames["prediction"] = frames["prediction"][["id", *classes]]
    truth_problems, y = check_frame(frames["labels"], str(truth_path))
    if not len(y) and not truth_problems:
        truth_problems.append(f"{truth_path}: no rows")
    pred_problems, p = check_frame(frames["prediction"], str(pred_path), expected_ids=y.index, rescaled=True)
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
        "uniform_log_loss": log_loss(y_true, np.full_like(y_true, 1 / y_true.shape[1])),
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
