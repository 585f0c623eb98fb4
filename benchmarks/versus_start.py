"""`python -m benchmarks.versus_start --run RUN --data HELD_OUT.csv`: does a trained run beat its own start on rows
it never saw? The start is the model before its first step: the head's length regression, fit on the run's own
training rows as `arena train` fits it, and a zero adapter. Prints (and with --out writes as JSON) the held-out log
loss of the run and of its start, plain and with swap TTA, and the per-row difference (run minus start) with its
standard error and verdict, as `make bench` reports it for the default (an `arena sweep` point, for instance)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np


def measure(run_dir: Path, held_out: Path, seed: int | None = None) -> dict:
    from arena import config, data, metrics, predict, train
    from arena.inference.tta import probabilities
    from arena.layout import RunFolder
    from benchmarks import baselines
    from benchmarks.variants import versus_default

    run = RunFolder(run_dir)
    cfg = config.load_run(run)
    seed = cfg.seed if seed is None else seed
    start = baselines.fit_head_init(train.prepare_data(cfg).train, seed)
    df = data.load(held_out, require_labels=True)
    y, ids = data.label_matrix(df), df["id"].astype(str).tolist()
    out = {"run": str(run.root), "held_out": str(held_out), "rows": len(df)}
    # one prediction of both orders, its logits kept: the model's own probabilities, as `make bench` scores them
    with tempfile.TemporaryDirectory(prefix="versus-start-") as tmp:  # nothing written into the run folder
        kept = Path(tmp) / "logits.npz"
        predict.predict_file(run.root, held_out, Path(tmp) / "predictions.csv", tta=True, calibrate=False,
                             logits_file=kept)
        with np.load(kept) as logits:
            assert logits["ids"].tolist() == ids
            plain, swapped = logits["plain"], logits["swapped"]
    with_tta = {}
    for tta in (False, True):
        probs = probabilities(plain, swapped if tta else None, cfg.infer.tta_average)[0]
        first = baselines.head_init_probs(start, df, tta=tta)
        with_tta["tta" if tta else "plain"] = {"log_loss": metrics.log_loss(y, probs),
                                               "start_log_loss": metrics.log_loss(y, first),
                                               "versus_start": versus_default(y, first, probs)}
    return {**out, **with_tta}


def main(argv: list[str] | None = None) -> int:
    from arena.cli import OFFLINE_ENV

    for name, value in OFFLINE_ENV.items():
        os.environ.setdefault(name, value)
    parser = argparse.ArgumentParser(prog="python -m benchmarks.versus_start", description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True, help="a trained run folder")
    parser.add_argument("--data", required=True, help="labelled rows the run never trained on (bench's eval.csv)")
    parser.add_argument("--out", default=None, help="write the result here as JSON")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    result = measure(Path(args.run), Path(args.data))
    for order in ("plain", "tta"):
        r = result[order]
        v = r["versus_start"]
        print(f"{order}: run {r['log_loss']:.4f}, its start {r['start_log_loss']:.4f}; run minus start "
              f"{v['mean']:+.4f} ± {v['se']:.4f} over {result['rows']} rows: {v['verdict']}")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1, default=float) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
