"""`python -m benchmarks.tta_order [--work DIR] [--run RUN] [--logits FILE]`: which rows swap TTA should cover when
the time allows only some (infer.tta_order): the default model (trained as `make bench` trains it, on the same
split of the shared data, unless --run gives one) predicts the held-out rows in both orders, then each order of the
swapped pass is scored at equal budgets: the same share of rows, and the same share of the swapped pass's padded
tokens (its time). Prints a table and writes tta_order.json in the work folder; the logits are kept there
(tta_logits.npz) for --logits to score again without a model."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np


def predict_held_out(work: Path, run_dir: str | None, extra: list[str], rows: int | None) -> Path:
    """The held-out rows' plain and swapped logits, their token lengths and labels, in work/tta_logits.npz (`rows`:
    a random sample of that many of them)."""
    from arena import config, data, train
    from arena import model as model_mod
    from arena.inference.batching import logits_for
    from arena.inference.tta import encode_view
    from arena.layout import RunFolder
    from benchmarks.split_config import benchmark_overrides

    overrides = benchmark_overrides(work, extra, name="tta-order")
    eval_df = data.load(work / "eval.csv", require_labels=True)
    seed = config.load(None, overrides).seed
    if rows is not None and rows < len(eval_df):
        eval_df = eval_df.sample(n=rows, random_state=seed).reset_index(drop=True)
    if run_dir is None:
        run_dir = train.train(config.load(None, overrides), origin=config.origin(None, overrides))
    run = RunFolder(run_dir)
    cfg = config.load_run(run)
    model, tokenizer, _ = model_mod.load_trained(cfg, run)
    model.eval()
    scaler = model_mod.read_head(run).get("feature_scaler")
    device = model_mod.model_device(model)
    logits = []
    for swap in (False, True):
        ids, features = encode_view(tokenizer, eval_df, cfg, cfg.infer.max_length, scaler, swap=swap)
        logits.append(logits_for(model, ids, tokenizer.pad_token_id, cfg, device, features, desc=f"swap={swap}"))
    path = work / "tta_logits.npz"
    np.savez(path, plain=logits[0], swapped=logits[1], lengths=np.array([len(x) for x in ids]),
             truth=data.label_matrix(eval_df), run=str(run.root), max_batch_tokens=cfg.infer.max_batch_tokens,
             max_batch_size=cfg.infer.max_batch_size)
    return path


def covered_at(order: str, share: float, by: str, top, lengths, max_batch_tokens: int, max_batch_size: int):
    """Rows the swapped pass covers in `order` when its budget is `share` of the rows (`by` rows) or of the whole
    swapped pass's padded tokens (`by` tokens), with the batches arena forms for that order."""
    from arena.inference.batching import sorted_batches
    from arena.inference.uncertainty import uncertain_batches
    from benchmarks import spending

    if by == "rows":
        return spending.covered(order, share, top, lengths)
    if order == "uncertain":
        batches = [list(b.rows) for b in uncertain_batches(list(range(len(lengths))), top, lengths, max_batch_tokens,
                                                           max_batch_size, 0)]
    else:
        batches = list(reversed(sorted_batches(lengths, max_batch_tokens, max_batch_size)))
    costs = [len(b) * max(lengths[i] for i in b) for b in batches]
    budget, spent, rows = share * sum(costs), 0.0, []
    for batch, cost in zip(batches, costs):
        if spent + cost > budget:
            break
        spent += cost
        rows += batch
    return np.array(rows, dtype=int)


def score(path: Path) -> dict:
    from arena import metrics
    from arena.inference.uncertainty import certainty
    from benchmarks import spending

    kept = np.load(path)
    plain, swapped, truth, lengths = kept["plain"], kept["swapped"], kept["truth"], kept["lengths"].tolist()
    limits = int(kept["max_batch_tokens"]), int(kept["max_batch_size"])
    top = certainty(plain)

    def result(rows):
        probs = spending.with_swapped(plain, swapped, np.asarray(rows, dtype=int), "prob")
        return {"rows": len(rows), "log_loss": round(metrics.log_loss(truth, probs), 4),
                "accuracy": round(metrics.accuracy(truth, probs), 4)}

    out = {"rows": len(plain), "run": str(kept["run"]), "plain only": result([]),
           "every row": result(list(range(len(plain))))}
    for by in ("rows", "tokens"):
        for share in spending.SHARES:
            for order in ("shortest", "uncertain"):
                out[f"{order}, {share:.0%} of the {by}"] = result(covered_at(order, share, by, top, lengths, *limits))
    return out


def main(argv: list[str] | None = None) -> int:
    from arena.cli import OFFLINE_ENV

    for name, value in OFFLINE_ENV.items():
        os.environ.setdefault(name, value)
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tta_order", description=__doc__.split("\n")[0])
    parser.add_argument("--work", default="bench/tta-order", help="the split, the run and the results")
    parser.add_argument("--run", default=None, help="a trained run to predict with (default: train one)")
    parser.add_argument("--logits", default=None, help="score a tta_logits.npz again, no model")
    parser.add_argument("--rows", type=int, default=None, help="predict a random sample of this many held-out rows")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override of the trained model (as `arena train --set`)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    path = Path(args.logits) if args.logits else predict_held_out(work, args.run, args.overrides, args.rows)
    results = score(path)
    (work / "tta_order.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    print(f"{results['rows']} held-out rows, run {results['run']}")
    print("| swapped rows | rows | log loss | accuracy |\n|---|---|---|---|")
    for name, r in results.items():
        if isinstance(r, dict):
            print(f"| {name} | {r['rows']} | {r['log_loss']:.4f} | {r['accuracy']:.4f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
