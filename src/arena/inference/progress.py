"""The logits each process has predicted, kept on disk as its passes go (`arena predict --progress DIR`): a
prediction cut short (a process that crashed or was killed, so that the launcher stopped the others; the kernel's
retry) starts from them instead of from nothing, and a last resort writes the submission from them alone
(`--fill-only`). Each file names what it holds logits of (the rows' token ids in every order, and the run's
adapter): a folder of another run or of other rows is never read as this one's.

DIR holds one folder per call (its processes' progress files, the batches they took, their shards)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from arena.layout import RunFolder
from arena.writes import atomic_file

PATTERN = "progress-*.npz"


def key(views: list, run: RunFolder) -> str:
    """What a progress file holds logits of: sha256 of the rows' token ids (the plain order's: the swapped order
    follows from the same rows and prompt settings, so a call with swap TTA reads one without) and of the run's
    adapter."""
    ids = views[0][0]
    digest = hashlib.sha256(run.fingerprint().encode())
    digest.update(np.asarray([len(x) for x in ids], dtype=np.int64).tobytes())
    digest.update(np.concatenate([np.asarray(x, dtype=np.int64) for x in ids]).tobytes() if ids else b"")
    return digest.hexdigest()


def path(folder: Path, rank: int) -> Path:
    return Path(folder) / f"progress-{rank}.npz"


def save(folder: Path, rank: int, of: str, plain: np.ndarray, swapped: np.ndarray | None, ran: tuple) -> None:
    """This process's logits so far (the rows it ran in each order), replacing its earlier file in one step."""
    plain_rows, swapped_rows = (np.asarray(r, dtype=np.int64) for r in ran)
    with atomic_file(path(folder, rank), overwrite=True) as tmp, open(tmp, "wb") as out:
        np.savez(out, key=np.asarray(of), plain_rows=plain_rows, plain=plain[plain_rows],
                 swapped_rows=swapped_rows,
                 swapped=swapped[swapped_rows] if swapped is not None else np.zeros((0, plain.shape[1]), np.float32))


def kept(folder: Path, of: str, rows: int, classes: int, tta: bool, skip: Path | None = None):
    """(plain, swapped or None, files read, files of something else) from every progress file under `folder`
    (a call's own folder `skip` left out): NaN where no file holds a finite logit."""
    plain = np.full((rows, classes), np.nan, dtype=np.float32)
    swapped = np.full((rows, classes), np.nan, dtype=np.float32) if tta else None
    used, other = 0, 0
    for file in sorted(Path(folder).glob(f"*/{PATTERN}")):
        if skip is not None and file.parent == Path(skip):
            continue
        try:
            with np.load(file, allow_pickle=False) as saved:
                if str(saved["key"]) != of:
                    other += 1
                    continue
                parts = [(plain, saved["plain_rows"], saved["plain"])]
                if swapped is not None:
                    parts.append((swapped, saved["swapped_rows"], saved["swapped"]))
                for target, where, logits in parts:
                    good = np.isfinite(logits).all(axis=1) & (where >= 0) & (where < rows)
                    target[where[good]] = logits[good]
        except (OSError, ValueError, KeyError):  # cut short while written: the atomic write makes this rare
            other += 1
            continue
        used += 1
    return plain, swapped, used, other
