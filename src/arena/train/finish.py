"""The finish of a run, after its last optimizer step: the adapter saved, the validation rows predicted in both orders
(the plain one is the best checkpoint's own evaluation when it was kept), val_predictions.csv, the loss curve, and
metrics.json written last: a run is finished when it has metrics.json (RunFolder.is_finished). Under DDP every
process predicts its share of the rows, dealt by tokens, and the main process merges the shares through files (no
collective that could time out while one process is slower) and writes; under FSDP every forward needs every
process, so each runs every row and the main one writes."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from arena import data, metrics, predict, processes, segments, task
from arena import model as model_mod
from arena.config import Config
from arena.layout import RunFolder, stamp
from arena.train.selection import EvalLogits, start_eval
from arena.train.trainer import PreferenceTrainer, WallClock
from arena.writes import atomic_file, write_text

if TYPE_CHECKING:
    from arena.train.run import Built, Split

SHARDS = ".finish-shards-"  # in the run folder, while the processes' shares of the validation rows are merged


def finish(cfg: Config, run: RunFolder, built: Built, split: Split, trainer: PreferenceTrainer, result,
           clock: WallClock) -> dict | None:
    """Save, evaluate, summarise; the summary on the main process, None on the others."""
    shards = shard_folder(cfg, run)  # while every process is still in step
    save_adapter(cfg, run, built, split, trainer)
    scores = evaluate(cfg, run, built, split, trainer, shards)
    return write_summary(cfg, run, built, split, trainer, result, scores, clock) if scores is not None else None


def shard_folder(cfg: Config, run: RunFolder) -> Path:
    """Where the processes leave their shares of the validation rows: a new folder named by the main process, which
    first removes what a killed finish left (so no share of an earlier attempt is merged)."""

    def fresh() -> str:
        for old in run.root.glob(SHARDS + "*"):
            shutil.rmtree(old, ignore_errors=True)
        return str(run.root / f"{SHARDS}{stamp()}")

    return Path(processes.decided_by_main(fresh, model_mod.device_for(cfg) == "cpu"))


def save_adapter(cfg: Config, run: RunFolder, built: Built, split: Split, trainer: PreferenceTrainer) -> None:
    """The trained adapter and head into the run folder: the one place a run saves them. Under FSDP the weights
    are sharded: every process takes part in gathering the trainable ones, the main one writes."""
    state_dict = trainable_state_dict(trainer.model) if built.runtime.sharded else None
    if trainer.is_world_process_zero():
        model_mod.save_trained(trainer.model, built.tokenizer, run, model_mod.head_bias(cfg, split.prior),
                               built.scaler, state_dict=state_dict, class_prior=split.prior)


def trainable_state_dict(model) -> dict:
    """The trainable weights (adapter and head: what peft saves) of a model FSDP shards, whole, on the main process's
    CPU; empty on the others. Every process takes part. Only these are gathered: a full state dict (accelerate's
    get_state_dict) would bring the whole frozen base into the main process's memory, and under FSDP 1 so would
    torch's `full_state_dict` with `ignore_frozen_params`, which drops the frozen weights only after gathering."""
    from torch.distributed._state_dict_utils import _gather_state_dict  # what get_model_state_dict gathers with
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    shards = get_model_state_dict(model, options=StateDictOptions(ignore_frozen_params=True))  # local shards only
    return _gather_state_dict(shards, cpu_offload=True, ranks_only=(0,))


def evaluate(cfg: Config, run: RunFolder, built: Built, split: Split, trainer: PreferenceTrainer,
             shards: str | Path | None = None) -> dict | None:
    """The trained (best) model on the validation rows, plain and with swap TTA through the inference code; the
    plain order's logits are the best checkpoint's evaluation when the Trainer kept them (EvalLogits.best). The
    scores, and val_predictions.csv (predictions beside the truth) written, on the main process; None on the
    others. Without FSDP the rows are dealt to the processes by tokens and their shares merged from files in
    `shards`; under FSDP every process predicts every row."""
    kept = EvalLogits.of(trainer)
    plain = kept.best(trainer.state) if kept else None
    n, classes = len(split.val), len(split.prior)

    def predict_rows(rows: np.ndarray) -> tuple:
        if not len(rows):
            return rows, np.empty((0, classes)), np.empty((0, classes))
        val = predict.predict_frame(trainer.model, built.tokenizer, split.val.iloc[rows].reset_index(drop=True), cfg,
                                    built.runtime, tta=True, max_length=cfg.prompt.max_length,
                                    feature_scaler=built.scaler, plain_logits=None if plain is None else plain[rows])
        return rows, val["probs_plain"], val["probs"]

    if built.runtime.sharded:
        mine = predict_rows(np.arange(n))
        parts = [mine] if trainer.is_world_process_zero() else None
    else:
        cpu = model_mod.device_for(cfg) == "cpu"
        procs = processes.state(cpu)
        dealt = processes.deal_by_tokens(row_lengths(trainer, kept, n), procs.num_processes)
        parts = processes.collect_shards(predict_rows(np.asarray(dealt[procs.process_index], dtype=int)), shards, cpu)
        if parts is not None and procs.num_processes > 1:
            shutil.rmtree(shards, ignore_errors=True)
            print(f"finish: the {n} validation rows dealt by tokens over {procs.num_processes} processes "
                  f"({' + '.join(str(len(rows)) for rows in dealt)} rows)", flush=True)
    if parts is None:
        return None
    probs_plain, probs = np.full((n, classes), np.nan), np.full((n, classes), np.nan)
    for rows, part_plain, part in parts:
        probs_plain[rows], probs[rows] = part_plain, part
    truth = data.label_matrix(split.val)
    frame = predict.prediction_frame(split.val["id"], probs)
    frame[task.of_config(cfg).true_columns] = truth
    frame["fold"] = cfg.data.fold
    frame = frame.join(segments.segment_columns(split.val))
    with atomic_file(run.val_predictions) as tmp:
        frame.to_csv(tmp, index=False)
    return {
        "val_log_loss": metrics.log_loss(truth, probs_plain),
        "val_accuracy": metrics.accuracy(truth, probs_plain),
        "val_log_loss_tta": metrics.log_loss(truth, probs),
        "val_accuracy_tta": metrics.accuracy(truth, probs),
    }


