"""`arena bench`: quality on real human preference data and inference speed ratios, measured in one run on
this machine, written to docs/benchmarks.md with its figures.

1. Quality. The files in ../shared/data are split by prompt into a training file and a held-out file (written
   under a git-ignored work folder, bench/<stamp>/). On the held-out rows: uniform, the class prior, a
   length-feature logistic regression (scikit-learn, fit on exactly the rows the model trains on), the same
   regression recalibrated, the default model's head as it starts (its length-regression init), and the
   default model (`configs/default.yaml`, trained by `arena.train.train`) without and with swap TTA.
2. Speed, with the trained model on the same held-out rows: sorted dynamic batching vs padding every row to
   max_length, the cost of swap TTA, and nf4 vs 8-bit vs no quantization at inference. Medians of repeats,
   reported as ratios.
3. The GPU path (Gemma-2 9B on Kaggle T4x2) is only measured where a GPU is present; here it is described.

`--quick` runs the same code at tiny sizes (a smoke test; its numbers mean nothing).
"""

from __future__ import annotations

import gc
import json
import math
import os
import platform
import statistics
import subprocess
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from arena import data, metrics  # noqa: E402
from arena.errors import UserError  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CLASS_NAMES = ("A", "B", "tie")


# ---- plan -------------------------------------------------------------------------------------------

@dataclass
class SourcePlan:
    """How one shared-data file is used: rows held out (whole prompts), rows sampled for training from the
    rest (None = all of the rest), and whether its held-out rows count in the main (arena-like) evaluation."""

    file: str
    held_out: int
    train: int | None
    main_eval: bool = True


@dataclass
class Plan:
    sources: list[SourcePlan]
    folds: int  # arena.train holds out 1/folds of the training file for checkpoint selection
    max_rows: int  # data.max_rows: cap on the model's training rows
    speed_rows: int
    repeats: int
    # A second timed sorted-vs-fixed comparison at the Kaggle recipes' window (None: skip), where padding to
    # max_length costs far more than at the default's 256.
    long_length: int | None = None
    overrides: list[str] = field(default_factory=list)  # config overrides beyond data/run placement


FULL = Plan(
    sources=[
        # Arena-like: ties ~27%, single-turn, many task scenarios. Most of the held-out set.
        SourcePlan("autoj_pairwise_dev.csv", held_out=280, train=None),
        # Ties ~10.5%, ~6 response pairs per prompt (170 prompts): a few prompts held out, a sample trains.
        SourcePlan("pandalm_human.csv", held_out=90, train=150),
        # No ties, judges harmlessness: limited to ~9% of training, held-out rows reported on their own.
        SourcePlan("hh_rlhf_harmless.csv", held_out=64, train=56, main_eval=False),
    ],
    folds=10,
    max_rows=360,
    speed_rows=32,
    repeats=3,
    long_length=512,
)

QUICK = Plan(
    sources=[
        SourcePlan("autoj_pairwise_dev.csv", held_out=6, train=16),
        SourcePlan("pandalm_human.csv", held_out=1, train=6),  # one prompt (~6 rows)
        SourcePlan("hh_rlhf_harmless.csv", held_out=2, train=2, main_eval=False),
    ],
    folds=4,
    max_rows=24,
    speed_rows=4,
    repeats=1,
    long_length=192,
    overrides=["train.max_steps=2", "train.eval_steps=2", "train.logging_steps=1", "train.per_device_batch_size=2",
               "train.grad_accum=1", "prompt.max_length=128", "infer.max_length=128"],
)
# Padding of the held-out rows at these max_length values (token counts only, not timed): the default's 256,
# and the 1024/2048 of the Kaggle recipes (configs/gemma2-9b-qlora-t4x2.yaml).
PADDING_LENGTHS = (256, 512, 1024, 2048)


def shared_data_dir() -> Path | None:
    """../shared/data (next to the repository or the working directory), or $ARENA_SHARED_DATA."""
    candidates = [os.environ.get("ARENA_SHARED_DATA"), Path.cwd().parent / "shared" / "data",
                  REPO.parent / "shared" / "data"]
    for c in candidates:
        if c and (Path(c) / "autoj_pairwise_dev.csv").is_file():
            return Path(c)
    return None


# ---- splitting --------------------------------------------------------------------------------------

def prompt_keys(df: pd.DataFrame) -> pd.Series:
    return pd.Series([json.dumps(list(p), ensure_ascii=False) for p in df["prompt"]], index=df.index)


def split_by_prompt(df: pd.DataFrame, held_out_rows: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rest, held_out): whole prompt groups, in a seeded random order, go to the held-out part until it has
    at least `held_out_rows` rows. No prompt is in both parts."""
    keys = prompt_keys(df)
    groups = keys.unique()
    order = np.random.default_rng(seed).permutation(len(groups))
    sizes = keys.value_counts()
    chosen, count = set(), 0
    for i in order:
        if count >= held_out_rows:
            break
        chosen.add(groups[i])
        count += int(sizes[groups[i]])
    held = keys.isin(chosen).to_numpy()
    return df[~held].reset_index(drop=True), df[held].reset_index(drop=True)


@dataclass
class Split:
    train: pd.DataFrame  # every source's training rows, with a `source` column
    main_eval: pd.DataFrame  # held-out rows of the arena-like sources
    side_eval: dict[str, pd.DataFrame]  # held-out rows of sources kept out of the main evaluation
    dropped_for_leaks: int


def build_split(frames: dict[str, pd.DataFrame], plan: Plan, seed: int) -> Split:
    """Hold out whole prompts per source, sample the training rows from the rest, and drop any training row
    whose prompt is held out anywhere (sources could share prompts)."""
    train_parts, main_parts, side = [], [], {}
    held_keys: set[str] = set()
    for i, sp in enumerate(plan.sources):
        df = frames[sp.file].copy()
        df["source"] = Path(sp.file).stem
        rest, held = split_by_prompt(df, sp.held_out, seed + i)
        held_keys |= set(prompt_keys(held))
        if sp.train is not None and sp.train < len(rest):
            rest = rest.sample(n=sp.train, random_state=seed + i).reset_index(drop=True)
        train_parts.append(rest)
        if sp.main_eval:
            main_parts.append(held)
        else:
            side[Path(sp.file).stem] = held
    dropped = 0
    for j, part in enumerate(train_parts):
        leak = prompt_keys(part).isin(held_keys).to_numpy()
        dropped += int(leak.sum())
        train_parts[j] = part[~leak].reset_index(drop=True)
    train_df = data.merge(train_parts[0], train_parts[1:])
    main_eval = data.merge(main_parts[0], main_parts[1:]) if main_parts else pd.DataFrame()
    return Split(train_df, main_eval, side, dropped)


def sample_frames(quick: bool) -> dict[str, pd.DataFrame]:
    """Fallback when ../shared/data is absent: one generated (synthetic) source."""
    return {"generated_sample.csv": data.generate_sample(120 if quick else 1200, seed=0)}


# ---- length baselines -------------------------------------------------------------------------------

def length_lr(c: float = 1.0, seed: int = 0):
    """StandardScaler + multinomial LogisticRegression on data.length_features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000, random_state=seed))


