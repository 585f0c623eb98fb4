"""The time budget of a prediction: a deadline (`arena predict --deadline` / `--budget-hours`; in the kernel,
kaggle.time_limit_hours less kaggle.deadline_margin_minutes from the kernel's start) and the two passes run
within it: the plain order for every row first, then the swapped order for as many rows as the time, projected
from the speed measured as the passes go, allows. Rows a pass never reached keep NaN logits (predict fills them)."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
from tqdm.auto import tqdm

from arena import environment
from arena.errors import UserError

# Kept free after the passes for merging the processes' shards, calibrating and writing the submission.
FINISH_RESERVE_S = 15.0
# The rehearsal's stand-in for a slower GPU: every batch counts this many extra seconds on the budget's clock
# (nothing sleeps), so a local rehearsal can run out of time the way a slow hidden rerun would.
SLOW_BATCH_ENV = environment.SLOW_BATCH


def parse_deadline(deadline: str | None, budget_hours: float | None, now: float | None = None) -> float | None:
    """The deadline as epoch seconds from `--deadline` (epoch seconds or an ISO time; without a zone, local time)
    or `--budget-hours` (from now); None when neither is given. UserError for a bad or past value."""
    now = time.time() if now is None else now
    if deadline is not None and budget_hours is not None:
        raise UserError("--deadline and --budget-hours: give one of them, not both")
    if budget_hours is not None:
        if not 0 < budget_hours < np.inf:
            raise UserError(f"--budget-hours {budget_hours}: must be a positive, finite number of hours")
        return now + budget_hours * 3600
    if deadline is None:
        return None
    try:
        at = float(deadline)
    except ValueError:
        try:
            at = datetime.fromisoformat(deadline).timestamp()
        except ValueError:
            raise UserError(f"--deadline {deadline}: expected epoch seconds (e.g. 1790000000) or an ISO time "
                            f"(e.g. 2026-12-02T13:00:00+00:00)") from None
    if not np.isfinite(at):  # float() takes nan and inf: a deadline never reached, or one no clock compares with
        raise UserError(f"--deadline {deadline}: not a time; a deadline is a finite time (epoch seconds or ISO)")
    if at <= now:
        raise UserError(f"--deadline {deadline}: already passed ({now - at:.0f} s ago)")
    return at


def projected_tta_share(pf: dict, margin_minutes: float) -> float | None:
    """The share of rows a pre-flight projection (kaggle.preflight) expects the kernel's swapped pass to cover
    before its deadline (time limit less the margin, less the load allowance and the plain pass); None without
    swap TTA or a throughput. 0 when even the plain pass does not fit."""
    if pf["passes"] != 2 or pf["inference_hours"] is None:
        return None
    one_pass = pf["inference_hours"] / 2
    left = pf["time_limit_hours"] - margin_minutes / 60 - pf["load_allowance_s"] / 3600 - one_pass
    return round(min(max(left / one_pass, 0.0), 1.0), 3) if one_pass > 0 else 1.0


def kernel_deadline(started: float, kaggle) -> float:
    """The kernel's deadline (epoch seconds): kaggle.time_limit_hours less kaggle.deadline_margin_minutes after
    its start, `started`."""
    deadline = started + kaggle.time_limit_hours * 3600 - kaggle.deadline_margin_minutes * 60
    print(f"deadline: {datetime.fromtimestamp(deadline).isoformat(timespec='seconds')} = the kernel's start + "
          f"kaggle.time_limit_hours {kaggle.time_limit_hours:g} h - kaggle.deadline_margin_minutes "
          f"{kaggle.deadline_margin_minutes:g} min ({(deadline - time.time()) / 3600:.2f} h from now)", flush=True)
    return deadline


class Clock:
    """Wall-clock seconds (epoch), plus the rehearsal's simulated slowness (SLOW_BATCH_ENV) per batch."""

    def __init__(self, extra_per_batch: float | None = None):
        self.extra_per_batch = environment.number(SLOW_BATCH_ENV) if extra_per_batch is None else extra_per_batch
        self.simulated = 0.0

    def now(self) -> float:
        return time.time() + self.simulated

    def batch_done(self) -> None:
        self.simulated += self.extra_per_batch


@dataclass(frozen=True)
class Batch:
    """One forward of the passes: row indices (into the arrays run_passes returns) in one order (view 0: A/B, the
    plain order; view 1: B/A, swapped), their padded token count, and the process they were dealt to (`owner`; its
    `index`-th batch of that order). Several processes share one list of batches and take them by name."""
    view: int
    rows: tuple[int, ...]
    cost: float
    owner: int = 0
    index: int = 0

    @property
    def name(self) -> str:
        return f"{self.view}-{self.owner}-{self.index}"


