"""Teacher probabilities for distillation (`data.teacher`): CSVs of id + a column per class (an `arena cv`
OOF file, an `arena predict` output, or any such CSV), checked and lined up with the training rows."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
import pandas as pd

from arena.data.predictions import check_frame, ids_text, read_probabilities
from arena.errors import UserError
from arena.task import Task, swap_classes


@dataclass
class Teachers:
    """Each teacher's probabilities by id (one frame of the class columns per CSV), in data.teacher order."""

    paths: list[str]
    frames: list[pd.DataFrame]

    def for_rows(self, ids, swap: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities (n, teachers, classes) and coverage (n, teachers) of the rows `ids`; a row a teacher does
        not cover gets zeros there. `swap`: the rows are seen with A and B exchanged."""
        ids = pd.Index([str(i) for i in ids])
        classes = self.frames[0].shape[1] if self.frames else 3
        probs = np.zeros((len(ids), len(self.frames), classes), dtype=np.float32)
        covered = np.zeros((len(ids), len(self.frames)), dtype=bool)
        for k, frame in enumerate(self.frames):
            found = ids.isin(frame.index)
            probs[found, k] = frame.loc[ids[found]].to_numpy()
            covered[:, k] = found
        return (swap_classes(probs) if swap else probs), covered

    def coverage(self, ids) -> dict:
        """How many of the rows `ids` each teacher covers, and how many no teacher covers (they use the labels)."""
        _, covered = self.for_rows(ids)
        return {"rows": len(covered), "per_teacher": covered.sum(axis=0).tolist(),
                "without_teacher": int((~covered.any(axis=1)).sum())}


def read_teachers(paths: list[str], known_ids, task: Task) -> Teachers:
    """The teacher CSVs, each checked: readable, with id and the task's class columns, ids unique and all among
    `known_ids` (the training data's), every row probabilities summing to 1. UserError lists every problem of
    every file, naming the file and the row ids."""
    known = {str(i) for i in known_ids}
    problems, frames = [], []
    for path in paths:
        try:
            raw, _ = read_probabilities(path, "teacher", task=task)
        except UserError as exc:
            problems += exc.problems
            continue
        found, values = check_frame(raw, f"{path} (data.teacher)")
        # Ids the training rows lack (rows dedup dropped, a predict output of a larger file) are counted and
        # ignored, as training rows a teacher lacks are; a teacher that covers no training row is another file's.
        unknown = [i for i in values.index.unique() if i not in known]
        if unknown and len(unknown) == values.index.nunique():
            found.append(f"{path} (data.teacher): none of its ids is in the training data: {ids_text(unknown)}")
        elif unknown:
            print(f"{path} (data.teacher): ids not among the training rows, ignored: {ids_text(unknown)}",
                  file=sys.stderr)
        problems += found
        if not found:
            frames.append(values / values.to_numpy().sum(axis=1, keepdims=True))
    if problems:
        raise UserError(problems=problems)
    return Teachers(list(paths), frames)
