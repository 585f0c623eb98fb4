"""One benchmark run: split, train the default model, score baselines and model, time inference, train and score
the variants, run the arena family through the CLI -> results.json."""

from __future__ import annotations

import dataclasses
import gc
import json
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from arena import data, metrics
from arena.errors import UserError
from arena.layout import RunFolder, stamp
from benchmarks import baselines, environment, family, speed, variants
from benchmarks.plan import (
    FULL,
    GENERATED,
    GPU_RECIPE,
    QUICK,
    REPO,
    display_path,
    generated_plan,
    padding_lengths,
    shared_data_dir,
)
from benchmarks.report import MAIN, SCHEMA
from benchmarks.split import build_split, composition

# Methods in the order of the report's table: id -> label.
METHODS = {
    "uniform": "uniform",
    "prior": "class prior",
    "length_lr": "length LR",
    "length_lr_cal": "length LR + calibration",
    "step0": "default model at step 0 (its head's length-LR init, swap-averaged)",
    "model": "default model",
    "model_tta": "default model + swap TTA",
    "model_tta_cal": "default model + swap TTA + calibration",
}


class Progress:
    def __init__(self):
        self.start = time.time()

    def __call__(self, msg: str) -> None:
        print(f"[bench {time.time() - self.start:6.0f}s] {msg}", flush=True)


def work_folder(work: str | Path | None, quick: bool) -> Path:
    """The given work folder, or a new bench/<stamp>[-quick]; an earlier run's folder is never written into."""
    work = Path(work) if work else Path("bench") / (stamp() + ("-quick" if quick else ""))
    if work.exists() and (not work.is_dir() or any(work.iterdir())):
        raise UserError(f"{work}: bench work folder already exists and is not empty; an earlier run is never "
                        "overwritten (pass a new --work or leave it out)")
    work.mkdir(parents=True, exist_ok=True)
    return work


def load_sources(plan, quick: bool) -> tuple[dict[str, pd.DataFrame], object, dict]:
    """(frames by file, the plan they fit, where they came from): ../shared/data, else a generated sample."""
    shared = shared_data_dir()
    if shared is not None:
        frames = {sp.file: data.load(shared / sp.file, require_labels=True) for sp in plan.sources}
        return frames, plan, {"dir": display_path(shared), "labels": "human"}
    df = data.generate_sample(120 if quick else 1200, seed=0)
    return {GENERATED: df}, generated_plan(plan, len(df)), {"dir": None, "labels": "generated"}


NO_SHARED_DATA = ("no ../shared/data beside the repository or the working folder, nor $ARENA_SHARED_DATA (a folder "
                  f"holding {FULL.sources[0].file} and the plan's other files)")


def human_sources(plan) -> tuple[dict[str, pd.DataFrame], object]:
    """The plan's shared-data files, for a measurement whose claims are about real human labels: with none found,
    it stops and says where it looked, instead of measuring on the generated sample as `make bench` may."""
    frames, plan, origin = load_sources(plan, False)
    if origin["labels"] != "human":
        raise SystemExit(f"{NO_SHARED_DATA}: this measurement needs the human-labelled files")
    return frames, plan


def write_split(split, work: Path) -> dict[str, pd.DataFrame]:
    """The training file and the held-out files in the work folder; the held-out sets read back as the model
    will see them (MAIN, then each side set by source)."""
    data.write_csv(split.train, work / "train.csv")
    data.write_csv(split.main_eval, work / "eval.csv")
    paths = {MAIN: work / "eval.csv"}
    for name, df in split.side_eval.items():
        paths[name] = work / f"eval_{name}.csv"
        data.write_csv(df, paths[name])
    return {name: data.load(p, require_labels=True) for name, p in paths.items()}


def base_model_info(cfg) -> dict:
    """The backbone the head reads, from its config alone (weights on the meta device): type, layers, size."""
    import torch
    from transformers import AutoConfig, AutoModel

    from arena.embedded import resolve_model_path

    hf = AutoConfig.from_pretrained(resolve_model_path(cfg.model.path))
    with torch.device("meta"):
        backbone = AutoModel.from_config(hf)
    return {"model_type": hf.model_type, "num_hidden_layers": hf.num_hidden_layers, "hidden_size": hf.hidden_size,
            "parameters": int(sum(p.numel() for p in backbone.parameters()))}