def _proba3(model, x: np.ndarray) -> np.ndarray:
    """predict_proba with all three classes as columns, even if a class was absent in training."""
    p = model.predict_proba(x)
    out = np.full((len(x), 3), 1e-6)
    out[:, model.classes_.astype(int)] = p
    return out / out.sum(axis=1, keepdims=True)


def fit_length_baseline(train_df: pd.DataFrame, seed: int = 0):
    x, y = data.length_features(train_df), train_df["label"].to_numpy()
    return length_lr(seed=seed).fit(x, y)


def predict_length_baseline(model, df: pd.DataFrame) -> np.ndarray:
    return _proba3(model, data.length_features(df))


def calibrate(probs: np.ndarray, params: np.ndarray) -> np.ndarray:
    """Temperature + class bias: softmax(log p / T + b), params = [log T, b_A, b_B] (b_tie = 0)."""
    from arena.predict import softmax

    z = np.log(np.clip(probs, 1e-12, 1)) / math.exp(params[0])
    return softmax(z + np.array([params[1], params[2], 0.0]))


def fit_calibration(probs: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The calibration params minimising log loss of `probs` (out-of-fold predictions) against labels `y`."""
    from scipy.optimize import minimize

    best = minimize(lambda t: metrics.log_loss(y, calibrate(probs, t)), np.zeros(3), method="Nelder-Mead",
                    options={"xatol": 1e-5, "fatol": 1e-7, "maxiter": 2000})
    return best.x


def fit_calibrated_length_baseline(train_df: pd.DataFrame, seed: int = 0):
    """The length LR recalibrated on its own 5-fold (grouped by prompt) out-of-fold training predictions."""
    from sklearn.model_selection import GroupKFold, cross_val_predict

    x, y = data.length_features(train_df), train_df["label"].to_numpy()
    groups = pd.factorize(prompt_keys(train_df))[0]
    k = min(5, len(set(groups)))
    oof = cross_val_predict(length_lr(seed=seed), x, y, groups=groups, cv=GroupKFold(n_splits=k),
                            method="predict_proba")
    if oof.shape[1] < 3:  # a class absent from training: pad like _proba3
        full = np.full((len(x), 3), 1e-6)
        full[:, np.unique(y)] = oof
        oof = full / full.sum(axis=1, keepdims=True)
    return fit_length_baseline(train_df, seed), fit_calibration(oof, y)


STEP0 = "default model at step 0 (its head's length-LR init, swap-averaged)"


def fit_head_init(train_df: pd.DataFrame, seed: int) -> tuple[dict, np.ndarray, np.ndarray]:
    """The default model's head as training starts: `model.head_init: prior` with length features fits
    arena.train.fit_length_head on the head's standardised, clipped features (the hidden-state part is zero).
    Returns (feature scaler, coef, intercept)."""
    from arena import train

    scaler = data.fit_feature_scaler(train_df)
    coef, intercept = train.fit_length_head(data.head_features(train_df, scaler), data.label_matrix(train_df), seed)
    return scaler, coef, intercept


def head_init_probs(fit: tuple[dict, np.ndarray, np.ndarray], df: pd.DataFrame, tta: bool = True) -> np.ndarray:
    """Probabilities of that starting head, averaged over both A/B orders with tta=True."""
    from arena.predict import combine_tta, softmax

    scaler, coef, intercept = fit
    logits = data.head_features(df, scaler) @ coef.T + intercept
    if not tta:
        return softmax(logits)
    swapped = data.head_features(df, scaler, swap=True) @ coef.T + intercept
    return combine_tta(logits, swapped, "prob")


# ---- fixed-length padding (the baseline that sorted dynamic batching is measured against) -------------

def fixed_batches(n: int, batch_size: int) -> list[list[int]]:
    """Rows in input order, `batch_size` at a time (no sorting)."""
    return [list(range(s, min(s + batch_size, n))) for s in range(0, n, batch_size)]


def fixed_padding_logits(model, input_ids: list[list[int]], pad_token_id: int, max_length: int, batch_size: int,
                         device: str, features: np.ndarray | None = None) -> np.ndarray:
    """Logits (n, 3) with every row padded to max_length, in input order: what inference costs without
    sorted dynamic batching."""
    from arena.predict import logits_for_batches

    return logits_for_batches(model, input_ids, pad_token_id, device, fixed_batches(len(input_ids), batch_size),
                              features, pad_to=max_length, desc=f"bench fixed {max_length}")


def timed(fn, repeats: int, warmup=None) -> dict:
    """Run `warmup` once (untimed) then `fn` `repeats` times; median and all wall times in seconds."""
    if warmup is not None:
        warmup()
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "times_s": times, "result": result}


# ---- environment ------------------------------------------------------------------------------------

def device_info() -> dict:
    import torch

    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = int(line.split()[1]) / 2**20
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "cores": cores, "torch_threads": torch.get_num_threads(), "memory_gib": mem_gib,
            "gpu": gpu, "python": platform.python_version(), "platform": platform.platform()}


def package_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("torch", "transformers", "peft", "bitsandbytes", "accelerate", "scikit-learn", "numpy", "pandas"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return f"{head}{' (uncommitted changes)' if dirty else ''}" if head else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# ---- the run ----------------------------------------------------------------------------------------

class _Progress:
    def __init__(self):
        self.start = time.time()

    def __call__(self, msg: str) -> None:
        print(f"[bench {time.time() - self.start:6.0f}s] {msg}", flush=True)


def _scores(y: np.ndarray, p: np.ndarray) -> dict:
    return {"log_loss": metrics.log_loss(y, p), "accuracy": metrics.accuracy(y, p), "rows": len(y)}


def run(out: str | Path = "docs/benchmarks.md", quick: bool = False, work_dir: str | Path | None = None) -> Path:
    """Run every benchmark and write the markdown report (+ PNGs beside it). Returns the report's path."""
    import torch

    from arena import config, predict, train
    from arena import model as model_mod

    log = _Progress()
    started = time.time()
    load_start = os.getloadavg()
    out = Path(out)
    plan = QUICK if quick else FULL
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    work = Path(work_dir) if work_dir else Path("bench") / (stamp + ("-quick" if quick else ""))
    if work.exists() and any(work.iterdir()):
        raise UserError(f"{work}: bench work folder already exists and is not empty; an earlier run is never "
                        "overwritten (pass a new --work or leave it out)")
    work.mkdir(parents=True, exist_ok=True)
    base_cfg = config.load()
    seed = base_cfg.seed
    log(f"{'quick ' if quick else ''}benchmark; work folder {work}")

    # ---- data --------------------------------------------------------------------------------------
    shared = shared_data_dir()
    if shared is not None:
        frames = {sp.file: data.load(shared / sp.file, require_labels=True) for sp in plan.sources}
        data_origin = f"`{_display_path(shared)}` (real human labels)"
    else:
        frames = sample_frames(quick)
        n = len(frames["generated_sample.csv"])
        plan = Plan([SourcePlan("generated_sample.csv", held_out=n // 3, train=None)], plan.folds, plan.max_rows,
                    plan.speed_rows, plan.repeats, plan.long_length, plan.overrides)
        data_origin = "a generated sample (../shared/data not found: synthetic labels, NOT a quality benchmark)"
    split = build_split(frames, plan, seed)
    train_csv, eval_csv = work / "train.csv", work / "eval.csv"
    data.write_csv(split.train, train_csv)
    data.write_csv(split.main_eval, eval_csv)
    side_paths = {}
    for name, df in split.side_eval.items():
        side_paths[name] = work / f"eval_{name}.csv"
        data.write_csv(df, side_paths[name])
    eval_df = data.load(eval_csv, require_labels=True)
    side_dfs = {name: data.load(p, require_labels=True) for name, p in side_paths.items()}
    log(f"data: training file {len(split.train)} rows, held-out {len(eval_df)} rows "
        f"(+ {', '.join(f'{k} {len(v)}' for k, v in side_dfs.items()) or 'no side sets'}); "
        f"{split.dropped_for_leaks} training rows dropped for shared prompts")

    # ---- the default model --------------------------------------------------------------------------
    overrides = [f"data.train={train_csv}", "data.extra=[]", f"data.folds={plan.folds}", "data.fold=0",
                 f"data.max_rows={plan.max_rows}", f"train.runs_dir={work / 'runs'}", "name=bench", *plan.overrides]
    cfg = config.load(None, overrides)
    log("training the default model: configs/default.yaml with " + " ".join(overrides))
    run_dir = train.train(cfg)
    gc.collect()
    summary = json.loads((run_dir / train.METRICS_FILE).read_text())
    train_df, val_df = train.split_train_val(cfg)  # exactly the rows the model trained and selected on
    log(f"trained in {summary['train_wall_seconds']:.0f} s on {len(train_df)} rows; run {run_dir}")

    # ---- baselines on the same training rows ---------------------------------------------------------
    y_train = data.label_matrix(train_df)
    prior = y_train.mean(axis=0)
    t0 = time.perf_counter()
    lr = fit_length_baseline(train_df, seed)
    lr_fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    lr_cal, cal_params = fit_calibrated_length_baseline(train_df, seed)
    cal_fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    head_fit = fit_head_init(train_df, seed)
    head_fit_s = time.perf_counter() - t0

    eval_sets = {"held-out": eval_df, **side_dfs}

    def baseline_preds(df):
        n = len(df)
        return {
            "uniform": np.full((n, 3), 1 / 3),
            "class prior": np.tile(prior, (n, 1)),
            "length LR": predict_length_baseline(lr, df),
            "length LR + calibration": calibrate(predict_length_baseline(lr_cal, df), cal_params),
            STEP0: head_init_probs(head_fit, df),
        }

    preds = {name: baseline_preds(df) for name, df in eval_sets.items()}

    # ---- the trained model on the held-out rows ------------------------------------------------------
    t0 = time.perf_counter()
    model, tokenizer, rt = model_mod.load_trained(cfg, run_dir / train.ADAPTER_DIR)
    nf4_load_s = time.perf_counter() - t0
    scaler = model_mod.read_head(run_dir / train.ADAPTER_DIR).get("feature_scaler")
    max_length = cfg.infer.max_length
    model_out = {}
    eval_wall = {}
    for name, df in eval_sets.items():
        log(f"predicting {len(df)} {name} rows with swap TTA")
        t0 = time.perf_counter()
        res = predict.predict_frame(model, tokenizer, df, cfg, rt, tta=True, max_length=max_length,
                                    feature_scaler=scaler)
        eval_wall[name] = time.perf_counter() - t0
        model_out[name] = res
        preds[name]["default model"] = res["probs_plain"]
        preds[name]["default model + swap TTA"] = res["probs"]
        predict.prediction_frame(df["id"], res["probs"]).assign(source=df["source"].to_numpy()).to_csv(
            work / f"predictions_{name}.csv", index=False)

    quality = {}
    for name, df in eval_sets.items():
        y = data.label_matrix(df)
        quality[name] = {"all": {m: _scores(y, p) for m, p in preds[name].items()}}
        if name == "held-out" and "source" in df.columns and df["source"].nunique() > 1:
            for src in sorted(df["source"].unique()):
                mask = (df["source"] == src).to_numpy()
                quality[name][src] = {m: _scores(y[mask], p[mask]) for m, p in preds[name].items()}
    fit_seconds = {"length LR": lr_fit_s, "length LR + calibration": cal_fit_s, STEP0: head_fit_s,
                   "default model": summary["train_wall_seconds"],
                   "default model + swap TTA": summary["train_wall_seconds"]}
    diagnostics = _diagnostics(eval_df, model_out["held-out"], preds["held-out"], summary, y_train)

    # ---- speed ---------------------------------------------------------------------------------------
    speed = _speed(model, tokenizer, cfg, eval_df, scaler, plan, run_dir, log, nf4_load_s)
    del model
    gc.collect()

    wall = time.time() - started
    results = {
        "quick": quick, "date": datetime.now().isoformat(timespec="seconds"), "wall_seconds": wall,
        "device": device_info(), "versions": package_versions(), "commit": git_commit(),
        "data_origin": data_origin, "work_dir": str(work), "run_dir": str(run_dir),
        "composition": _composition(split, train_df, val_df, eval_df, side_dfs),
        "quality": quality, "fit_seconds": fit_seconds, "eval_wall_seconds": eval_wall,
        "train_summary": {k: v for k, v in summary.items() if k != "history"},
        "calibration_params": cal_params.tolist(), "diagnostics": diagnostics, "speed": speed,
        "loadavg_start": load_start, "loadavg_end": os.getloadavg(),
        "overrides": overrides, "extra_overrides": plan.overrides, "cuda": torch.cuda.is_available(),
    }
    (work / "results.json").write_text(json.dumps(results, indent=2, default=_json_default))
    path = write_report(results, out, quick)
    log(f"wrote {path} (bench wall time {wall / 60:.1f} min); raw results in {work / 'results.json'}")
    return path


def _display_path(p: Path) -> str:
    try:
        return os.path.relpath(p, Path.cwd())
    except ValueError:
        return str(p)


def _json_default(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    return str(o)


def _composition(split: Split, train_df, val_df, eval_df, side_dfs) -> list[dict]:
    rows = []
    sources = list(dict.fromkeys([*split.train["source"], *eval_df["source"], *side_dfs]))
    main_sources = set(eval_df["source"])
    for src in sources:
        def part(df, src=src):
            sel = df[df["source"] == src] if len(df) else df
            return len(sel), (float((sel["label"] == 2).mean()) if len(sel) else float("nan"))

        held = eval_df if src in main_sources else side_dfs.get(src, eval_df.iloc[:0])
        n_train, tie_train = part(train_df)
        n_val, _ = part(val_df)
        n_held, tie_held = part(held)
        rows.append({"source": src, "train": n_train, "checkpoint_val": n_val, "held_out": n_held,
                     "main_eval": src in main_sources, "tie_train": tie_train, "tie_held_out": tie_held})
    return rows


def _diagnostics(eval_df, res, preds, summary, y_train) -> dict:
    y = data.label_matrix(eval_df)
    plain, swapped = res["probs_plain"], res["probs_swapped"]
    history = summary.get("history", [])
    losses = [h["loss"] for h in history if "loss" in h]
    evals = [(h["step"], h["eval_log_loss"]) for h in history if "eval_log_loss" in h]
    step0 = preds[STEP0]
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
        "eval_log_loss_by_step": evals,
        "global_step": summary.get("global_step"),
        "best_checkpoint": summary.get("best_checkpoint"),
    }


def _timings(t: dict) -> dict:
    """A `timed` result without the logits it returned (results.json keeps numbers only)."""
    return {k: v for k, v in t.items() if k != "result"}


def _speed(model, tokenizer, cfg, eval_df, scaler, plan: Plan, run_dir: Path, log, nf4_load_s: float) -> dict:
    from arena import config, predict, train
    from arena import model as model_mod

    n = min(plan.speed_rows, len(eval_df))
    rows = eval_df.sample(n=n, random_state=cfg.seed).reset_index(drop=True)
    max_length = cfg.infer.max_length
    device = predict.model_device(model)
    pad = tokenizer.pad_token_id
    ids, feats = predict.encode_view(tokenizer, rows, cfg, max_length, scaler)
    held_out_lengths = {length: [len(x) for x in predict.encode_view(tokenizer, eval_df, cfg, length, None)[0]]
                        for length in sorted({*PADDING_LENGTHS, max_length})}
    lens = held_out_lengths[max_length]
    stats_all = predict.padding_stats(
        lens, predict.sorted_batches(lens, cfg.infer.max_batch_tokens, cfg.infer.max_batch_size), max_length)
    padding_by_length = []
    for length, lens in held_out_lengths.items():
        tokens = max(cfg.infer.max_batch_tokens, 4 * length)
        st = predict.padding_stats(lens, predict.sorted_batches(lens, tokens, cfg.infer.max_batch_size), length)
        padding_by_length.append({"max_length": length, "max_batch_tokens": tokens, "truncated_share":
                                  float(np.mean([n >= length for n in lens])), "median_tokens": float(np.median(lens)),
                                  **st})

    main, plain_logits = _sorted_vs_fixed(model, ids, feats, pad, cfg, plan.repeats, device, log)
    long_cmp = None
    if plan.long_length and plan.long_length != max_length:
        length = plan.long_length
        long_cfg = config.from_dict(cfg.to_dict(), [f"infer.max_length={length}", "infer.max_batch_tokens="
                                                    f"{max(cfg.infer.max_batch_tokens, length)}"])
        long_ids, long_feats = predict.encode_view(tokenizer, rows, long_cfg, length, scaler)
        long_cmp, _ = _sorted_vs_fixed(model, long_ids, long_feats, pad, long_cfg, plan.repeats, device, log)

    log(f"speed: swap TTA cost on {n} rows")
    swapped_ids, swapped_feats = predict.encode_view(tokenizer, rows, cfg, max_length, scaler, swap=True)

    def tta_run():  # predict_frame's two passes on the pre-tokenised rows; the plain pass alone is main["sorted"]
        plain = predict.logits_for(model, ids, pad, cfg, device, feats, desc="bench A/B")
        swapped = predict.logits_for(model, swapped_ids, pad, cfg, device, swapped_feats, desc="bench B/A")
        return predict.combine_tta(plain, swapped, cfg.infer.tta_average)

    tta_t = timed(tta_run, plan.repeats)

    y = data.label_matrix(rows)
    nf4_probs = predict.softmax(plain_logits)
    quant = {"nf4": {"load_s": nf4_load_s, "median_s": main["sorted"]["median_s"], "times_s": main["sorted"]["times_s"],
                     "log_loss": metrics.log_loss(y, nf4_probs), "max_prob_diff_vs_nf4": 0.0}}
    for q in ("int8", "none"):
        log(f"speed: quantization {q} at inference ({n} rows, {plan.repeats} repeats)")
        gc.collect()
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="MatMul8bitLt")  # bnb int8 on CPU: once per layer and call
                t0 = time.perf_counter()
                m, _, _ = model_mod.load_trained(cfg, run_dir / train.ADAPTER_DIR, quantization=q)
                load_s = time.perf_counter() - t0
                d = predict.model_device(m)
                run_q = lambda m=m, d=d, q=q: predict.logits_for(m, ids, pad, cfg, d, feats, desc=f"bench {q}")  # noqa: E731
                t = timed(run_q, plan.repeats, run_q)
                probs = predict.softmax(t["result"])
                quant[q] = {"load_s": load_s, "median_s": t["median_s"], "times_s": t["times_s"],
                            "log_loss": metrics.log_loss(y, probs),
                            "max_prob_diff_vs_nf4": float(np.abs(probs - nf4_probs).max())}
                del m
        except Exception as exc:  # noqa: BLE001 - report what failed instead of losing the whole benchmark
            quant[q] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]}
            log(f"speed: {q} failed: {quant[q]['error']}")
        gc.collect()
    return {"rows": n, "repeats": plan.repeats, **main, "padding_all_held_out": stats_all,
            "padding_by_length": padding_by_length, "held_out_rows": len(eval_df), "long": long_cmp,
            "plain": main["sorted"], "tta": _timings(tta_t), "quantization": quant}


