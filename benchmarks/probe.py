"""`python -m benchmarks.probe --work DIR [--set KEY=VALUE ...]`: what do the base model's hidden states hold that
the head's length regression lacks, on rows the model never saw?

The default's head starts as a length-feature logistic regression with its hidden-state projection at zero, so
whatever training adds must come from the hidden states. Before any fine-tuning, this asks whether the states as
they are at step 0 already hold it: on the benchmark's split (benchmarks.split_config.benchmark_config, as `make
bench` holds rows out), it reads the last-token hidden states of every training row and every held-out row in both
A/B orders, then fits multinomial logistic regressions (regularisation chosen by cross-validated log loss on the
training rows) on the length features plus the first k principal components of
- `state`: each order's RMS-normalised state, standardised on the training rows (what the head reads), and
- `difference`: the plain order's state minus the swapped order's (antisymmetric in A and B, so the direction every
  row shares, which moves all logits together, cancels),
and scores each against the same regression on the length features alone (the head's start) on the held-out rows,
plain and with swap TTA, with the standard error and verdict `make bench` uses. A probe that cannot beat the start says the
states at this window hold nothing the lengths lack: what training adds must be built by the adapter."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

COMPONENTS = (4, 16, 64)


def states(cfg, work: Path) -> dict[str, np.ndarray]:
    """Hidden states (RMS-normalised), head features and labels of the training rows and the held-out rows, the
    plain orders first, then the swapped ones; kept in work/states.npz (keyed by the config) for the next run."""
    import torch

    from arena import data, train
    from arena.layout import RunFolder
    from benchmarks.head_lr import head_inputs

    cache = work / "states.npz"
    key = json.dumps(cfg.to_dict(), sort_keys=True, default=str)
    if cache.exists():
        with np.load(cache) as kept:
            if str(kept["key"]) == key:
                return {k: kept[k] for k in kept.files if k != "key"}
    torch.manual_seed(cfg.seed)
    split = train.prepare_data(cfg)
    built = train.build(cfg, split)
    trainer = train.make_trainer(cfg, RunFolder(work / "runs" / "unused"), built, split)
    out = {}
    for name, df in (("train", split.train), ("held_out", data.load(work / "eval.csv", require_labels=True))):
        rows = train.encode_rows(built.tokenizer, df, cfg, "paired", built.scaler)
        h = head_inputs(trainer, built, rows).numpy()
        out[f"{name}_h"] = h / np.sqrt((h ** 2).mean(-1, keepdims=True) + 1e-6)
        out[f"{name}_f"], out[f"{name}_y"] = rows.features, rows.labels
    np.savez(cache, key=key, **out)
    return out


def probe_inputs(s: dict[str, np.ndarray], kind: str, k: int) -> dict[str, np.ndarray]:
    """Per split, the regression's inputs for both orders stacked (plain rows, then the same rows swapped): the
    length features and the first k principal components of the states (fit on the training rows)."""
    from sklearn.decomposition import PCA

    z = {}
    for name in ("train", "held_out"):
        h = s[f"{name}_h"]
        if kind == "difference":
            n = len(h) // 2
            h = np.concatenate([h[:n] - h[n:], h[n:] - h[:n]])
        z[name] = h
    mean, std = z["train"].mean(0), z["train"].std(0) + 1e-3
    pca = PCA(k, random_state=0).fit((z["train"] - mean) / std)
    scale = np.sqrt(pca.explained_variance_[0])
    return {name: np.concatenate([s[f"{name}_f"], pca.transform((z[name] - mean) / std) / scale], 1) for name in z}


def fit_probe(x: np.ndarray, y: np.ndarray, seed: int):
    """A multinomial logistic regression of the labels on x, its regularisation chosen by cross-validated log loss
    (5 folds); returns it and a function of x to probabilities of every class (one the rows never show: 0)."""
    from sklearn.linear_model import LogisticRegressionCV

    probe = LogisticRegressionCV(Cs=10, cv=5, scoring="neg_log_loss", max_iter=3000, l1_ratios=(0.0,),
                                 use_legacy_attributes=False, random_state=seed).fit(
        x, y.argmax(1))

    def proba(rows: np.ndarray) -> np.ndarray:
        out = np.zeros((len(rows), y.shape[1]))
        out[:, probe.classes_] = probe.predict_proba(rows)
        return out

    return probe, proba


def both_orders(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(plain-order probabilities, averaged with the swapped order's, classes swapped back) of stacked rows."""
    from arena.task import swap_classes

    n = len(probs) // 2
    return probs[:n], (probs[:n] + swap_classes(probs[n:])) / 2


def measure(s: dict[str, np.ndarray], seed: int, components=COMPONENTS) -> dict:
    from arena import metrics
    from benchmarks.variants import versus_default

    n = len(s["held_out_y"]) // 2
    y = s["held_out_y"][:n]
    start = both_orders(fit_probe(s["train_f"], s["train_y"], seed)[1](s["held_out_f"]))
    out = {"rows": {"train": len(s["train_y"]) // 2, "held_out": n}, "hidden_size": s["train_h"].shape[1],
           "start": {"plain": metrics.log_loss(y, start[0]), "tta": metrics.log_loss(y, start[1])}, "probes": []}
    for kind in ("state", "difference"):
        for k in components:
            x = probe_inputs(s, kind, k)
            probe, proba = fit_probe(x["train"], s["train_y"], seed)
            probs = both_orders(proba(x["held_out"]))
            out["probes"].append({"kind": kind, "components": k, "C": float(np.ravel(probe.C_)[0]), **{
                order: {"log_loss": metrics.log_loss(y, p), "versus_start": versus_default(y, first, p)}
                for order, first, p in zip(("plain", "tta"), start, probs)}})
    return out


def format_table(result: dict) -> str:
    start = result["start"]
    lines = [f"start (length regression): {start['plain']:.4f} plain, {start['tta']:.4f} with swap TTA, on "
             f"{result['rows']['held_out']} held-out rows ({result['rows']['train']} training rows)", "",
             "| probe | components | plain (minus start) | swap TTA (minus start) |", "|---|---|---|---|"]
    for p in result["probes"]:
        cells = [f"{p[o]['log_loss']:.4f} ({p[o]['versus_start']['mean']:+.4f} ± {p[o]['versus_start']['se']:.4f}, "
                 f"{p[o]['versus_start']['verdict']})" for o in ("plain", "tta")]
        lines.append(f"| {p['kind']} | {p['components']} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from arena.cli import OFFLINE_ENV

    for name, value in OFFLINE_ENV.items():
        os.environ.setdefault(name, value)
    parser = argparse.ArgumentParser(prog="python -m benchmarks.probe", description=__doc__.split("\n")[0])
    parser.add_argument("--work", required=True, help="folder for the split, the states and the result")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override beyond the benchmark's data (prompt.max_length=512, model.path=DIR)")
    parser.add_argument("--quick", action="store_true", help="the quick plan's few rows (a smoke run)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    from benchmarks.split_config import benchmark_config

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    cfg = benchmark_config(work, args.set, quick=args.quick, name="probe")
    result = measure(states(cfg, work), cfg.seed, (2,) if args.quick else COMPONENTS)
    result["overrides"] = args.set
    (work / "probe.json").write_text(json.dumps(result, indent=1))
    print(format_table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
