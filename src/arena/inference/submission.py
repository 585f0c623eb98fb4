"""The submission file: probabilities framed by id, validated (ids, columns, finite, rows summing to 1) before an
atomic write that never overwrites, in the form the task's competition takes (arena.task: the probabilities, or
`id,winner` with the probabilities beside it); the kept logits of an ensemble member; where each process leaves its
share."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from arena import data
from arena.data import probabilities_path
from arena.errors import UserError
from arena.layout import RunFolder, stamp
from arena.task import Task, label_columns, of_columns
from arena.writes import atomic_file


def prediction_frame(ids, probs: np.ndarray) -> pd.DataFrame:
    frame = pd.DataFrame({"id": list(ids)})
    frame[label_columns(probs.shape[1])] = probs
    return frame


def write_submission(frame: pd.DataFrame, expected_ids, path: str | Path, task: Task | None = None) -> Path:
    """Validate (ids, columns, finite, [0,1], rows sum to 1) and only then write; never overwrite. With a task
    whose submission is `winner` (WSDM Cup), `path` gets `id,winner` and the probabilities go beside it."""
    path = Path(path)
    beside = task is not None and task.submission == "winner"
    for target in [path] + ([probabilities_path(path)] if beside else []):
        if target.exists():
            raise UserError(f"{target}: already exists; predictions never overwrite an earlier file")
    columns = of_columns(frame.columns).label_columns
    probs = frame[columns].to_numpy(dtype=np.float64)
    frame = frame.copy()
    frame[columns] = probs / probs.sum(axis=1, keepdims=True)
    data.validate_submission(frame, expected_ids)
    if beside:
        with atomic_file(probabilities_path(path)) as tmp:
            frame[["id", *columns]].to_csv(tmp, index=False)
        frame = task.submission_frame(frame["id"], frame[columns].to_numpy())
    with atomic_file(path) as tmp:
        frame[["id", *(c for c in frame.columns if c != "id")]].to_csv(tmp, index=False)
    return path


def write_logits(path, ids, plain: np.ndarray, swapped: np.ndarray | None) -> None:
    with atomic_file(path) as tmp, open(tmp, "wb") as out:
        np.savez(out, ids=np.asarray(ids, dtype=str), plain=plain,
                 swapped=np.full_like(plain, np.nan) if swapped is None else swapped)
    print(f"logits of {len(plain)} rows kept in {path}")


def read_logits(path, df: pd.DataFrame | None, problems: list[str]) -> np.ndarray | None:
    """The plain logits that `write_logits` kept for these rows (None, with the problem added, if the file is
    not one, or is for other rows)."""
    try:
        with np.load(path) as kept:
            ids, plain = kept["ids"], kept["plain"]
    except (OSError, ValueError, KeyError) as exc:
        problems.append(f"--logits {path}: not a logits file from `arena predict --logits` ({exc})")
        return None
    if df is not None and (len(plain) != len(df) or ids.tolist() != df["id"].astype(str).tolist()):
        problems.append(f"--logits {path}: holds the logits of other rows than {len(df)} rows of this --data "
                        f"(ids differ); give a new file name to predict them")
        return None
    return plain


def shard_names(out_path, run: RunFolder, data_path, progress_dir=None) -> tuple[str, str]:
    """The submission's path (default: RUN/predictions/<data>-<time>.csv) and the folder where each process keeps
    its progress and leaves its share: beside the submission, or a new one in `progress_dir` (--progress)."""
    out = Path(out_path) if out_path else run.predictions / f"{Path(data_path).stem}-{stamp()}.csv"
    if progress_dir is not None:  # made when first written: a refused call writes nothing
        return str(out), str(Path(progress_dir) / f"call-{stamp()}-{os.getpid()}")
    return str(out), str(out.with_name(f".{out.name}.shards-{stamp()}"))