def _sorted_vs_fixed(model, ids: list[list[int]], feats, pad: int, cfg, repeats: int, device: str,
                     log) -> tuple[dict, np.ndarray]:
    """Sorted dynamic batching (`predict.logits_for` under cfg.infer) vs every row padded to cfg.infer.max_length
    with the same token budget per batch, timed on the same rows. Returns (timings, the sorted run's logits)."""
    from arena import predict

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
    return {"max_length": length, "max_batch_tokens": cfg.infer.max_batch_tokens, "fixed_batch_size": fixed_bs,
            "sorted_batch_sizes": [len(b) for b in batches],
            "padding": predict.padding_stats(lengths, batches, length),
            "max_abs_logit_diff_sorted_vs_fixed": float(np.abs(sorted_t["result"] - fixed_t["result"]).max()),
            "sorted": _timings(sorted_t), "fixed": _timings(fixed_t)}, sorted_t["result"]


# ---- report -----------------------------------------------------------------------------------------

def md_table(headers: list[str], rows: list[list]) -> str:
    def cell(v):
        if v is None:
            return "-"
        if isinstance(v, float):
            return "-" if math.isnan(v) else f"{v:.4f}"
        return str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def _fmt_s(s: float | None) -> str:
    if s is None:
        return "-"
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min"


