"""Swap TTA where it changes the answer (`infer.tta_order: uncertain`): the swapped order runs on the rows whose
plain-order prediction is least certain first, as the WSDM Cup 2025 winners spent their inference time. Each process
orders the rows it holds by their plain prediction once its plain pass ends and publishes that list in the
processes' shared folder; a process that has run its own list takes the unclaimed batches of the others' lists,
most uncertain first, so no process waits for another's plain pass and all of them work until the lists or the
deadline end."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from arena.budget import inference as budget
from arena.inference.batching import sorted_batches
from arena.metrics import softmax
from arena.writes import atomic_file

# The swapped order is formed in tranches of this share of the rows (most uncertain first), each batched by length
# and run shortest first: the uncertainty cut is reached to within one tranche, and batches still pad little.
TRANCHE_SHARE = 0.05
POLL_S = 0.2


def certainty(plain: np.ndarray) -> np.ndarray:
    """Each row's top probability in the plain order: 1 - its least-confidence uncertainty. For two classes it
    orders rows as |pA - pB| does (top = (1 + |pA - pB|) / 2: the WSDM Cup's 2nd place gated its second model on
    it); for three it also counts the tie, where the margin between A and B alone would call a confident tie
    uncertain. A row without finite logits scores 0: the swapped order is its only prediction, so it runs first."""
    plain = np.asarray(plain, dtype=np.float64)
    top = np.zeros(len(plain))
    ok = np.isfinite(plain).all(axis=1)
    if ok.any():
        top[ok] = softmax(plain[ok]).max(axis=1)
    return top


def least_certain_first(rows, top: np.ndarray) -> list[int]:
    """`rows` ordered from the lowest top probability to the highest (ties by row index)."""
    return sorted(rows, key=lambda i: (top[i], i))


def tranches(rows: list[int], share: float = TRANCHE_SHARE, floor: int = 1) -> list[list[int]]:
    """`rows` (already in order) cut into consecutive tranches of `share` of them (at least `floor` rows each)."""
    size = max(math.ceil(len(rows) * share), floor, 1)
    return [rows[k:k + size] for k in range(0, len(rows), size)]


def uncertain_batches(rows: list[int], top: np.ndarray, lengths: list[int], max_batch_tokens: int,
                      max_batch_size: int, owner: int) -> list[budget.Batch]:
    """The swapped-order batches of `rows`, least certain tranche first; within a tranche, batched by length and
    shortest first (its rows are about equally uncertain: the most rows for the time)."""
    batches: list[list[int]] = []
    for tranche in tranches(least_certain_first(rows, top), floor=max_batch_size):
        own = [lengths[i] for i in tranche]
        batches += [[tranche[j] for j in b] for b in reversed(sorted_batches(own, max_batch_tokens, max_batch_size))]
    costs = [float(len(b) * max(lengths[i] for i in b)) for b in batches]
    return budget.batches_of(1, batches, costs, owner)


def list_file(folder: Path, rank: int) -> Path:
    return Path(folder) / f"swap-order-{rank}.json"


class SwapQueues:
    """The swapped work of process `rank` in uncertain order, formed when its plain pass ends (run_passes' `then`).

    Its list holds the rows whose swapped order is still to predict and whose plain order it ran, or knew at the
    start among the rows dealt to it (`dealt`); it is published in `folder` (None: one process) so the others can
    take its batches once their own are done; theirs follow its own, waited for while `time_left()` and until the
    process has written its share (it ended without publishing)."""

    def __init__(self, rank: int, processes: int, folder: Path | None, dealt: list[int], todo: np.ndarray,
                 lengths: list[int], max_batch_tokens: int, max_batch_size: int,
                 time_left: Callable[[], bool], finished: Callable[[int], bool]):
        self.rank, self.processes, self.folder = rank, processes, None if folder is None else Path(folder)
        self.dealt, self.todo, self.lengths = dealt, todo, lengths
        self.limits = (max_batch_tokens, max_batch_size)
        self.time_left, self.finished = time_left, finished

    def __call__(self, plain: np.ndarray, report: budget.PassReport) -> Iterator[budget.Batch]:
        ran = set(report.ran[0])
        known = {i for i in self.dealt if np.isfinite(plain[i]).all()}
        rows = sorted(i for i in ran | known if self.todo[i])
        own = uncertain_batches(rows, certainty(plain), self.lengths, *self.limits, self.rank)
        if self.folder is not None and self.processes > 1:
            with atomic_file(list_file(self.folder, self.rank), overwrite=True) as tmp:
                tmp.write_text(json.dumps([[list(b.rows), b.cost] for b in own]), encoding="utf-8")
        return self._then(own)

    def _then(self, own: list[budget.Batch]) -> Iterator[budget.Batch]:
        yield from own
        if self.folder is None:
            return
        for rank in [r for r in range(self.rank + 1, self.processes)] + list(range(self.rank)):
            theirs = self._wait_for(rank)
            if theirs is None:
                return
            yield from theirs

    def _wait_for(self, rank: int) -> list[budget.Batch] | None:
        path = list_file(self.folder, rank)
        while not path.is_file():
            if not self.time_left() or self.finished(rank):
                return [] if self.time_left() else None
            time.sleep(POLL_S)
        listed = json.loads(path.read_text(encoding="utf-8"))
        return [budget.Batch(1, tuple(rows), float(cost), rank, k) for k, (rows, cost) in enumerate(listed)]


def reached(plain: np.ndarray, swapped: np.ndarray | None) -> tuple[int, float | None]:
    """(rows with both orders, the uncertainty cut): every row whose plain top probability is below the cut got
    both orders (None: every row with a plain prediction did)."""
    if swapped is None:
        return 0, None
    plain_ok = np.isfinite(plain).all(axis=1)
    both = plain_ok & np.isfinite(swapped).all(axis=1)
    left = plain_ok & ~both
    return int(both.sum()), (float(certainty(plain[left]).min()) if left.any() else None)