def batches_of(view: int, batches: list[list[int]], costs: list[float], owner: int = 0) -> list[Batch]:
    return [Batch(view, tuple(rows), cost, owner, k) for k, (rows, cost) in enumerate(zip(batches, costs))]


def work_order(plain: list[list[Batch]], swapped: list[list[Batch]], rank: int) -> list[Batch]:
    """The batches process `rank` runs, in order, when `plain[r]` and `swapped[r]` are the batches dealt to each
    process r (longest first): its own plain batches, then the other processes' plain batches from their short end
    (each process starts at its long end: they meet in the middle), then its own swapped batches shortest first
    (the most rows for the time), then the others' swapped batches from their long end. Every row's plain order
    comes before any swapped one; a process that is slow, has failed or was killed leaves its batches to the
    others. With one process: its plain batches, then its swapped ones shortest first. (infer.tta_order uncertain
    deals no swapped batches here: run_passes' `then` forms them once the plain order is known.)"""
    others = [r for r in range(rank + 1, len(plain))] + list(range(rank))
    return (plain[rank] + [b for r in others for b in reversed(plain[r])]
            + list(reversed(swapped[rank])) + [b for r in others for b in swapped[r]])


@dataclass
class PassReport:
    """What the budget let through: rows this process predicted in each order (its own and those it took from
    other processes), the rows dealt to it, why its passes stopped (None: they finished) or failed."""
    rows: int
    plain_rows: int = 0
    swapped_rows: int = 0
    tta: bool = False
    stopped: str | None = None
    seconds: dict = field(default_factory=dict)
    taken: int = 0  # batches of other processes this one ran
    failed: str | None = None  # the error a forward raised: this process ran no batch after it
    ran: tuple[list, list] = field(default_factory=lambda: ([], []))  # rows it predicted, per order
    nonfinite: list = field(default_factory=lambda: [0, 0])  # of those, rows whose logits were not finite

    def describe(self) -> str:
        if self.taken:  # its counts include rows dealt to other processes
            line = f"plain order: {self.plain_rows} rows" + (f"; swap TTA: {self.swapped_rows} rows" if self.tta else "")
            line += f" ({self.rows} rows dealt to it; it took {self.taken} batch(es) of other processes)"
        else:
            line = f"plain order: {self.plain_rows} of {self.rows} rows"
            if self.tta:
                share = self.swapped_rows / self.rows if self.rows else 1.0
                line += f"; swap TTA: {self.swapped_rows} of {self.rows} rows ({share:.0%})"
        if self.failed:
            return line + f"; FAILED: {self.failed}: its remaining batches are left to the other processes"
        return line + (f"; stopped: {self.stopped}" if self.stopped else "; every pass finished")


class Claims:
    """Batches taken by name, so that several processes sharing one list run each batch once: a file created
    exclusively in `folder` per batch (None: one process, every batch is its own)."""

    def __init__(self, folder: str | os.PathLike | None):
        self.folder = folder
        if folder is not None:
            os.makedirs(folder, exist_ok=True)

    def take(self, batch: Batch) -> bool:
        if self.folder is None:
            return True
        try:
            os.close(os.open(os.path.join(self.folder, batch.name), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            return True
        except FileExistsError:
            return False

    def release(self, batch: Batch) -> None:
        """A batch this process took and could not run: another process may take it."""
        if self.folder is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.folder, batch.name))