def scores(y: np.ndarray, p: np.ndarray) -> dict:
    return {"log_loss": metrics.log_loss(y, p), "accuracy": metrics.accuracy(y, p), "rows": len(y)}


def quality(eval_sets: dict[str, pd.DataFrame], preds: dict[str, dict]) -> dict:
    """Scores of every method on every held-out set ("all"), and per source on a main set of several."""
    out = {}
    for name, df in eval_sets.items():
        y = data.label_matrix(df)
        out[name] = {"all": {m: scores(y, p) for m, p in preds[name].items()}}
        if name == MAIN and df["source"].nunique() > 1:
            for src in sorted(df["source"].unique()):
                mask = (df["source"] == src).to_numpy()
                out[name][src] = {m: scores(y[mask], p[mask]) for m, p in preds[name].items()}
    return out


def diagnostics(eval_df, res, step0: np.ndarray, summary: dict, y_train: np.ndarray,
                step0_plain: np.ndarray | None = None) -> dict:
    """Why the model scores as it does on the main held-out rows: distance from its starting head and the paired
    log loss difference from it (plain against the start in the A/B order, with swap TTA against the start averaged
    over both orders), training curve, position bias of each order, ties."""
    y = data.label_matrix(eval_df)
    plain, swapped = res["probs_plain"], res["probs_swapped"]
    history = summary.get("history", [])
    losses = [h["loss"] for h in history if "loss" in h]
    return {
        "tie_rate_train": float(y_train[:, 2].mean()),
        "tie_rate_held_out": float(y[:, 2].mean()),
        "mean_pred_tie_tta": float(res["probs"][:, 2].mean()),
        "position_bias_plain": float((plain[:, 0] - plain[:, 1]).mean()),
        "position_bias_swapped": float((swapped[:, 0] - swapped[:, 1]).mean()),
        "true_a_minus_b": float((y[:, 0] - y[:, 1]).mean()),
        "mean_abs_diff_plain_vs_swapped": float(np.abs(plain - swapped).sum(axis=1).mean() / 2),
        "mean_abs_diff_model_vs_step0": float(np.abs(res["probs"] - step0).sum(axis=1).mean() / 2),
        "first_train_loss": losses[0] if losses else None,
        "last_train_loss": losses[-1] if losses else None,
        "eval_log_loss_by_step": [(h["step"], h["eval_log_loss"]) for h in history if "eval_log_loss" in h],
        "model_vs_step0": {"standard_errors": variants.STANDARD_ERRORS,
                           "tta": variants.versus_default(y, step0, res["probs"]),
                           **({"plain": variants.versus_default(y, step0_plain, plain)}
                              if step0_plain is not None else {})},
    }


