"""The time budget of a prediction: a deadline (`arena predict --deadline` / `--budget-hours`; in the kernel,
kaggle.time_limit_hours less kaggle.deadline_margin_minutes from the kernel's start) and the two passes run
within it: the plain order for every row first, then the swapped order for as many rows as the time, projected
from the speed measured as the passes go, allows. Rows a pass never reached keep NaN logits (predict fills them)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
from tqdm.auto import tqdm

from arena.errors import UserError

# Kept free after the passes for merging the processes' shards, calibrating and writing the submission.
FINISH_RESERVE_S = 15.0
# The rehearsal's stand-in for a slower GPU: every batch counts this many extra seconds on the budget's clock
# (nothing sleeps), so a local rehearsal can run out of time the way a slow hidden rerun would.
SLOW_BATCH_ENV = "ARENA_REHEARSE_SECONDS_PER_BATCH"


def parse_deadline(deadline: str | None, budget_hours: float | None, now: float | None = None) -> float | None:
    """The deadline as epoch seconds from `--deadline` (epoch seconds or an ISO time; without a zone, local time)
    or `--budget-hours` (from now); None when neither is given. UserError for a bad or past value."""
    now = time.time() if now is None else now
    if deadline is not None and budget_hours is not None:
        raise UserError("--deadline and --budget-hours: give one of them, not both")
    if budget_hours is not None:
        if not budget_hours > 0:
            raise UserError(f"--budget-hours {budget_hours}: must be a positive number of hours")
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
        self.extra_per_batch = float(os.environ.get(SLOW_BATCH_ENV, 0)) if extra_per_batch is None else extra_per_batch
        self.simulated = 0.0

    def now(self) -> float:
        return time.time() + self.simulated

    def batch_done(self) -> None:
        self.simulated += self.extra_per_batch


@dataclass
class PassReport:
    """What the budget let through: rows predicted in each order, and why a pass stopped (None: it finished)."""
    rows: int
    plain_rows: int = 0
    swapped_rows: int = 0
    tta: bool = False
    stopped: str | None = None
    seconds: dict = field(default_factory=dict)

    def describe(self) -> str:
        line = f"plain order: {self.plain_rows} of {self.rows} rows"
        if self.tta:
            share = self.swapped_rows / self.rows if self.rows else 1.0
            line += f"; swap TTA: {self.swapped_rows} of {self.rows} rows ({share:.0%})"
        return line + (f"; stopped: {self.stopped}" if self.stopped else "; every pass finished")


def run_passes(forward: Callable[[int, list[int]], np.ndarray], batches: list[list[int]], costs: list[float],
               rows: int, tta: bool, deadline: float | None, clock: Clock | None = None, desc: str = "predict",
               known_plain: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None, PassReport]:
    """Logits (rows, 3) of the plain order (view 0) and, with `tta`, of the swapped order (view 1), NaN where a
    pass did not reach. `forward(view, batch)` gives the logits of a batch of row indices; `batches` are the
    sorted batches (longest first), `costs` their padded token counts. The plain pass runs every batch while its
    projected time fits before the deadline (less FINISH_RESERVE_S); the swapped pass then runs the same batches
    shortest first (most rows for the time), each only when its projected time still fits: its plain twin's
    measured time scaled by how the swapped batches compared so far, or, when the plain logits are
    `known_plain` (an earlier call predicted them), the swapped pass's own seconds per token so far."""
    clock = clock or Clock()
    report = PassReport(rows=rows, tta=tta)
    swapped = np.full((rows, 3), np.nan, dtype=np.float32) if tta else None
    limit = None if deadline is None else deadline - FINISH_RESERVE_S
    took: list[float | None] = [None] * len(batches)  # measured seconds of each plain batch
    bar = tqdm(total=len(batches) * ((known_plain is None) + tta), desc=desc, unit="batch", mininterval=2,
               disable=len(batches) < 4)

    def fits(projected: float, which: str) -> bool:
        now = clock.now()
        if limit is not None and now + projected > limit:
            report.stopped = (f"the deadline, during the {which} pass (next batch projected {projected:.1f} s, "
                              f"{max(limit - now, 0):.1f} s left before the finish reserve)")
            return False
        return True

    def timed(view: int, batch: list[int]) -> tuple[np.ndarray, float]:
        start = clock.now()
        logits = forward(view, batch)
        clock.batch_done()
        bar.update()
        return logits, clock.now() - start

    if known_plain is None:
        plain = np.full((rows, 3), np.nan, dtype=np.float32)
        plain_time, plain_cost = 0.0, 0.0
        for k, batch in enumerate(batches):
            # seconds per padded token measured so far; before the first batch there is nothing to project from
            if not fits(plain_time / plain_cost * costs[k] if plain_cost else 0.0, "plain"):
                break
            plain[batch], took[k] = timed(0, batch)
            plain_time, plain_cost = plain_time + took[k], plain_cost + costs[k]
            report.plain_rows += len(batch)
        report.seconds["plain"] = round(plain_time, 3)
    else:
        plain = np.asarray(known_plain, dtype=np.float32).copy()
        report.plain_rows = rows
    if tta and report.stopped is None:
        swapped_time, swapped_cost, twin_time = 0.0, 0.0, 0.0  # twin_time: plain seconds of the same batches
        for k in reversed(range(len(batches))):
            if took[k] is not None:
                projected = took[k] * (swapped_time / twin_time if twin_time else 1.0)
            else:
                projected = swapped_time / swapped_cost * costs[k] if swapped_cost else 0.0
            if not fits(projected, "swapped"):
                break
            swapped[batches[k]], seconds = timed(1, batches[k])
            swapped_time, swapped_cost, twin_time = (swapped_time + seconds, swapped_cost + costs[k],
                                                     twin_time + (took[k] or 0.0))
            report.swapped_rows += len(batches[k])
        report.seconds["swapped"] = round(swapped_time, 3)
    bar.close()
    return plain, swapped, report
