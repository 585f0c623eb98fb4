"""The variants table: the default model against the techniques that won the competitions, each trained on the same
training file and scored on the same main held-out rows: paired swap, distillation from a teacher, self-distillation,
middle truncation, and two fold models' averaged predictions against their merged adapters (`arena merge`); then
where the inference time goes at equal budgets (benchmarks/spending.py): swap TTA's row order, a gated second
model."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from arena import cli, config, data, metrics, predict, train
from arena.errors import UserError
from arena.layout import RunFolder
from arena.task import THREE_WAY
from benchmarks import baselines
from benchmarks.split import prompt_keys

# Variants in the order of the table: id -> label.
VARIANTS = {
    "default": "default model",
    "paired": "paired swap (train.swap_augment: paired)",
    "distilled": "distilled from a teacher (data.teacher)",
    "self_distilled": "self-distilled (data.teacher: the default model's own predictions)",
    "middle": "middle truncation (prompt.truncation_side: middle)",
    "fold_average": "two fold models, predictions averaged",
    "fold_merged": "two fold models, adapters merged (arena merge)",
}
# A difference from the default counts when its paired (same rows) mean is this many standard errors from zero.
STANDARD_ERRORS = 2.0


def row_log_losses(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Each row's log loss, as metrics.log_loss averages them (rows rescaled to sum to 1, clipped)."""
    p = np.clip(p / p.sum(axis=1, keepdims=True), 1e-15, 1 - 1e-15)
    return -(y * np.log(p)).sum(axis=1)


def versus_default(y: np.ndarray, default: np.ndarray, variant: np.ndarray) -> dict:
    """Log loss difference (variant - default) on the same rows, its standard error and what it means."""
    diff = row_log_losses(y, variant) - row_log_losses(y, default)
    mean, se = float(diff.mean()), float(diff.std(ddof=1) / np.sqrt(len(diff)))
    # identical predictions differ by float noise with a standard error of 0: no difference, not a verdict
    verdict = ("helps" if mean + STANDARD_ERRORS * se < -1e-9 else "hurts" if mean - STANDARD_ERRORS * se > 1e-9
               else "no measurable difference")
    return {"mean": mean, "se": se, "verdict": verdict}


def teacher_predictions(train_csv: Path, out: Path, seed: int) -> dict:
    """The teacher: the length LR's out-of-fold probabilities on every row of the training file (5 folds grouped
    by prompt), written as a data.teacher CSV; returns its description and out-of-fold log loss."""
    from sklearn.model_selection import GroupKFold, cross_val_predict

    df = data.load(train_csv, require_labels=True)
    x, y = data.length_features(df), df["label"].to_numpy()
    groups = pd.factorize(prompt_keys(df))[0]
    folds = min(baselines.CALIBRATION["folds"], len(set(groups)))
    oof = cross_val_predict(baselines.length_lr(seed=seed), x, y, groups=groups, cv=GroupKFold(n_splits=folds),
                            method="predict_proba")
    probs = baselines.full_proba(oof, np.unique(y))
    frame = pd.DataFrame(probs, columns=THREE_WAY.label_columns)
    frame.insert(0, "id", df["id"].to_numpy())
    frame.to_csv(out, index=False)
    return {"what": "length LR, out of fold", "folds": folds, "rows": len(df),
            "oof_log_loss": metrics.log_loss(data.label_matrix(df), probs)}


class Variants:
    """Trains and scores the variants in the benchmark's work folder, against the default run's predictions."""

    def __init__(self, work: Path, overrides: list[str], eval_csv: Path, eval_df: pd.DataFrame, log):
        self.work, self.overrides, self.eval_csv, self.log = work / "variants", overrides, eval_csv, log
        self.work.mkdir()
        self.y = data.label_matrix(eval_df)
        self.ids = eval_df["id"].astype(str).to_numpy()

    def train(self, name: str, *extra: str) -> tuple[RunFolder, dict]:
        overrides = [*self.overrides, f"name=bench-{name}", *extra]
        cfg = config.load(None, overrides)
        self.log(f"variant {name}: training with " + " ".join(extra))
        run = RunFolder(train.train(cfg, origin=config.origin(None, overrides)))
        return run, json.loads(run.metrics.read_text())

    def predict(self, run_dir: Path, name: str) -> np.ndarray:
        """Swap-TTA probabilities of the main held-out rows, in their order, through `arena predict`'s path."""
        self.log(f"variant {name}: predicting {len(self.ids)} held-out rows with swap TTA")
        path = predict.predict_file(run_dir, self.eval_csv, self.work / f"predictions_{name}.csv", tta=True)
        frame = pd.read_csv(path, dtype={"id": str}).set_index("id")
        return frame.loc[self.ids, THREE_WAY.label_columns].to_numpy()

    def row(self, variant: str, probs: np.ndarray, train_seconds: float, default: np.ndarray, **facts) -> dict:
        out = {"id": variant, "log_loss": metrics.log_loss(self.y, probs), "accuracy": metrics.accuracy(self.y, probs),
               "train_seconds": train_seconds, **facts}
        if variant != "default":
            out["vs_default"] = versus_default(self.y, default, probs)
        return out


