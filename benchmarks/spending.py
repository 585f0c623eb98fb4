"""Where the inference time goes, at equal budgets, from predictions already made (no model runs here): swap TTA on
the least certain rows first against the shortest rows first (`infer.tta_order`), and a second model gated to the
least certain rows (`arena package --gate`) against the same second model on as many rows not chosen by doubt, and
against the full ensemble. Each comparison is a paired per-row log loss difference with its standard error."""

from __future__ import annotations

import numpy as np

from arena.inference.tta import probabilities
from arena.inference.uncertainty import certainty, least_certain_first
from arena.kaggle.gates import Gate, blend
from benchmarks.variants import versus_default

# Shares of the rows the swapped pass (or the gated member) covers: the WSDM Cup 2025 1st place swapped 33%.
SHARES = (0.33, 0.66)


def covered(order: str, share: float, top: np.ndarray, lengths: list[int]) -> np.ndarray:
    """The rows a swapped pass in `order` covers when its budget is `share` of the rows."""
    n = len(lengths)
    ranked = least_certain_first(range(n), top) if order == "uncertain" else sorted(range(n), key=lambda i: lengths[i])
    return np.array(ranked[:round(share * n)], dtype=int)


def with_swapped(plain: np.ndarray, swapped: np.ndarray, rows: np.ndarray, how: str) -> np.ndarray:
    """Probabilities when only `rows` have their swapped logits (the others keep their plain prediction)."""
    partial = np.full_like(swapped, np.nan)
    partial[rows] = swapped[rows]
    return probabilities(plain, partial, how)[0]


def tta_orders(y: np.ndarray, plain: np.ndarray, swapped: np.ndarray, lengths: list[int], how: str) -> dict:
    """At each share, uncertain-first against shortest-first (today's default order) on the same rows; with the
    plain order alone and swap TTA on every row as the two ends."""
    top = certainty(plain)
    out = {"plain_only": with_swapped(plain, swapped, np.array([], dtype=int), how),
           "every_row": with_swapped(plain, swapped, np.arange(len(plain)), how)}
    shares = []
    for share in SHARES:
        probs = {order: with_swapped(plain, swapped, covered(order, share, top, lengths), how)
                 for order in ("shortest", "uncertain")}
        shares.append({"share": share, "rows": round(share * len(plain)),
                       "vs_shortest": versus_default(y, probs["shortest"], probs["uncertain"]),
                       "shortest_vs_plain": versus_default(y, out["plain_only"], probs["shortest"]),
                       "uncertain_vs_plain": versus_default(y, out["plain_only"], probs["uncertain"])})
    return {"shares": shares, "every_row_vs_plain": versus_default(y, out["plain_only"], out["every_row"])}


def gated_member(y: np.ndarray, first: np.ndarray, second: np.ndarray, seed: int,
                 gate_on: np.ndarray | None = None) -> dict:
    """The second model on the least certain share of the first's rows (equal weights where both scored), against
    the second on as many rows drawn at random (the same time, rows not chosen by doubt) and against both models on
    every row (the full ensemble, which costs the second model's whole pass). `gate_on`: the first model's
    probabilities the gate reads (the kernel gates on its plain order, before any swapped pass), else `first`."""
    n = len(first)
    full = (first + second) / 2
    shares = []
    for share in SHARES:
        gate = Gate(top=share).rows(first if gate_on is None else gate_on)
        drawn = np.zeros(n, dtype=bool)
        drawn[np.random.default_rng(seed).choice(n, size=int(gate.sum()), replace=False)] = True
        gated, at_random = (blend([first, second], [0.5, 0.5], [np.ones(n, dtype=bool), rows])
                            for rows in (gate, drawn))
        shares.append({"share": share, "rows": int(gate.sum()),
                       "vs_first": versus_default(y, first, gated),
                       "vs_equal_time": versus_default(y, at_random, gated),
                       "vs_full_ensemble": versus_default(y, full, gated)})
    return {"shares": shares, "full_vs_first": versus_default(y, first, full)}
