"""A second model on the hardest rows: an ensemble member may be gated (`arena package --gate 2=top:35%`), scoring
only the rows where the blend of the members before it is least certain (the k% with the lowest top probability, or
those whose top probability is below a threshold), as the WSDM Cup 2025 winners ran a second or larger model. A row
a member did not score (outside its gate, not reached by the deadline, a member that failed) takes the blend of the
members that scored it: each row's blend is the weighted average of its scoring members, weights renormalised. The
weights are fit on held-out predictions gated the same way."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from arena import metrics
from arena.inference.uncertainty import certainty

FLAG = "--gate"
SPEC = re.compile(r"^(\d+)=(top:(\d+(?:\.\d+)?)%|below:(\d*\.?\d+))$")


@dataclass(frozen=True)
class Gate:
    """Rows of the members before it that a gated member scores: the `top` share (0-1] of rows least certain, or
    the rows whose top probability is `below` a threshold."""
    top: float | None = None
    below: float | None = None

    def describe(self) -> str:
        return f"the {self.top:.0%} least certain rows" if self.top is not None else \
            f"rows whose top probability is below {self.below:g}"

    def to_json(self) -> dict:
        return {"top": self.top} if self.top is not None else {"below": self.below}

    def rows(self, before: np.ndarray) -> np.ndarray:
        """A mask of the rows this gate admits, from the blend `before` of the members before it (NaN: no
        prediction: admitted first)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            top = certainty(np.log(np.clip(before, 1e-12, None)))
        unscored = ~np.isfinite(before).all(axis=1)  # no member before it scored them: this one must
        if self.below is not None:
            return (top < self.below) | unscored
        chosen = np.zeros(len(top), dtype=bool)
        chosen[np.argsort(top, kind="stable")[:math.ceil(self.top * len(top))]] = True
        return chosen | unscored


def of_json(stored: dict | None) -> Gate | None:
    if not stored:
        return None
    return Gate(top=stored.get("top"), below=stored.get("below"))


def parse_gates(specs: list[str] | None, runs: int) -> tuple[list[Gate | None], list[str]]:
    """(one Gate or None per --run, problems) of `--gate MEMBER=top:K%` / `--gate MEMBER=below:P` (MEMBER: the
    --run's position, from 1; the first has no members before it)."""
    gates: list[Gate | None] = [None] * runs
    problems = []
    for spec in specs or []:
        match = SPEC.match(spec.strip())
        if not match:
            problems.append(f"{FLAG} {spec}: expected MEMBER=top:K% (the K% least certain rows of the members before "
                            f"it, e.g. 2=top:35%) or MEMBER=below:P (rows whose top probability is below P, e.g. "
                            f"2=below:0.6); MEMBER is the --run's position, from 1")
            continue
        member, top, below = int(match.group(1)), match.group(3), match.group(4)
        if not 2 <= member <= runs:
            problems.append(f"{FLAG} {spec}: member {member} is not one of --run 2 to {runs} (the first --run scores "
                            f"every row: a gate picks rows from the blend of the members before it)")
            continue
        if gates[member - 1] is not None:
            problems.append(f"{FLAG} {spec}: member {member} is gated twice")
            continue
        if top is not None and not 0 < float(top) <= 100:
            problems.append(f"{FLAG} {spec}: K must be in (0, 100]")
            continue
        if below is not None and not 0 < float(below) <= 1:
            problems.append(f"{FLAG} {spec}: P must be in (0, 1]")
            continue
        gates[member - 1] = Gate(top=float(top) / 100) if top is not None else Gate(below=float(below))
    return gates, problems


def blend(probs: list[np.ndarray], weights, scored: list[np.ndarray] | None = None) -> np.ndarray:
    """Each row's weighted average of the members that `scored` it (masks; None: every member every row), the
    weights renormalised over those members; NaN where none did."""
    n = len(probs[0])
    scored = scored if scored is not None else [np.ones(n, dtype=bool)] * len(probs)
    total, mass = np.zeros(probs[0].shape), np.zeros(n)
    for p, w, s in zip(probs, weights, scored):
        total[s] += w * p[s]
        mass[s] += w
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(mass[:, None] > 0, total / mass[:, None], np.nan)


def gated_scored(probs: list[np.ndarray], weights, gates: list[Gate | None]) -> list[np.ndarray]:
    """Which rows each member scores when every member has a prediction of every row (held-out predictions): a
    gated member the rows its gate admits from the blend of the members before it."""
    scored = []
    for k, (p, gate) in enumerate(zip(probs, gates)):
        scored.append(np.ones(len(p), dtype=bool) if gate is None or k == 0 else
                      gate.rows(blend(probs[:k], weights[:k], scored)))
    return scored


def fit_gated_weights(probs: list[np.ndarray], truth: np.ndarray, gates: list[Gate | None]) -> np.ndarray:
    """Non-negative weights summing to 1 minimising the held-out log loss of the gated blend (the gates applied to
    the earlier members' predictions, as the kernel applies them): a gated member's weight is fit on the rows its
    gate admits, where it is blended with the members before it."""
    from scipy.optimize import minimize

    def weights_of(theta):
        return metrics.softmax(theta[None, :])[0]

    def loss(theta):
        w = weights_of(theta)
        return metrics.log_loss(truth, blend(probs, w, gated_scored(probs, w, gates)))

    best = minimize(loss, np.zeros(len(probs)), method="Nelder-Mead", options={"xatol": 1e-4, "fatol": 1e-6})
    return weights_of(best.x)