def _plot_quality(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    q = results["quality"]["held-out"]
    methods = list(q["all"])
    groups = [("all held-out", q["all"])] + [(k, v) for k, v in q.items() if k != "all"]
    for name, v in results["quality"].items():
        if name != "held-out":
            groups.append((f"{name} (side set)", v["all"]))
    fig, ax = plt.subplots(figsize=(9, 1.5 + 0.18 * len(methods) * max(2, len(groups))))
    height = 0.8 / len(groups)
    y = np.arange(len(methods))
    for g, (label, scores) in enumerate(groups):
        vals = [scores[m]["log_loss"] for m in methods]
        ax.barh(y + g * height - 0.4 + height / 2, vals, height=height, label=label)
    ax.axvline(math.log(3), color="grey", linestyle=":", label="uniform ln 3")
    ax.set_yticks(y)
    ax.set_yticklabels([m.replace(" (its head", "\n(its head") for m in methods], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("log loss (lower is better)")
    ax.set_title("Held-out log loss by method" + (" [--quick: meaningless sizes]" if results["quick"] else ""))
    # Below the axes: inside, it hides the bars of the last methods.
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def _plot_speed(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = results["speed"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    ax = axes[0]
    by_length = s["padding_by_length"]
    x = np.arange(len(by_length))
    ax.bar(x - 0.2, [r["sorted_padding_fraction"] for r in by_length], 0.4, label="sorted dynamic batching")
    ax.bar(x + 0.2, [r["fixed_padding_fraction"] for r in by_length], 0.4, label="fixed: pad to max_length")
    ax.set_xticks(x)
    ax.set_xticklabels([str(r["max_length"]) for r in by_length])
    ax.set_xlabel(f"max_length (all {s['held_out_rows']} held-out rows)")
    ax.set_ylabel("padded share of token slots")
    ax.set_title("Padding")
    ax.legend(fontsize=8)
    ax = axes[1]
    names = ["sorted", "fixed", "plain", "tta"]
    rates = [s["rows"] / s[k]["median_s"] for k in names]
    ax.bar(["sorted\nbatching", "fixed\npadding", "predict\nplain", "predict\nswap TTA"], rates,
           color=["C0", "C1", "C2", "C3"])
    ax.set_ylabel("rows / s (median)")
    ax.set_title("Batching and TTA (nf4)")
    ax = axes[2]
    qs = [(k, v) for k, v in s["quantization"].items() if "median_s" in v]
    ax.bar([k for k, _ in qs], [s["rows"] / v["median_s"] for _, v in qs], color="C4")
    ax.set_ylabel("rows / s (median)")
    ax.set_title("Quantization at inference (CPU)")
    fig.suptitle(f"{results['device']['cpu']}, {results['device']['cores']} cores"
                 + (" [--quick]" if results["quick"] else ""), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _verdict(results: dict) -> str:
    q = results["quality"]["held-out"]["all"]
    d = results["diagnostics"]
    lr = q["length LR"]["log_loss"]
    lr_cal = q["length LR + calibration"]["log_loss"]
    model_tta = q["default model + swap TTA"]["log_loss"]
    model_plain = q["default model"]["log_loss"]
    step0 = q[STEP0]["log_loss"]
    best_len = min(lr, lr_cal)
    ts = results["train_summary"]
    lines = []
    if model_tta < best_len:
        lines.append(f"**The default model beats the length baseline**: held-out log loss {model_tta:.4f} with swap "
                     f"TTA ({model_plain:.4f} without) vs {lr:.4f} for the length LR and {lr_cal:.4f} recalibrated "
                     f"({best_len - model_tta:+.4f} better than the better of the two).")
    elif model_tta < lr:
        lines.append(f"**The default model beats the plain length LR** ({model_tta:.4f} with swap TTA vs {lr:.4f}) "
                     f"**but not the recalibrated one** ({lr_cal:.4f}).")
    else:
        lines.append(f"**The default model does not beat the length baseline** here: {model_tta:.4f} with swap TTA "
                     f"({model_plain:.4f} without) vs {lr:.4f} for the length LR ({lr_cal:.4f} recalibrated).")
    lines.append("")
    lines.append("Diagnostics (held-out rows):")
    lines.append(f"- Fine-tuning starts from a length regression in the head: that starting point scores "
                 f"{step0:.4f}; after {ts.get('global_step')} optimizer steps on {ts.get('train_rows')} rows the "
                 f"model scores {model_tta:.4f} ({model_tta - step0:+.4f}). Its predictions moved on average "
                 f"{d['mean_abs_diff_model_vs_step0']:.3f} (total-variation distance) away from the start.")
    if d["first_train_loss"] is not None:
        lines.append(f"- Training loss: first logged {d['first_train_loss']:.4f}, last {d['last_train_loss']:.4f}; "
                     f"checkpoint-selection log loss by step: "
                     + ", ".join(f"{s}: {v:.4f}" for s, v in d["eval_log_loss_by_step"]) + ".")
    lines.append(f"- Position bias: mean P(A) - P(B) is {d['position_bias_plain']:+.3f} in the A/B order and "
                 f"{d['position_bias_swapped']:+.3f} in the swapped order mapped back (truth "
                 f"{d['true_a_minus_b']:+.3f}); the two orders differ by {d['mean_abs_diff_plain_vs_swapped']:.3f} "
                 f"on average, which is what swap TTA averages out.")
    lines.append(f"- Ties: {d['tie_rate_train']:.1%} of training rows, {d['tie_rate_held_out']:.1%} of held-out rows; "
                 f"the model predicts {d['mean_pred_tie_tta']:.1%} on average.")
    return "\n".join(lines)


def write_report(results: dict, out: Path, quick: bool) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    quality_png = out.with_name(f"{out.stem}-quality.png")
    speed_png = out.with_name(f"{out.stem}-speed.png")
    _plot_quality(results, quality_png)
    _plot_speed(results, speed_png)

    dev, ver, s = results["device"], results["versions"], results["speed"]
    command = "arena bench --out " + _display_path(out) + (" --quick" if quick else "")
    parts = ["# Benchmarks", ""]
    if quick:
        parts += ["> **`--quick` smoke test**: tiny sizes (a few rows, 2 training steps). The numbers below only "
                  "show that every stage runs; they say nothing about quality or speed.", ""]
    parts += [
        f"Generated by `{command}`" + ("" if quick else " (`make bench`)") +
        f" on {results['date']}; the whole benchmark took **{results['wall_seconds'] / 60:.1f} min** "
        f"on this machine. Every number on this page comes from that one run.",
        "",
        "| | |",
        "|---|---|",
        f"| device | {dev['cpu']}, {dev['cores']} cores (torch threads {dev['torch_threads']})"
        + (f", {dev['memory_gib']:.0f} GiB RAM" if dev["memory_gib"] else "")
        + (f"; GPU {dev['gpu']}" if dev["gpu"] else "; **no GPU**") + " |",
        "| packages | " + ", ".join(f"{k} {v}" for k, v in ver.items()) + f"; Python {dev['python']} |",
        f"| code | commit {results['commit']} |",
        f"| machine load | 1-min load average {results['loadavg_start'][0]:.1f} at the start, "
        f"{results['loadavg_end'][0]:.1f} at the end (5-min: {results['loadavg_end'][1]:.1f}); "
        f"{dev['cores']} cores, shared with other work |",
        f"| command | `{command}` (raw results: `{results['work_dir']}/results.json`, git-ignored) |",
        f"| data | {results['data_origin']} |",
        "",
        "## 1. Quality on real human preference data",
        "",
        "### Data and split",
        "",
        "Each file is split **by prompt** (whole prompts go to the held-out part; no prompt is on both sides, "
        "also across files) into a training file and a held-out file, written under the git-ignored work "
        f"folder `{results['work_dir']}/`. The model trains through `arena.train` on the training file, which "
        "keeps 1/" + str(_setting(results, "data.folds", 5)) + " of it (grouped by prompt) for checkpoint selection; the length "
        "baselines are fit on exactly the rows the model trains on. No row of the held-out file is seen by "
        "any method before it is scored.",
        "",
        md_table(["source", "training rows", "checkpoint-selection rows", "held-out rows", "in main held-out set",
                  "tie rate (train)", "tie rate (held-out)"],
                 [[c["source"], c["train"], c["checkpoint_val"], c["held_out"], "yes" if c["main_eval"] else "no (side set)",
                   f"{c['tie_train']:.1%}" if c["tie_train"] == c["tie_train"] else "-",
                   f"{c['tie_held_out']:.1%}" if c["tie_held_out"] == c["tie_held_out"] else "-"]
                  for c in results["composition"]]),
        "",
        "`hh_rlhf_harmless` has no ties and judges harmlessness, not overall preference. Mixed in as is (2,312 "
        "rows, more than the two other files together) it would teach a tie rate near 0 and wreck calibration on "
        "arena-like data (~27% ties in auto-j). **Choice:** it is limited to a small sample of the training rows "
        "(~9%) and kept **out of the main held-out set**; its own held-out prompts are scored as a separate side "
        "set. The main held-out set is mostly auto-j (arena-like, many task scenarios, ties ~27%) plus a few "
        "PandaLM prompts (PandaLM has ~6 response pairs per prompt, so a few prompts make many rows).",
        "",
        "### Results",
        "",
    ]
    parts += _quality_tables(results)
    parts += [
        "",
        f"![log loss by method]({quality_png.name})",
        "",
        "Methods: *class prior* = training rows' label frequencies; *length LR* = scikit-learn StandardScaler + "
        "multinomial LogisticRegression (C=1) on `arena.data.length_features` (characters, words, lines and "
        "turns of A and B, their logs, differences, log-ratios and absolute log-ratios, prompt length); "
        "*+ calibration* = that regression followed by a temperature and class biases fit on its own 5-fold "
        "(grouped by prompt) out-of-fold training predictions; *default model at step 0* = the default model's "
        "head as training starts (`model.head_init: prior` fits a cross-validated length regression on the head's "
        "standardised features; the hidden-state part starts at zero), averaged over both orders; *default "
        "model* = `configs/default.yaml` (Gemma-3 270M nf4 + LoRA r16 on layers 9-17, prompt.max_length "
        f"{_setting(results, 'prompt.max_length', 256)}, 1 epoch, batch 4 x 2) trained on the training rows"
        + (" with " + ", ".join(f"`{o}`" for o in results["extra_overrides"]) if results["extra_overrides"] else "")
        + ". *Train time* is the wall time of fitting on the training rows (the model's excludes loading).",
        "",
        _verdict(results),
        "",
        _model_note(results),
        "",
        f"## 2. Speed on this {'GPU' if dev['gpu'] else 'CPU'} (same trained model, same held-out rows)",
        "",
        f"{s['rows']} held-out rows, median of {s['repeats']} timed repeats after an untimed warm-up pass over the same batches; "
        f"ratios matter, absolute numbers depend on this shared {dev['cores']}-core machine.",
        "",
    ]
    parts += _speed_tables(results)
    parts += [
        "",
        f"![padding and throughput]({speed_png.name})",
        "",
        "## 3. The full-size GPU path: not measured by this command",
        "",
        ("This benchmark ran without a GPU, so the full-size path — " if not dev["gpu"] else
         f"The speed part above ran on {dev['gpu']} with the default 270M model; the full-size path — ")
        + "Gemma-2 9B nf4 + LoRA (`configs/gemma2-9b-qlora-t4x2.yaml`), fp16 on Kaggle T4x2 with one inference "
        "worker per GPU — was **not measured**. None of the numbers above transfer to it: at 9B and in fp16 on a T4, the "
        "relative costs of padding, TTA and 8-bit vs 4-bit weights differ from a small model's. To measure it, on a GPU "
        "machine with the base weights in a local folder:",
        "",
        "```bash",
        "arena train --config configs/gemma2-9b-qlora-t4x2.yaml --set model.path=/path/to/gemma-2-9b-it \\",
        "    --set data.train=data/train.csv                  # metrics.json: train_examples_per_second, val log loss",
        "arena predict --run runs/<run> --data data/train.csv --tta \\",
        "    --set infer.quantization=int8                    # compare with nf4: time and log loss",
        "```",
        "",
        "and the speed part of this benchmark runs unchanged there (`arena.bench._speed` uses whatever device "
        "the model loads on).",
        "",
        "## Reproduce",
        "",
        "```bash",
        "make bench                         # = arena bench --out docs/benchmarks.md (writes this page and its PNGs)",
        "arena bench --quick --out /tmp/bench.md   # smoke test at tiny sizes (~2 min; its numbers mean nothing)",
        "```",
        "",
    ]
    out.write_text("\n".join(parts), encoding="utf-8")
    return out


def _setting(results: dict, key: str, default):
    for o in results["overrides"]:
        if o.startswith(key + "="):
            return o.split("=", 1)[1]
    return default


def _quality_tables(results: dict) -> list[str]:
    q = results["quality"]
    held = q["held-out"]
    per_source = [k for k in held if k != "all"]
    side = [k for k in q if k != "held-out"]
    headers = ["method", "log loss", "accuracy"] + [f"log loss: {s}" for s in per_source] \
        + [f"log loss: {s} (side set)" for s in side] + ["train time"]
    rows = []
    for m, sc in held["all"].items():
        row = [m, sc["log_loss"], sc["accuracy"]]
        row += [held[s][m]["log_loss"] for s in per_source]
        row += [q[s]["all"][m]["log_loss"] for s in side]
        fit = results["fit_seconds"].get(m)
        row.append(_fmt_s(fit) if fit is not None else ("-" if m in ("uniform",) else "< 1 s"))
        rows.append(row)
    counts = ", ".join(f"{s} {held[s]['uniform']['rows']}" for s in per_source)
    out = [f"Held-out rows: {held['all']['uniform']['rows']}" + (f" ({counts})" if counts else "")
           + "".join(f"; side set {s}: {q[s]['all']['uniform']['rows']}" for s in side) + ".", "",
           md_table(headers, rows)]
    ts = results["train_summary"]
    out += ["", f"Default model training: {ts.get('train_rows')} rows, {ts.get('global_step')} optimizer steps "
            f"(global batch {ts.get('global_batch')}), train wall time {_fmt_s(ts.get('train_wall_seconds'))} "
            f"({ts.get('train_examples_per_second') or 0:.2f} examples/s), total with checkpoint selection and its "
            f"own validation {_fmt_s(ts.get('total_wall_seconds'))}. Held-out prediction with swap TTA: "
            + ", ".join(f"{k} {_fmt_s(v)}" for k, v in results["eval_wall_seconds"].items()) + "."]
    return out


def _model_note(results: dict) -> str:
    """What the numbers mean for the default recipe, written from the measured values."""
    q = results["quality"]["held-out"]["all"]
    ts = results["train_summary"]
    lr = q["length LR"]["log_loss"]
    model_tta = q["default model + swap TTA"]["log_loss"]
    step0 = q[STEP0]["log_loss"]
    text = [f"What limits it: the default recipe is sized for `make train` on 2 CPU cores — "
            f"{ts.get('train_rows')} rows, {ts.get('global_step')} optimizer steps, a 270M base model reading "
            f"{_setting(results, 'prompt.max_length', 256)} tokens of prompt and both responses. "]
    if model_tta >= step0:
        text.append("Fine-tuning did not improve on the head's starting length regression on these rows, so "
                    "what the model gets right comes from the length features; the text itself added nothing "
                    "measurable at this size. ")
    else:
        text.append(f"Fine-tuning improved on the head's starting length regression by {step0 - model_tta:.4f}, "
                    f"so the model learns something from the text beyond the lengths. ")
    if model_tta >= lr or model_tta >= step0:
        goal = "beat the length baseline" if model_tta >= lr else "make the text count"
        text.append(f"What would {goal}: more training signal rather than different constants — "
                    "more rows and steps (the competition has 57k rows; this benchmark trains on a few hundred), "
                    "longer windows (`prompt.max_length` 1024-2048 as in the competition recipes) and a larger base "
                    "model on a GPU (the 9B recipes). Until then, the head's length-regression start "
                    "(`model.head_init: prior`) is what keeps a small model level with the length features.")
    return "".join(text)


def _padded_ratio(p: dict) -> str:
    fixed, dyn = p["fixed_slots"] - p["real_tokens"], p["sorted_slots"] - p["real_tokens"]
    if fixed == 0:
        return "no padding either way"
    if dyn == 0:
        return f"{fixed} padded tokens avoided (all)"
    return f"{fixed / dyn:.1f}x fewer padded tokens"


def _rate_and_time_rows(n: int, timed: dict) -> list[list]:
    """Rows/s and median time of timed["sorted"] vs timed["fixed"] on the same n rows."""
    sorted_s, fixed_s = timed["sorted"]["median_s"], timed["fixed"]["median_s"]
    return [["rows/s (median)", f"{n / sorted_s:.2f}", f"{n / fixed_s:.2f}", f"{fixed_s / sorted_s:.2f}x"],
            ["median time for the rows", _fmt_s(sorted_s), _fmt_s(fixed_s), f"{sorted_s / fixed_s:.2f}x"]]


def _slots_row(label: str, p: dict) -> list:
    return [label, str(p["sorted_slots"]), str(p["fixed_slots"]), f"{p['sorted_slots'] / p['fixed_slots']:.2f}x"]


def _long_table(s: dict) -> list[str]:
    """The timed sorted-vs-fixed comparison at the Kaggle recipes' window, when it ran."""
    lc = s.get("long")
    if not lc:
        return []
    n, p = s["rows"], lc["padding"]
    return ["", f"At the default's window most rows are truncated to max_length, so there is little padding to save. "
            f"The same {n} rows at max_length {lc['max_length']} (a longer window; the Kaggle recipes' 1024-2048 are "
            f"too slow to time on a CPU, their token-slot savings are in the next table; batches of at most "
            f"{lc['max_batch_tokens']} tokens, fixed: {lc['fixed_batch_size']} rows per batch; max abs logit "
            f"difference {lc['max_abs_logit_diff_sorted_vs_fixed']:.2g}):", "",
            md_table(["", "sorted dynamic", f"fixed {lc['max_length']}", "ratio (sorted / fixed)"], [
                *_rate_and_time_rows(n, lc),
                ["padded share of token slots", f"{p['sorted_padding_fraction']:.1%}",
                 f"{p['fixed_padding_fraction']:.1%}", _padded_ratio(p)],
                _slots_row("token slots processed", p),
            ])]


def _speed_tables(results: dict) -> list[str]:
    s = results["speed"]
    n = s["rows"]
    p, pa = s["padding"], s["padding_all_held_out"]
    out = ["### Sorted dynamic batching vs fixed padding", "",
           f"Sorted: `predict.logits_for` (rows sorted by length, each batch padded to its longest row, at most "
           f"{_setting(results, 'infer.max_batch_tokens', 4096)} tokens and 16 rows; batch sizes "
           f"{s['sorted_batch_sizes']}). Fixed: every row left-padded to max_length {s['max_length']} in input order, "
           f"{s['fixed_batch_size']} rows per batch (`bench.fixed_padding_logits`). The two agree: max abs logit "
           f"difference {s['max_abs_logit_diff_sorted_vs_fixed']:.2g}.", "",
           md_table(["", "sorted dynamic", f"fixed {s['max_length']}", "ratio (sorted / fixed)"], [
               *_rate_and_time_rows(n, s),
               [f"padded share of token slots ({n} timed rows)", f"{p['sorted_padding_fraction']:.1%}",
                f"{p['fixed_padding_fraction']:.1%}", _padded_ratio(p)],
               [f"padded share of token slots (all {s['held_out_rows']} held-out rows)",
                f"{pa['sorted_padding_fraction']:.1%}", f"{pa['fixed_padding_fraction']:.1%}", _padded_ratio(pa)],
               _slots_row("token slots processed (timed rows)", p),
           ]),
           *_long_table(s),
           "", f"How much padding sorted batching saves depends on how many rows fill the window. Over all "
           f"{s['held_out_rows']} held-out rows, by max_length (Gemma-3 tokenizer, this prompt format; token counts "
           f"only, not timed; batches of at most max(4096, 4 x max_length) tokens and "
           f"{_setting(results, 'infer.max_batch_size', 16)} rows):", "",
           md_table(["max_length", "median row (tokens)", "rows at max_length (truncated)", "padded share, sorted",
                     "padded share, fixed", "token slots fixed / sorted"],
                    [[r["max_length"], f"{r['median_tokens']:.0f}", f"{r['truncated_share']:.0%}",
                      f"{r['sorted_padding_fraction']:.1%}", f"{r['fixed_padding_fraction']:.1%}",
                      f"{r['fixed_slots'] / r['sorted_slots']:.2f}x"] for r in s.get("padding_by_length", [])]),
           "", "### Cost of swap TTA", "",
           "The plain A/B pass (`predict.logits_for`, as timed above) against both passes of swap TTA (A/B, then "
           "B/A with the probabilities averaged back, as `predict.predict_frame` does); rows tokenised beforehand "
           "in both.", "",
           md_table(["", "plain", "swap TTA", "ratio (TTA / plain)"], [
               ["median time", _fmt_s(s["plain"]["median_s"]), _fmt_s(s["tta"]["median_s"]),
                f"{s['tta']['median_s'] / s['plain']['median_s']:.2f}x"],
               ["rows/s", f"{n / s['plain']['median_s']:.2f}", f"{n / s['tta']['median_s']:.2f}", ""],
           ]),
           "", "### Quantization at inference (bitsandbytes on CPU)", "",
           "The same trained adapter loaded over the base model quantized to nf4 (as trained), 8-bit, or not at all "
           "(float32), timed with sorted batching on the same rows. Log loss on the timed rows shows whether the "
           "predictions change.", ""]
    rows = []
    base = s["quantization"]["nf4"]["median_s"]
    for q, v in s["quantization"].items():
        if "error" in v:
            rows.append([q, "failed", "-", "-", "-", "-", v["error"]])
            continue
        rows.append([q, f"{n / v['median_s']:.2f}", f"{base / v['median_s']:.2f}x", _fmt_s(v["load_s"]),
                     f"{v['log_loss']:.4f}", f"{v['max_prob_diff_vs_nf4']:.3f}",
                     ", ".join(f"{t:.1f}" for t in v["times_s"]) + " s"])
    out.append(md_table(["weights", "rows/s (median)", "speed vs nf4", "load time", f"log loss ({n} rows)",
                         "max prob. diff vs nf4", "all repeats"], rows))
    return out