def model_calibration(run_folder: RunFolder, seed: int, log) -> tuple[object, dict] | None:
    """`arena calibrate` on the trained run's own validation predictions: its checkpoint-selection rows, taken
    from the training file, so no held-out row is seen by the fit. Fewer folds when there are few rows (--quick);
    None (logged) when there are too few to cross-fit two."""
    from arena import calibration

    _, truth = calibration.read_predictions(run_folder.val_predictions)
    folds = min(calibration.FOLDS, len(truth) // calibration.MIN_ROWS_PER_FOLD)
    if folds < 2:
        log(f"calibration skipped: {len(truth)} checkpoint-selection rows are too few to cross-fit")
        return None
    result = calibration.calibrate(run_dir=run_folder.root, folds=folds, seed=seed)
    return calibration.read(run_folder.calibration), result


def repo_path(p: Path) -> str:
    """`p` as seen from the repository root (how the report names configs), else as is."""
    try:
        return str(Path(p).resolve().relative_to(REPO))
    except ValueError:
        return str(p)


def _timed_fit(fn, *args):
    t0 = time.perf_counter()
    return fn(*args), time.perf_counter() - t0


def _json_default(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    return str(o)


def run(quick: bool = False, work: str | Path | None = None, command: str = "python -m benchmarks",
        overrides: list[str] = ()) -> Path:
    """Measure everything and write <work>/results.json, all the report needs (the resolved config, the plan, the
    measured composition, the environment, every score and timing); returns its path. `quick` runs the same code
    at tiny sizes (a smoke test; its numbers mean nothing). `overrides`: `--set` values of the benchmarked model and
    its variants, after the plan's own."""
    from arena import config, predict, train
    from arena import model as model_mod
    from arena.inference.tta import encode_view

    seed = config.load(None, list(overrides)).seed  # a bad --set is refused before any work
    work = work_folder(work, quick)
    log = Progress()
    started, date, load_start = time.time(), datetime.now().isoformat(timespec="seconds"), environment.load_average()
    gpu_cfg = config.load(config.CONFIG_DIR / GPU_RECIPE)
    log(f"{'quick ' if quick else ''}benchmark; work folder {work}")

    # ---- data --------------------------------------------------------------------------------------
    frames, plan, origin = load_sources(QUICK if quick else FULL, quick)
    plan = dataclasses.replace(plan, overrides=[*plan.overrides, *overrides])
    split = build_split(frames, plan, seed)
    eval_sets = write_split(split, work)
    log(f"data from {origin['dir']} ({origin['labels']} labels)" if origin["dir"] else
        f"data: a generated sample, {NO_SHARED_DATA}: its numbers are not a quality benchmark")
    log(f"data: training file {len(split.train)} rows, held-out " + ", ".join(f"{k} {len(v)}" for k, v in
        eval_sets.items()) + f"; {split.dropped_for_leaks} training rows dropped for shared prompts")

    # ---- the default model --------------------------------------------------------------------------
    overrides = [f"data.train={work / 'train.csv'}", "data.extra=[]", f"data.folds={plan.folds}", "data.fold=0",
                 f"data.max_rows={plan.max_rows}", f"train.runs_dir={work / 'runs'}", "name=bench", *plan.overrides]
    cfg = config.load(None, overrides)
    log("training the default model: configs/default.yaml with " + " ".join(overrides))
    run_folder = RunFolder(train.train(cfg, origin=config.origin(None, overrides)))
    gc.collect()
    summary = json.loads(run_folder.metrics.read_text())
    rows = train.prepare_data(cfg)  # exactly the rows the model trained and selected its checkpoint on
    log(f"trained in {summary['train_wall_seconds']:.0f} s on {len(rows.train)} rows; run {run_folder.root}")

    # ---- baselines on the same training rows ---------------------------------------------------------
    prior, prior_s = _timed_fit(baselines.class_prior, rows.train)
    lr, lr_s = _timed_fit(baselines.fit_length_baseline, rows.train, seed)
    (lr_cal, cal_params), cal_s = _timed_fit(baselines.fit_calibrated_length_baseline, rows.train, seed)
    head_fit, head_s = _timed_fit(baselines.fit_head_init, rows.train, seed)
    preds = {name: {"uniform": np.full((len(df), 3), 1 / 3), "prior": np.tile(prior, (len(df), 1)),
                    "length_lr": baselines.predict_length_baseline(lr, df),
                    "length_lr_cal": baselines.calibrate(baselines.predict_length_baseline(lr_cal, df), cal_params),
                    "step0": baselines.head_init_probs(head_fit, df)}
             for name, df in eval_sets.items()}

    # ---- the trained model on the held-out rows ------------------------------------------------------
    t0 = time.perf_counter()
    model, tokenizer, rt = model_mod.load_trained(cfg, run_folder)
    load_s = time.perf_counter() - t0
    scaler = model_mod.read_head(run_folder).get("feature_scaler")
    model_out, eval_wall = {}, {}
    for name, df in eval_sets.items():
        log(f"predicting {len(df)} {name} rows with swap TTA")
        t0 = time.perf_counter()
        model_out[name] = res = predict.predict_frame(model, tokenizer, df, cfg, rt, tta=True,
                                                      max_length=cfg.infer.max_length, feature_scaler=scaler)
        eval_wall[name] = time.perf_counter() - t0
        preds[name].update(model=res["probs_plain"], model_tta=res["probs"])
        predict.prediction_frame(df["id"], res["probs"]).assign(source=df["source"].to_numpy()).to_csv(
            work / f"predictions_{name}.csv", index=False)

    # ---- the trained model, calibrated on its checkpoint-selection rows ------------------------------
    fitted, cal_model_s = _timed_fit(model_calibration, run_folder, seed, log)
    if fitted is not None:
        for name in eval_sets:
            preds[name]["model_tta_cal"] = fitted[0].apply(model_out[name]["probs"])

    # ---- speed ---------------------------------------------------------------------------------------
    lengths = padding_lengths(cfg.infer.max_length, plan.long_length, gpu_cfg)
    speed_results = speed.measure(model, tokenizer, cfg, run_folder, eval_sets[MAIN], scaler, plan, lengths, log,
                                  load_s)
    swapped_lengths = [len(x) for x in encode_view(tokenizer, eval_sets[MAIN], cfg, cfg.infer.max_length, scaler,
                                                   swap=True)[0]]
    del model
    gc.collect()

    # ---- the variants: paired swap, distillation, fold models averaged vs merged ------------------------
    variant_results = variants.measure(work, overrides, run_folder, model_out[MAIN], swapped_lengths, work / "eval.csv",
                                       eval_sets[MAIN], seed, log)

    # ---- the arena family: the WSDM Cup's two-way task and an arena-format extra source, through the CLI ------
    family_results = family.measure(work, plan.overrides, frames, plan, split, quick, seed, log)

    results = {
        "schema": SCHEMA, "command": command, "quick": quick, "date": date,
        "environment": {"device": environment.device_info(), "versions": environment.package_versions(),
                        "commit": environment.git_commit(), "loadavg_start": load_start,
                        "loadavg_end": environment.load_average()},
        "work_dir": str(work), "run_dir": str(run_folder.root),
        "config_file": repo_path(config.DEFAULT_CONFIG), "overrides": overrides,
        "config": cfg.to_dict(),
        "runtime": {"device": rt.device, "dtype": str(rt.dtype).removeprefix("torch.")},
        "base_model": base_model_info(cfg),
        "gpu_recipe": {"file": repo_path(config.CONFIG_DIR / GPU_RECIPE), "config": gpu_cfg.to_dict()},
        "plan": {**plan.to_dict(), "seed": seed, "padding_lengths": lengths},
        "data": {**origin, "dropped_for_leaks": split.dropped_for_leaks,
                 "training_file_rows": len(split.train), "checkpoint_val_rows": len(rows.val)},
        "composition": composition(frames, plan, rows.train, rows.val, eval_sets),
        "methods": [{"id": k, "label": v} for k, v in METHODS.items() if k != "model_tta_cal" or fitted],
        "baselines": baselines.settings(cfg, cal_params),
        "quality": quality(eval_sets, preds),
        "fit_seconds": {"prior": prior_s, "length_lr": lr_s, "length_lr_cal": cal_s, "step0": head_s,
                        "model": summary["train_wall_seconds"], "model_tta": summary["train_wall_seconds"],
                        **({"model_tta_cal": summary["train_wall_seconds"] + cal_model_s} if fitted else {})},
        "eval_wall_seconds": eval_wall,
        "train_summary": {k: v for k, v in summary.items() if k != "history"},
        "diagnostics": diagnostics(eval_sets[MAIN], model_out[MAIN], preds[MAIN]["step0"], summary,
                                   data.label_matrix(rows.train),
                                   baselines.head_init_probs(head_fit, eval_sets[MAIN], tta=False)),
        "speed": speed_results,
        "variants": variant_results,
        "family": family_results,
        **({"model_calibration": fitted[1]} if fitted else {}),
    }
    results["wall_seconds"] = time.time() - started
    path = work / "results.json"
    path.write_text(json.dumps(results, indent=2, default=_json_default) + "\n", encoding="utf-8")
    log(f"wrote {path} (bench wall time {results['wall_seconds'] / 60:.1f} min)")
    return path