def row_lengths(trainer: PreferenceTrainer, kept: EvalLogits | None, n: int) -> list[int]:
    """Each validation row's tokens, read from the Trainer's evaluation rows (validation row kept.order[i] at
    position i); without them every row counts one (dealt by count)."""
    if kept is None or trainer.eval_dataset is None or len(trainer.eval_dataset) != n:
        return [1] * n
    lengths = np.ones(n, dtype=int)
    lengths[kept.order] = [len(ids) for ids in trainer.eval_dataset.input_ids]
    return lengths.tolist()


def write_summary(cfg: Config, run: RunFolder, built: Built, split: Split, trainer: PreferenceTrainer, result,
                  scores: dict, clock: WallClock) -> dict:
    """loss_curve.png, then metrics.json (last: it marks the run finished); wall times count the processes before
    a resume too."""
    args, state = trainer.args, trainer.state
    start = start_eval(state.log_history)
    summary = {
        "run_dir": str(run.root),
        "fold": cfg.data.fold,
        "train_rows": len(split.train),
        "val_rows": len(split.val),
        "metric": task.of_config(cfg).metric,
        "uniform_log_loss": math.log(len(split.prior)),
        "prior_log_loss": split.prior_log_loss,
        **scores,
        "best_eval_log_loss": state.best_metric,
        "best_checkpoint": state.best_model_checkpoint,
        # The start's validation log loss (train.eval_on_start), and whether no checkpoint beat it: the run's model
        # is then the start.
        "start_eval_log_loss": start["eval_log_loss"] if start else None,
        "start_kept": start is not None and state.best_global_step == 0,
        "global_step": state.global_step,
        "global_batch": args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size,
        "per_device_batch_size": args.per_device_train_batch_size,
        "grad_accum": args.gradient_accumulation_steps,
        "world_size": args.world_size,
        "swap_augment": cfg.train.swap_augment,
        "distillation": None if split.teachers is None else {
            "teachers": split.teachers.paths, "weight": cfg.train.distill_weight,
            "temperature": cfg.train.distill_temperature, **split.teachers.coverage(split.train["id"])},
        "train_wall_seconds": round(clock.before + result.metrics.get("train_runtime", clock.seconds()), 2),
        "total_wall_seconds": round(clock.seconds(), 2),
        "wall_seconds_before_resume": round(clock.before, 2),
        "train_examples_per_second": result.metrics.get("train_samples_per_second"),
        "device": built.runtime.device,
        "compute_dtype": str(built.runtime.dtype).removeprefix("torch."),
        "history": list(state.log_history),
    }
    plot_curves(summary["history"], run.loss_curve, split.prior_log_loss, summary["uniform_log_loss"])
    write_text(run.metrics, json.dumps(summary, indent=2, default=float))
    return summary


def plot_curves(history: list[dict], path: Path, prior_ll: float, uniform_ll: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train_pts = [(h["step"], h["loss"]) for h in history if "loss" in h]
    eval_pts = [(h["step"], h["eval_log_loss"]) for h in history if "eval_log_loss" in h]
    fig, ax = plt.subplots(figsize=(7, 4))
    if train_pts:
        ax.plot(*zip(*train_pts), label="train loss", alpha=0.7)
    if eval_pts:
        ax.plot(*zip(*eval_pts), marker="o", label="validation log loss")
    ax.axhline(prior_ll, linestyle="--", color="grey", label=f"class prior {prior_ll:.3f}")
    ax.axhline(uniform_ll, linestyle=":", color="grey", label=f"uniform {uniform_ll:.3f}")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("log loss")
    ax.legend()
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
