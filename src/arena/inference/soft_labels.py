"""`arena predict --soft-labels OUT`: a run's probabilities for rows (labelled or not: a test file, pairs without
winners) as the next round's soft labels (self-distillation, pseudo-labels). OUT is a competition-format CSV of the
rows with the prediction in the task's class columns, so it is at once a `data.teacher` file (id and the class
columns: the rows' teacher) and training rows (`data.extra` or `data.train`: the rows themselves, the prediction as
their label, which train.label_smoothing leaves as it is)."""

from __future__ import annotations

from pathlib import Path

from arena import data
from arena.errors import UserError
from arena.writes import output_problems

KEPT = ["id", "model_a", "model_b", "prompt", "response_a", "response_b", "language"]


def check(out, submission=None) -> None:
    """UserError when OUT cannot be written as a new CSV beside the submission; before any model loads."""
    problems = output_problems(out, "soft-label file (--soft-labels)")
    if Path(out).suffix.lower() != ".csv":
        problems.append(f"--soft-labels {out}: a .csv file (the competition's format, which data.extra and "
                        f"data.teacher read)")
    if submission is not None and Path(submission).resolve() == Path(out).resolve():
        problems.append(f"--soft-labels {out}: the same file as --out")
    if problems:
        raise UserError(problems=problems)


def write(out, data_path, predictions) -> Path:
    """OUT: the rows of `data_path` (their own labels dropped) with the probabilities of the `predictions` file that
    `arena predict` wrote for them (for a `winner` submission, the probabilities beside it) in the task's classes."""
    raw, task = data.read_probabilities(predictions, "prediction")
    problems, probs = data.check_frame(raw, str(predictions))
    if problems:  # arena predict validated the file before writing it: only a file changed since
        raise UserError(problems=problems)
    rows = data.load_test(data_path, task)
    out_df = rows[[c for c in KEPT if c in rows.columns]].copy()
    out_df[task.label_columns] = probs.loc[rows["id"].astype(str)].to_numpy()
    data.write_csv(out_df, out)
    print(f"soft labels of {len(out_df)} rows ({task.labels}) written to {out}: give it as data.teacher for these "
          f"rows, and as data.extra to train on rows that are not training rows yet")
    return Path(out)
