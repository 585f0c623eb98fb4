"""The three classes: their column names, the truth kept beside a prediction, the probability-sum tolerance,
and the A<->B swap of the classes."""

from __future__ import annotations

import numpy as np

# Lists, not tuples: pandas reads a tuple as one (multi-index) key.
LABEL_COLUMNS = ["winner_model_a", "winner_model_b", "winner_tie"]
# Validation predictions keep the truth beside each prediction under these names.
TRUE_COLUMNS = [f"true_{c}" for c in LABEL_COLUMNS]
SUBMISSION_COLUMNS = ["id", *LABEL_COLUMNS]

# Labels and predicted probabilities must sum to 1 within this. Files written with three decimals are valid
# (0.333 + 0.333 + 0.333 = 0.999); a row further off is not a rounded probability distribution.
SUM_TOLERANCE = 1e-3

# The class order seen from the other side: A's win is B's win and the reverse; a tie stays a tie. Swapping
# twice is the identity, so the same permutation maps a swapped row's labels forward and its predictions back.
SWAP = (1, 0, 2)


def swap_classes(values: np.ndarray) -> np.ndarray:
    """Class probabilities or logits (..., 3), or class indices (n,), with A and B exchanged."""
    values = np.asarray(values)
    if values.ndim == 1 and np.issubdtype(values.dtype, np.integer):
        return np.asarray(SWAP, dtype=values.dtype)[values]
    return values[..., list(SWAP)]