def measure(work: Path, overrides: list[str], default_run: RunFolder, default_out: dict, lengths: list[int],
            eval_csv: Path, eval_df: pd.DataFrame, seed: int, log) -> dict:
    """Every variant's held-out log loss, accuracy and train time, with its difference from the default; and the
    inference budgets compared (`default_out`: the default model's predict_frame result of the held-out rows with
    swap TTA, `lengths`: their swapped order's token counts)."""
    from benchmarks import spending

    default_probs = default_out["probs"]
    v = Variants(work, overrides, eval_csv, eval_df, log)
    default = json.loads(default_run.metrics.read_text())
    rows = [v.row("default", default_probs, default["train_wall_seconds"], default_probs,
                  steps=default["global_step"], train_rows=default["train_rows"], fold=default["fold"])]

    # Paired swap at the default's optimizer steps: the same compute, every batch half rows and half their twins.
    paired, paired_m = v.train("paired", "train.swap_augment=paired", f"train.max_steps={default['global_step']}")
    rows.append(v.row("paired", v.predict(paired.root, "paired"), paired_m["train_wall_seconds"], default_probs,
                      steps=paired_m["global_step"], train_rows=paired_m["train_rows"],
                      rows_seen=paired_m["global_step"] * paired_m["global_batch"] // 2))

    teacher_csv = v.work / "teacher.csv"
    teacher = teacher_predictions(work / "train.csv", teacher_csv, seed)
    distilled, distilled_m = v.train("distilled", f"data.teacher=[{teacher_csv}]")
    rows.append(v.row("distilled", v.predict(distilled.root, "distilled"), distilled_m["train_wall_seconds"],
                      default_probs, steps=distilled_m["global_step"], train_rows=distilled_m["train_rows"],
                      teacher={**teacher, "weight": distilled_m["distillation"]["weight"],
                               "temperature": distilled_m["distillation"]["temperature"],
                               "covered": distilled_m["distillation"]["per_teacher"][0]}))

    # Self-distillation (WSDM Cup 2025 3rd place): the default model's own swap-TTA predictions of its training rows.
    log(f"variant self_distilled: the default model predicts its {default['train_rows']}-row training file")
    own = predict.predict_file(default_run.root, work / "train.csv", v.work / "self_teacher.csv", tta=True)
    selfd, selfd_m = v.train("self_distilled", f"data.teacher=[{own}]")
    rows.append(v.row("self_distilled", v.predict(selfd.root, "self_distilled"), selfd_m["train_wall_seconds"],
                      default_probs, steps=selfd_m["global_step"], train_rows=selfd_m["train_rows"],
                      covered=selfd_m["distillation"]["per_teacher"][0],
                      weight=selfd_m["distillation"]["weight"]))

    # Middle truncation (WSDM Cup 2025 2nd and 12th place): each over-long part keeps its head and its tail.
    middle, middle_m = v.train("middle", "prompt.truncation_side=middle")
    rows.append(v.row("middle", v.predict(middle.root, "middle"), middle_m["train_wall_seconds"], default_probs,
                      steps=middle_m["global_step"], train_rows=middle_m["train_rows"]))

    # The second fold model: the default recipe with the next fold held out for checkpoint selection.
    fold1, fold1_m = v.train("fold1", f"data.fold={default['fold'] + 1}")
    fold1_probs = v.predict(fold1.root, "fold1")
    both_s = default["train_wall_seconds"] + fold1_m["train_wall_seconds"]
    rows.append(v.row("fold_average", (default_probs + fold1_probs) / 2, both_s, default_probs,
                      fold=fold1_m["fold"], fold1_log_loss=metrics.log_loss(v.y, fold1_probs)))
    merged_dir = v.work / "merged"
    log("variant fold_merged: arena merge of the default run and the fold-1 run")
    started = time.perf_counter()
    if cli.main(["merge", "--run", str(default_run.root), "--run", str(fold1.root), "--out", str(merged_dir)]) != 0:
        raise UserError(f"arena merge of {default_run.root} and {fold1.root} failed (see above)")
    merge_s = time.perf_counter() - started
    merged_probs = v.predict(merged_dir, "fold_merged")
    average = (default_probs + fold1_probs) / 2
    rows.append(v.row("fold_merged", merged_probs, both_s + merge_s, default_probs, merge_seconds=merge_s,
                      vs_average=versus_default(v.y, average, merged_probs),
                      mean_abs_diff_vs_average=float(np.abs(merged_probs - average).sum(axis=1).mean() / 2)))
    budgets = {"tta_order": spending.tta_orders(v.y, default_out["logits"], default_out["logits_swapped"], lengths,
                                                config.load_run(default_run).infer.tta_average),
               "gated": spending.gated_member(v.y, default_probs, fold1_probs, seed, default_out["probs_plain"])}
    return {"labels": VARIANTS, "standard_errors": STANDARD_ERRORS, "rows": len(v.y), "variants": rows,
            "budgets": budgets}
