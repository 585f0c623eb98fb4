"""Sorted dynamic batching: rows grouped by length under a token budget, and the forward over those batches
(under autocast at the model's compute dtype), logits back in the input order."""

from __future__ import annotations

import sys

import numpy as np
import torch
from tqdm.auto import tqdm

from arena.config import Config
from arena.model import autocast, compute_dtype_of, model_classes, right_pad
from arena.model import model_device as model_device  # where tta, passes and predict import it from


def sorted_batches(lengths: list[int], max_batch_tokens: int, max_batch_size: int) -> list[list[int]]:
    """Row indices grouped longest-first so each batch pads only to its own longest row, within a token budget."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches, current = [], []
    for i in order:
        longest = lengths[current[0]] if current else lengths[i]
        if current and (len(current) + 1 > max_batch_size or (len(current) + 1) * longest > max_batch_tokens):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def padding_stats(lengths: list[int], batches: list[list[int]], fixed_length: int) -> dict:
    """Token slots processed by these batches vs padding every row to `fixed_length`."""
    real = int(sum(lengths))
    sorted_slots = int(sum(len(b) * max(lengths[i] for i in b) for b in batches))
    fixed_slots = int(len(lengths) * fixed_length)
    return {
        "real_tokens": real,
        "sorted_slots": sorted_slots,
        "fixed_slots": fixed_slots,
        "sorted_padding_fraction": 1 - real / sorted_slots if sorted_slots else 0.0,
        "fixed_padding_fraction": 1 - real / fixed_slots if fixed_slots else 0.0,
        "padded_tokens_fixed_over_sorted": (fixed_slots - real) / max(sorted_slots - real, 1),
    }


def logits_for(model, input_ids: list[list[int]], pad_token_id: int, cfg: Config, device: str,
               features: np.ndarray | None = None, desc: str = "predict") -> np.ndarray:
    """Logits (n, classes) in the input order; `features` are the head's standardised length features, if it has them."""
    batches = sorted_batches([len(x) for x in input_ids], cfg.infer.max_batch_tokens, cfg.infer.max_batch_size)
    return logits_for_batches(model, input_ids, pad_token_id, device, batches, features, desc=desc)


@torch.inference_mode()
def logits_for_batches(model, input_ids: list[list[int]], pad_token_id: int, device: str, batches: list[list[int]],
                       features: np.ndarray | None = None, pad_to: int | None = None,
                       desc: str = "predict") -> np.ndarray:
    """Logits (n, classes) in the input order, running these batches of row indices; each batch is padded to its
    longest row, or to `pad_to` tokens. On CUDA the forward runs under autocast at the model's compute dtype. Rows
    whose logits are not finite are named on stderr (by position in `input_ids`)."""

    out = np.zeros((len(input_ids), model_classes(model)), dtype=np.float32)
    dtype = compute_dtype_of(model)
    with autocast(device, dtype):
        for batch in tqdm(batches, desc=desc, unit="batch", mininterval=2, disable=len(batches) < 4):
            ids, mask = right_pad([input_ids[i] for i in batch], pad_token_id, pad_to)
            batch_features = None if features is None else torch.from_numpy(features[batch]).to(device)
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), features=batch_features)
            out[batch] = logits.float().cpu().numpy()
    bad = np.flatnonzero(~np.isfinite(out).all(axis=1))
    if len(bad):
        shown = ", ".join(str(i) for i in bad[:20]) + (", ..." if len(bad) > 20 else "")
        print(f"warning: {desc}: {len(bad)} of {len(out)} rows have non-finite logits (rows {shown}): the compute "
              f"dtype {str(dtype).removeprefix('torch.')} overflowed? float16 does on some models: set "
              f"model.compute_dtype=float32 (or bfloat16 where the GPU has it)", file=sys.stderr)
    return out
