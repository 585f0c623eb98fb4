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
from pathlib import Path

import pandas as pd


def measure(run_dir: Path, held_out: Path, seed: int | None = None) -> dict:
    from arena import config, data, metrics, predict, train
    from arena.layout import RunFolder
    from arena.task import THREE_WAY
    from benchmarks import baselines
    from benchmarks.variants import versus_default

    run = RunFolder(run_dir)
    cfg = config.load_run(run)
    seed = cfg.seed if seed is None else seed
    start = baselines.fit_head_init(train.prepare_data(cfg).train, seed)
    df = data.load(held_out, require_labels=True)
    y, ids = data.label_matrix(df), df["id"].astype(str).tolist()
    out = {"run": str(run.root), "held_out": str(held_out), "rows": len(df)}
    with_tta = {}
    for tta in (False, True):
        path = predict.predict_file(run.root, held_out, Path(run.root) / f"held-out-{'tta' if tta else 'plain'}.csv",
                                    tta=tta, calibrate=False)
        probs = pd.read_csv(path, dtype={"id": str}).set_index("id").loc[ids, THREE_WAY.label_columns].to_numpy()
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
