"""Swap TTA and the probabilities a submission holds: softmax, the plain and swapped orders combined, rows without
finite logits filled in (the run's class prior), identical responses set to a tie."""

from __future__ import annotations

import numpy as np
import pandas as pd

from arena import data, prompts
from arena.config import Config
from arena.inference.batching import logits_for, model_device
from arena.metrics import softmax
from arena.task import swap_classes


def combine_tta(logits: np.ndarray, swapped_logits: np.ndarray, how: str) -> np.ndarray:
    back = swap_classes(swapped_logits)
    if how == "logit":
        return softmax((logits + back) / 2)
    return (softmax(logits) + softmax(back)) / 2


def encode_view(tokenizer, df: pd.DataFrame, cfg: Config, max_length: int, feature_scaler: dict | None,
                swap: bool = False) -> tuple[list[list[int]], np.ndarray | None]:
    """Token ids and head features of the rows in A/B order, or in B/A order with swap=True."""
    ids = prompts.encode_frame(tokenizer, df, cfg.prompt, cfg.model.family, swap=swap, max_length=max_length)
    features = data.head_features(df, feature_scaler, swap=swap) if feature_scaler else None
    return ids, features


def predict_frame(model, tokenizer, df: pd.DataFrame, cfg: Config, rt, tta: bool, max_length: int,
                  feature_scaler: dict | None = None, plain_logits: np.ndarray | None = None) -> dict:
    """Probabilities for a DataFrame of rows; with TTA also the plain and swapped-back parts.
    `plain_logits`: the rows' logits in the A/B order when they are already known (not predicted again)."""
    model.eval()
    device = model_device(model)
    if plain_logits is None:
        ids, features = encode_view(tokenizer, df, cfg, max_length, feature_scaler)
        logits = logits_for(model, ids, tokenizer.pad_token_id, cfg, device, features, desc="predict A/B")
    else:
        logits = np.asarray(plain_logits, dtype=np.float32)
    result = {"logits": logits, "probs_plain": softmax(logits)}
    if tta:
        ids, features = encode_view(tokenizer, df, cfg, max_length, feature_scaler, swap=True)
        swapped = logits_for(model, ids, tokenizer.pad_token_id, cfg, device, features, desc="predict B/A")
        result["logits_swapped"], result["probs_swapped"] = swapped, softmax(swap_classes(swapped))
        result["probs"] = combine_tta(logits, swapped, cfg.infer.tta_average)
    else:
        result["probs"] = result["probs_plain"]
    return result


def probabilities(plain: np.ndarray, swapped: np.ndarray | None, how: str,
                  prior=None) -> tuple[np.ndarray, dict]:
    """Probabilities of every row from its plain and swapped logits (NaN: not predicted), and the counts of each
    case. A row with finite logits in both orders averages them (swap TTA); one finite order alone is taken as
    it is; a row with neither (non-finite logits, or a pass that never reached it) takes `prior`, the run's
    training class prior (head.json), else (runs saved before it was stored) the mean probability of the rows that
    have one, else uniform: the submission is always valid."""
    plain_ok = np.isfinite(plain).all(axis=1)
    swapped_ok = np.isfinite(swapped).all(axis=1) if swapped is not None else np.zeros(len(plain), dtype=bool)
    probs = np.full(plain.shape, np.nan)
    both, only_plain, only_swapped = plain_ok & swapped_ok, plain_ok & ~swapped_ok, swapped_ok & ~plain_ok
    if both.any():
        probs[both] = combine_tta(plain[both], swapped[both], how)
    probs[only_plain] = softmax(plain[only_plain])
    if only_swapped.any():
        probs[only_swapped] = softmax(swap_classes(swapped[only_swapped]))
    neither = ~(plain_ok | swapped_ok)
    if prior is not None:
        fallback = np.asarray(prior, dtype=float) / np.sum(prior)
    else:
        fallback = probs[~neither].mean(axis=0) if (~neither).any() else np.full(plain.shape[1], 1 / plain.shape[1])
    probs[neither] = fallback
    return probs, {"tta": int(both.sum()), "plain_only": int(only_plain.sum()), "swapped_only": int(only_swapped.sum()),
                   "prior": int(neither.sum())}


def identical_responses(df: pd.DataFrame) -> np.ndarray:
    """Rows whose two responses are the same text after whitespace normalisation (every turn, in order)."""
    def normal(turns) -> str:
        return " ".join("\n".join("" if t is None else str(t) for t in turns).split())

    return np.array([normal(a) == normal(b) for a, b in zip(df["response_a"], df["response_b"])], dtype=bool)


def set_identical_ties(probs: np.ndarray, df: pd.DataFrame, tie: float | None) -> tuple[np.ndarray, int]:
    """`infer.identical_tie`: rows with identical responses get P(tie) = `tie`, the rest split evenly between A
    and B (None: left as predicted); in a two-way task, with no tie, they get 1/2 each. Returns the probabilities and
    the number of rows set."""
    same = identical_responses(df)
    if tie is None or not same.any():
        return probs, 0
    probs = probs.copy()
    probs[same] = [(1 - tie) / 2, (1 - tie) / 2, tie] if probs.shape[1] == 3 else [0.5, 0.5]
    return probs, int(same.sum())
