"""The plain and swapped passes over this process's share of the rows (one process per GPU under `accelerate
launch`), within the deadline, each share written to its own file and merged by the main process."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from arena import model as model_mod
from arena import processes
from arena.budget import inference as budget
from arena.config import Config
from arena.inference.batching import logits_for_batches, model_device, sorted_batches
from arena.layout import RunFolder

View = tuple[list[list[int]], "np.ndarray | None"]  # token ids and head features of every row


def logits_for_views(run: RunFolder, cfg: Config, base_model: str | None, views: list[View], pad_id: int,
                     deadline: float | None = None, shards: str | Path | None = None,
                     known_plain: np.ndarray | None = None):
    """(plain logits, swapped logits or None, one budget.PassReport per process) of every row on the main process
    (None on the others); NaN where a pass did not reach a row. Under `accelerate launch` each process loads its
    own copy of the model (on its GPU, or the CPU) and predicts its share of the rows, dealt so that every process
    gets the same number of tokens, within the deadline (budget.run_passes); it writes its share to its own file
    in `shards` and the main process merges them (processes.collect_shards: no collective that could time out
    while one GPU is slower). One process predicts every row. `known_plain`: every row's plain logits, predicted
    by an earlier call (then only the swapped order runs)."""

    cpu = model_mod.device_for(cfg) == "cpu"
    procs = processes.state(cpu)
    n = len(views[0][0])
    rows = processes.deal_by_tokens([len(x) for x in views[0][0]], procs.num_processes)[procs.process_index]
    if deadline is not None and time.time() >= deadline - budget.FINISH_RESERVE_S:
        # no batch can run (run_passes stops before the first): no model to load, every row takes the prior
        print(f"WARNING: the deadline passed {time.time() - deadline:.0f} s before prediction began: NO row is "
              f"predicted, every row takes the run's class prior", file=sys.stderr, flush=True)
        model, device = None, "cpu"
    else:
        model, _, _ = model_mod.load_trained(cfg, run, base_model, cfg.infer.quantization)
        model.eval()
        device = model_device(model)
    local = [([ids[i] for i in rows], None if features is None else features[rows]) for ids, features in views]

    def forward(view: int, batch: list[int]) -> np.ndarray:
        ids, features = local[view]
        return logits_for_batches(model, ids, pad_id, device, [batch], features)[batch]

    lengths = [len(x) for x in local[0][0]]
    batches = sorted_batches(lengths, cfg.infer.max_batch_tokens, cfg.infer.max_batch_size)
    costs = [len(b) * max(lengths[i] for i in b) for b in batches]
    where = f" (process {procs.process_index})" if procs.num_processes > 1 else ""
    plain, swapped, report = budget.run_passes(forward, batches, costs, len(rows), len(views) > 1, deadline,
                                               desc="predict" + where,
                                               known_plain=None if known_plain is None else known_plain[rows])
    print(f"budget{where}: {report.describe()}", flush=True)
    # the passes stop FINISH_RESERVE_S before the deadline: the other ranks' shards are due by then
    parts = processes.collect_shards((rows, plain, swapped, report), shards, cpu, deadline)
    if parts is None:
        return None
    whole = [np.full((n, 3), np.nan, dtype=np.float32) for _ in views]
    reports = []
    for part in parts:
        if part is None:  # a rank that never wrote: its rows stay NaN, filled in like rows the budget left out
            continue
        shard, *pieces, shard_report = part
        for target, piece in zip(whole, pieces):
            target[shard] = piece
        reports.append(shard_report)
    return whole[0], (whole[1] if len(views) > 1 else None), reports