def run_passes(forward: Callable[[int, list[int]], np.ndarray], work: list[Batch], rows: int, own_rows: int,
               tta: bool, deadline: float | None, clock: Clock | None = None, desc: str = "predict",
               known: tuple[np.ndarray, np.ndarray | None] | None = None, claims: Claims | None = None,
               saved: Callable[[np.ndarray, np.ndarray | None, PassReport], None] | None = None,
               rank: int = 0, classes: int | None = None,
               then: Callable[[np.ndarray, PassReport], Iterable[Batch]] | None = None,
               ) -> tuple[np.ndarray, np.ndarray | None, PassReport]:
    """Logits (rows, classes) of the plain order (view 0) and, with `tta`, of the swapped order (view 1): `known` (NaN
    where not known) with every batch of `work` this process ran filled in (work_order: the plain batches first).
    `forward(view, batch)` gives the logits of a batch of row indices. Each batch runs only when its projected time
    still fits before the deadline (less FINISH_RESERVE_S), and only when `claims` gives it to this process: a plain
    batch's time is projected from the plain pass's seconds per padded token so far; a swapped batch's from its
    plain twin's measured time scaled by how the swapped batches compared so far, else from the seconds per token
    measured so far. At the first batch that does not fit, both passes stop. A forward that raises (a CUDA
    out-of-memory, a device error) ends this process's passes: the error is reported, the batch released for the
    other processes, and what was predicted is kept. `saved(plain, swapped, report)` is called after every batch
    (the progress a later call can start from). `rank`: this process (its own batches are those it `owner`s).
    `classes`: the logits per row where nothing is `known`. `then(plain, report)`: the swapped batches to run after
    `work` (infer.tta_order uncertain: formed from the plain logits, once this process's plain pass is over); it is
    called once however the passes end (a list it publishes is then there for the other processes)."""
    clock = clock or Clock()
    claims = claims or Claims(None)
    report = PassReport(rows=own_rows, tta=tta)
    unknown = np.full((rows, classes if known is None else np.shape(known[0])[1]), np.nan, dtype=np.float32)
    plain = unknown.copy() if known is None else np.array(known[0], dtype=np.float32)
    swapped = None
    if tta:
        swapped = unknown.copy() if known is None or known[1] is None else np.array(known[1], dtype=np.float32)
    limit = None if deadline is None else deadline - FINISH_RESERVE_S
    took: dict[tuple[int, ...], float] = {}  # measured seconds of each plain batch run here, by its rows
    spent = {0: [0.0, 0.0], 1: [0.0, 0.0]}  # per view: seconds, padded tokens
    twin_time = [0.0]  # plain seconds of the swapped batches that had a plain twin here
    work = [b for b in work if b.view == 0 or tta]
    then = then if tta else None
    bar = tqdm(total=len(work), desc=desc, unit="batch", mininterval=2, disable=len(work) < 4)

    def projected(batch: Batch) -> float:
        seconds, tokens = spent[batch.view]
        if batch.view == 1 and batch.rows in took:
            return took[batch.rows] * (seconds / twin_time[0] if twin_time[0] else 1.0)
        if tokens:
            return seconds / tokens * batch.cost
        seconds, tokens = spent[0]  # the swapped pass's first batch without a twin: the plain pass's speed
        return seconds / tokens * batch.cost if tokens else 0.0

    queue = iter(work)
    while True:
        batch = next(queue, None)
        if batch is None and then is not None:
            queue, then = iter(then(plain, report)), None
            continue
        if batch is None:
            break
        now, ahead = clock.now(), projected(batch)
        if limit is not None and now + ahead > limit:
            which = "plain" if batch.view == 0 else "swapped"
            report.stopped = (f"the deadline, during the {which} pass (next batch projected {ahead:.1f} s, "
                              f"{max(limit - now, 0):.1f} s left before the finish reserve)")
            break
        if not claims.take(batch):
            continue
        start = clock.now()
        try:
            logits = forward(batch.view, list(batch.rows))
        except Exception as exc:  # noqa: BLE001 - any failure of a forward: the others take over its batches
            claims.release(batch)
            report.failed = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            print(f"WARNING: {desc}: a forward failed ({report.failed}); this process stops, the rows it did not "
                  f"reach are left to the other processes or filled in", file=sys.stderr, flush=True)
            break
        clock.batch_done()
        bar.update()
        seconds = clock.now() - start
        target = plain if batch.view == 0 else swapped
        target[list(batch.rows)] = logits
        report.ran[batch.view].extend(batch.rows)
        report.nonfinite[batch.view] += int((~np.isfinite(logits).all(axis=1)).sum())
        spent[batch.view][0] += seconds
        spent[batch.view][1] += batch.cost
        if batch.view == 0:
            took[batch.rows] = seconds
            report.plain_rows += len(batch.rows)
        else:
            twin_time[0] += took.get(batch.rows, 0.0)
            report.swapped_rows += len(batch.rows)
        report.taken += batch.owner != rank
        if saved is not None:
            saved(plain, swapped, report)
    if then is not None:  # stopped or failed before its swapped pass: its list is published all the same
        then(plain, report)
    report.seconds = {"plain": round(spent[0][0], 3), **({"swapped": round(spent[1][0], 3)} if tta else {})}
    bar.close()
    return plain, swapped, report
