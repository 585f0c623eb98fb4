"""The plain and swapped passes over the rows (one process per GPU under `accelerate launch`, sharing one list of
batches), within the deadline; each process's logits kept as it goes and its share merged by the main process."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from arena import faults, processes, task
from arena import model as model_mod
from arena.budget import inference as budget
from arena.config import Config
from arena.errors import UserError
from arena.inference import progress
from arena.inference.batching import logits_for_batches, model_device, sorted_batches
from arena.inference.uncertainty import SwapQueues
from arena.layout import RunFolder

View = tuple[list[list[int]], "np.ndarray | None"]  # token ids and head features of every row


def logits_for_views(run: RunFolder, cfg: Config, base_model: str | None, views: list[View], pad_id: int,
                     deadline: float | None = None, shards: str | Path | None = None,
                     known_plain: np.ndarray | None = None, progress_dir: str | Path | None = None,
                     fill_only: bool = False):
    """(plain logits, swapped logits or None, one budget.PassReport per process) of every row on the main process
    (None on the others); NaN where no pass reached a row. Under `accelerate launch` each process loads its own
    copy of the model (on its GPU, or the CPU); the rows are dealt so that every process gets the same number of
    tokens, and the processes share one list of batches (budget.work_order): a process that is slow, crashed or
    was killed leaves its batches to the others. All within the deadline (budget.run_passes). Each process keeps
    its logits in `shards` as it goes (progress.save) and writes its share there at the end; the main process
    merges them (processes.collect_shards: no collective that could time out while one GPU is slower).
    `known_plain`: every row's plain logits, predicted by an earlier call (then only the swapped order runs).
    `progress_dir`: the logits kept there by earlier calls of the same rows and run are not predicted again.
    `fill_only`: no model loads; only what is known is returned."""

    cpu = model_mod.device_for(cfg) == "cpu"
    procs = processes.state(cpu)
    rank, n, tta = procs.process_index, len(views[0][0]), len(views) > 1
    of = progress.key(views, run)
    plain, swapped = known_logits(n, task.of_config(cfg).classes, tta, known_plain, progress_dir, of, shards,
                                  procs.is_main_process)
    if fill_only:
        if not np.isfinite(plain).all(axis=1).any():
            raise UserError(f"--fill-only: no logits of these rows and this run kept in {progress_dir}: nothing to "
                            f"fill from (a file of the class prior alone would score nothing)")
        if not procs.is_main_process:
            return None
        print("fill only: no model loaded; every row without kept logits takes the run's class prior", flush=True)
        return plain, swapped, [budget.PassReport(rows=0, tta=tta)]
    lengths = [len(x) for x in views[0][0]]
    todo = (~np.isfinite(plain).all(axis=1), ~np.isfinite(swapped).all(axis=1) if tta else np.zeros(n, dtype=bool))
    uncertain = tta and cfg.infer.tta_order == "uncertain"
    weights = [lengths[i] * (int(todo[0][i]) + int(todo[1][i])) for i in range(n)]
    shares = processes.deal_by_tokens(weights, procs.num_processes)
    dealt = [[dealt_batches(cfg, lengths, [i for i in share if todo[view][i]], view, owner)
              for owner, share in enumerate(shares)] for view in (0, 1)]
    if uncertain:  # formed once the plain order is known (uncertainty.SwapQueues)
        dealt[1] = [[] for _ in shares]
    work = budget.work_order(dealt[0], dealt[1], rank)
    model, device = None, "cpu"
    if deadline is not None and time.time() >= deadline - budget.FINISH_RESERVE_S:
        # no batch can run (run_passes stops before the first): no model to load, every row takes the prior
        print(f"WARNING: the deadline passed {time.time() - deadline:.0f} s before prediction began: NO row is "
              f"predicted, every row without kept logits takes the run's class prior", file=sys.stderr, flush=True)
        work = []
    elif any(todo[0]) or any(todo[1]):
        model, _, _ = model_mod.load_trained(cfg, run, base_model, cfg.infer.quantization)
        model.eval()
        device = model_device(model)
    ids_of = [ids for ids, _ in views]
    features_of = [features for _, features in views]

    def forward(view: int, batch: list[int]) -> np.ndarray:
        return logits_for_batches(model, ids_of[view], pad_id, device, [batch], features_of[view])[batch]

    clock = budget.Clock()

    def jump_to_deadline() -> None:
        if deadline is not None:
            clock.simulated += max(deadline - clock.now(), 0.0)

    folder = Path(shards) if shards is not None else None
    struck = faults.strike_prediction(forward, faults.from_env(), rank, procs.num_processes, jump_to_deadline, folder)

    def saved(plain_now, swapped_now, report) -> None:
        if folder is not None:
            progress.save(folder, rank, of, plain_now, swapped_now, report.ran)

    where = f" (process {rank})" if procs.num_processes > 1 else ""
    own_rows = sum(1 for i in shares[rank] if todo[0][i] or todo[1][i])
    shared = folder if procs.num_processes > 1 else None
    then = None
    if uncertain:
        limit = None if deadline is None else deadline - budget.FINISH_RESERVE_S
        then = SwapQueues(rank, procs.num_processes, shared, shares[rank], todo[1], lengths, cfg.infer.max_batch_tokens,
                          cfg.infer.max_batch_size, time_left=lambda: limit is None or clock.now() < limit,
                          finished=lambda r: processes.shard_file(folder, r).is_file())
    mine, theirs, report = budget.run_passes(
        struck, work, n, own_rows, tta, deadline, clock, desc="predict" + where, known=(plain, swapped),
        claims=budget.Claims(shared / "claims" if shared is not None else None), saved=saved, rank=rank, then=then)
    saved(mine, theirs, report)
    print(f"budget{where}: {report.describe()}", flush=True)
    ran = [np.asarray(r, dtype=np.int64) for r in report.ran]
    share = (ran[0], mine[ran[0]], ran[1], theirs[ran[1]] if tta else None, report)
    # the passes stop FINISH_RESERVE_S before the deadline: the other ranks' shares are due by then
    parts = processes.collect_shards(share, shards, cpu, deadline)
    if parts is None:
        return None
    reports = []
    for part in parts:
        if part is None:  # a rank that never wrote: its rows stay NaN, filled in like rows the budget left out
            continue
        plain_rows, plain_logits, swapped_rows, swapped_logits, part_report = part
        plain[plain_rows] = plain_logits
        if tta:
            swapped[swapped_rows] = swapped_logits
        reports.append(part_report)
    return plain, swapped, reports


def known_logits(rows: int, classes: int, tta: bool, known_plain, progress_dir, of: str, own: str | Path | None,
                 main: bool):
    """(plain, swapped or None): the logits already known (NaN elsewhere): `known_plain`, then what earlier calls
    kept in `progress_dir` (the main process says how much)."""
    plain = np.full((rows, classes), np.nan, dtype=np.float32)
    swapped = np.full((rows, classes), np.nan, dtype=np.float32) if tta else None
    if known_plain is not None:
        plain[:] = known_plain
    if progress_dir is None:
        return plain, swapped
    kept_plain, kept_swapped, used, other = progress.kept(progress_dir, of, rows, classes, tta, skip=own)
    fill = ~np.isfinite(plain).all(axis=1) & np.isfinite(kept_plain).all(axis=1)
    plain[fill] = kept_plain[fill]
    if main:
        line = (f"progress: {int(fill.sum())} rows of the plain order"
                + (f" and {int(np.isfinite(kept_swapped).all(axis=1).sum())} of the swapped order" if tta else "")
                + f" kept by earlier calls in {progress_dir} ({used} file(s))")
        print(line + (f"; {other} file(s) there are of other rows or another run, or damaged: not read" if other
                      else ""), flush=True)
    if tta:
        swapped[:] = kept_swapped
    return plain, swapped


def dealt_batches(cfg: Config, lengths: list[int], rows: list[int], view: int, owner: int) -> list[budget.Batch]:
    """The sorted batches (longest first) of `rows`, in one order, dealt to process `owner`."""
    own = [lengths[i] for i in rows]
    batches = [[rows[j] for j in b] for b in sorted_batches(own, cfg.infer.max_batch_tokens, cfg.infer.max_batch_size)]
    costs = [len(b) * max(lengths[i] for i in b) for b in batches]
    return budget.batches_of(view, batches, costs, owner)
