"""Inference speed of the trained model: sorted vs fixed padding, padding by window, swap TTA cost, quantization."""

from __future__ import annotations

import gc
import statistics
import time
import warnings
from functools import partial

import numpy as np

from arena import config, data, metrics, predict
from arena import model as model_mod
from arena.layout import RunFolder
from benchmarks.baselines import qualname

QUANTIZATIONS = ("nf4", "int8", "none")
# Padding counted by window length: batches hold at most max(infer.max_batch_tokens, this x max_length) tokens.
ROWS_AT_MAX_LENGTH = 4


def fixed_batches(n: int, batch_size: int) -> list[list[int]]:
    """Rows in input order, `batch_size` at a time (no sorting)."""
    return [list(range(s, min(s + batch_size, n))) for s in range(0, n, batch_size)]


def fixed_padding_logits(model, input_ids: list[list[int]], pad_token_id: int, max_length: int, batch_size: int,
                         device: str, features: np.ndarray | None = None) -> np.ndarray:
    """Logits (n, 3) with every row padded to max_length, in input order: what inference costs without
    sorted dynamic batching."""
    return predict.logits_for_batches(model, input_ids, pad_token_id, device, fixed_batches(len(input_ids), batch_size),
                                      features, pad_to=max_length, desc=f"bench fixed {max_length}")


def timed(fn, repeats: int, warmup=None) -> dict:
    """Run `warmup` once (untimed) then `fn` `repeats` times; median and all wall times in seconds, and the
    last result under "result" (dropped by `numbers`)."""
    if warmup is not None:
        warmup()
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "times_s": times, "result": result}


def numbers(t: dict) -> dict:
    """A `timed` result without what it returned: results.json keeps numbers only."""
    return {k: v for k, v in t.items() if k != "result"}


