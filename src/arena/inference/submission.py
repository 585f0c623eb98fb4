"""The submission file: probabilities framed by id, validated (ids, columns, finite, rows summing to 1) before an
atomic write that never overwrites; the kept logits of an ensemble member; where each process leaves its share."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from arena import data
from arena.errors import UserError
from arena.labels import LABEL_COLUMNS, SUBMISSION_COLUMNS
from arena.layout import RunFolder, stamp
from arena.writes import atomic_file


def prediction_frame(ids, probs: np.ndarray) -> pd.DataFrame:
    frame = pd.DataFrame({"id": list(ids)})
    frame[LABEL_COLUMNS] = probs
    return frame


def write_submission(frame: pd.DataFrame, expected_ids, path: str | Path) -> Path:
    """Validate (ids, columns, finite, [0,1], rows sum to 1) and only then write; never overwrite."""
    path = Path(path)
    if path.exists():
        raise UserError(f"{path}: already exists; predictions never overwrite an earlier file")
    probs = frame[LABEL_COLUMNS].to_numpy(dtype=np.float64)
    frame = frame.copy()
    frame[LABEL_COLUMNS] = probs / probs.sum(axis=1, keepdims=True)
    data.validate_submission(frame, expected_ids)
    with atomic_file(path) as tmp:
        frame[SUBMISSION_COLUMNS].to_csv(tmp, index=False)
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
    if df is not None and (plain.shape != (len(df), 3) or ids.tolist() != df["id"].astype(str).tolist()):
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