def sorted_vs_fixed(model, ids: list[list[int]], feats, pad: int, cfg, repeats: int, device: str,
                    log) -> tuple[dict, np.ndarray]:
    """Sorted dynamic batching (`predict.logits_for` under cfg.infer) vs every row padded to cfg.infer.max_length
    with the same token budget per batch, timed on the same rows. Returns (timings, the sorted run's logits)."""
    length = cfg.infer.max_length
    lengths = [len(x) for x in ids]
    batches = predict.sorted_batches(lengths, cfg.infer.max_batch_tokens, cfg.infer.max_batch_size)
    fixed_bs = max(1, min(cfg.infer.max_batch_size, cfg.infer.max_batch_tokens // length))
    log(f"speed: sorted dynamic batching vs fixed padding to {length} on {len(ids)} rows, {repeats} repeats")

    def sorted_run():
        return predict.logits_for(model, ids, pad, cfg, device, feats, desc=f"bench sorted {length}")

    # Warm-ups: CPU kernels get faster after the first call with a new batch shape, and sorted batches have
    # several shapes, so one untimed pass over all of them; fixed padding has one shape.
    sorted_t = timed(sorted_run, repeats, sorted_run)
    fixed_t = timed(lambda: fixed_padding_logits(model, ids, pad, length, fixed_bs, device, feats), repeats,
                    lambda: fixed_padding_logits(model, ids[:fixed_bs], pad, length, fixed_bs, device, feats))
    return {"max_length": length, "max_batch_tokens": cfg.infer.max_batch_tokens,
            "max_batch_size": cfg.infer.max_batch_size, "fixed_batch_size": fixed_bs,
            "sorted_batch_sizes": [len(b) for b in batches],
            "padding": predict.padding_stats(lengths, batches, length),
            "max_abs_logit_diff_sorted_vs_fixed": float(np.abs(sorted_t["result"] - fixed_t["result"]).max()),
            "sorted": numbers(sorted_t), "fixed": numbers(fixed_t)}, sorted_t["result"]


def padding_by_length(tokenizer, eval_df, cfg, lengths: list[int]) -> list[dict]:
    """Token counts only (not timed): the held-out rows' padding, sorted vs fixed, at each window length."""
    out = []
    for length in lengths:
        lens = [len(x) for x in predict.encode_view(tokenizer, eval_df, cfg, length, None)[0]]
        tokens = max(cfg.infer.max_batch_tokens, ROWS_AT_MAX_LENGTH * length)
        st = predict.padding_stats(lens, predict.sorted_batches(lens, tokens, cfg.infer.max_batch_size), length)
        out.append({"max_length": length, "max_batch_tokens": tokens, "max_batch_size": cfg.infer.max_batch_size,
                    "truncated_share": float(np.mean([n >= length for n in lens])),
                    "median_tokens": float(np.median(lens)), **st})
    return out


def quantized_run(cfg, run: RunFolder, q: str, ids, feats, pad: int, repeats: int, y, reference, log) -> dict:
    """The same adapter over the base model quantized as `q`: load time, timed sorted batching, log loss on the
    timed rows and how far its probabilities are from the reference's; an error is reported, not raised."""
    log(f"speed: quantization {q} at inference ({len(ids)} rows, {repeats} repeats)")
    gc.collect()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="MatMul8bitLt")  # bnb int8 on CPU: once per layer and call
            t0 = time.perf_counter()
            m, _, _ = model_mod.load_trained(cfg, run, quantization=q)
            load_s = time.perf_counter() - t0
            run_q = partial(predict.logits_for, m, ids, pad, cfg, predict.model_device(m), feats, desc=f"bench {q}")
            t = timed(run_q, repeats, run_q)
            probs = predict.softmax(t["result"])
            del run_q, m
    except Exception as exc:  # noqa: BLE001 - report what failed instead of losing the whole benchmark
        error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
        log(f"speed: {q} failed: {error}")
        return {"error": error}
    finally:
        gc.collect()
    return {"load_s": load_s, **numbers(t), "log_loss": metrics.log_loss(y, probs),
            "max_prob_diff_vs_trained": float(np.abs(probs - reference).max())}


def measure(model, tokenizer, cfg, run: RunFolder, eval_df, scaler, plan, lengths: list[int], log,
            load_s: float) -> dict:
    """Every speed measurement on a seeded sample of the held-out rows, on whatever device the model is on."""
    n = min(plan.speed_rows, len(eval_df))
    rows = eval_df.sample(n=n, random_state=cfg.seed).reset_index(drop=True)
    max_length = cfg.infer.max_length
    device = predict.model_device(model)
    pad = tokenizer.pad_token_id
    ids, feats = predict.encode_view(tokenizer, rows, cfg, max_length, scaler)
    all_lens = [len(x) for x in predict.encode_view(tokenizer, eval_df, cfg, max_length, None)[0]]
    stats_all = predict.padding_stats(
        all_lens, predict.sorted_batches(all_lens, cfg.infer.max_batch_tokens, cfg.infer.max_batch_size), max_length)

    main, plain_logits = sorted_vs_fixed(model, ids, feats, pad, cfg, plan.repeats, device, log)
    long_cmp = None
    if plan.long_length and plan.long_length != max_length:
        length = plan.long_length
        long_cfg = config.replace(cfg, {"infer.max_length": length,
                                        "infer.max_batch_tokens": max(cfg.infer.max_batch_tokens, length)})
        long_ids, long_feats = predict.encode_view(tokenizer, rows, long_cfg, length, scaler)
        long_cmp, _ = sorted_vs_fixed(model, long_ids, long_feats, pad, long_cfg, plan.repeats, device, log)

    log(f"speed: swap TTA cost on {n} rows")
    swapped_ids, swapped_feats = predict.encode_view(tokenizer, rows, cfg, max_length, scaler, swap=True)

    def tta_run():  # predict_frame's two passes on the pre-tokenised rows; the plain pass alone is main["sorted"]
        plain = predict.logits_for(model, ids, pad, cfg, device, feats, desc="bench A/B")
        swapped = predict.logits_for(model, swapped_ids, pad, cfg, device, swapped_feats, desc="bench B/A")
        return predict.combine_tta(plain, swapped, cfg.infer.tta_average)

    tta_t = timed(tta_run, plan.repeats)

    y = data.label_matrix(rows)
    trained_probs = predict.softmax(plain_logits)
    trained = cfg.model.quantization
    quant = {trained: {"load_s": load_s, **main["sorted"], "log_loss": metrics.log_loss(y, trained_probs),
                       "max_prob_diff_vs_trained": 0.0}}
    for q in (q for q in QUANTIZATIONS if q != trained):
        quant[q] = quantized_run(cfg, run, q, ids, feats, pad, plan.repeats, y, trained_probs, log)
    return {
        "device": device, "rows": n, "repeats": plan.repeats, "warmup_passes": 1, "held_out_rows": len(eval_df),
        **main, "padding_all_held_out": stats_all,
        "truncated_share_all_held_out": float(np.mean([n >= max_length for n in all_lens])),
        "padding_by_length": padding_by_length(tokenizer, eval_df, cfg, lengths),
        "padding_budget": {"floor_tokens": cfg.infer.max_batch_tokens, "rows_at_max_length": ROWS_AT_MAX_LENGTH,
                           "max_batch_size": cfg.infer.max_batch_size},
        "long": long_cmp, "plain": main["sorted"], "tta": numbers(tta_t), "tta_average": cfg.infer.tta_average,
        "trained_quantization": trained, "quantization": quant,
        "functions": {"sorted": qualname(predict.logits_for), "fixed": qualname(fixed_padding_logits),
                      "tta": qualname(predict.predict_frame), "speed": qualname(measure)},
    }
