"""The training projection: wall time per epoch of a recipe on the chosen GPUs, from the planner's throughput model
(forward FLOPs per token at the efficiency fitted to the public inference figure) times the FLOPs a training step
adds, plus the Trainer's evaluations and the run's finish (forward passes over the validation rows at the same
throughput), and how many Kaggle sessions (kernel versions, each stopping before kaggle.session_hours) it needs."""

from __future__ import annotations

import math
from pathlib import Path

from arena import data, planner, prompts, task
from arena import model as model_mod
from arena.config import SAMPLE, Config
from arena.errors import UserError

# The competition's train.csv, for a projection where data.train is not on disk.
COMPETITION_TRAIN_ROWS = 57_477
TOKEN_SAMPLE_ROWS = 1000  # token lengths are measured on at most this many training rows
# Set-up of each session before its first step: pip install from the wheels dataset, copying the previous version's
# run folder, loading and quantising the base model. An allowance, as the inference pre-flight's.
SETUP_ALLOWANCE_S = 15 * 60
FINISH_PASSES = 1  # validation passes of the finish after the last step (train/finish.py)


def flops_factor(cfg: Config, num_layers: int) -> tuple[float, str]:
    """A training step's FLOPs per token over a forward pass's: the forward, then backward through the layers from
    the lowest adapted one up (activation gradients, ~1 forward of those layers; the adapters' own weight gradients
    are negligible) and, with gradient checkpointing, their forward again. Gemma-2 9B with LoRA on layers 16-41 and
    checkpointing: 1 + 2 x 26/42 = 2.24; counted on the meta device: 19.6 / 8.7 TFLOP for 1 x 512 tokens = 2.25."""
    lowest = min(cfg.peft.layers_to_transform) if cfg.peft.method == "lora" and cfg.peft.layers_to_transform else 0
    share = (num_layers - lowest) / num_layers
    checkpointing = cfg.model.gradient_checkpointing != "off"  # "auto" is on for GPUs
    factor = 1 + share * (2 if checkpointing else 1)
    return factor, (f"1 forward + {share:.2f} of the layers (from layer {lowest} of {num_layers}) backward"
                    + (" and recomputed (gradient checkpointing)" if checkpointing else ""))


def _training_rows(cfg: Config, token_csv: str | Path | None = None):
    """(rows of data.train + data.extra, a sample of rows to measure tokens on, description). Where data.train is
    not on disk: the competition's row count, tokens measured on `token_csv` (else generated rows)."""
    if cfg.data.train != SAMPLE and not Path(cfg.data.train).is_file():
        missing = f"{COMPETITION_TRAIN_ROWS:,} rows (the competition's train.csv: {cfg.data.train} is not here)"
        if token_csv is not None:
            df = data.load(token_csv)
            return COMPETITION_TRAIN_ROWS, df.sample(min(TOKEN_SAMPLE_ROWS, len(df)), random_state=0), (
                f"{missing}; tokens measured on {min(TOKEN_SAMPLE_ROWS, len(df))} rows of {token_csv}")
        return COMPETITION_TRAIN_ROWS, data.generate_sample(200, seed=0), (
            f"{missing}; tokens measured on 200 generated rows, shorter than real ones: a lower bound "
            f"(--test-csv measures real rows)")
    try:
        df = data.training_data(cfg.data, task.of_config(cfg))
    except data.DataError as exc:
        raise UserError(problems=exc.problems) from None
    sample = df.sample(min(TOKEN_SAMPLE_ROWS, len(df)), random_state=0)
    return len(df), sample, f"{len(df):,} rows of {cfg.data.train}" + (" + data.extra" if cfg.data.extra else "")


def project_training(cfg: Config, tokenizer, tokenizer_note: str, gpu: str = "t4", gpus: int = 2,
                     token_csv: str | Path | None = None) -> dict:
    """Hours per epoch (training steps + the evaluations during it) on `gpus` x `gpu`, the finish after the last
    step, and Kaggle sessions. `token_csv`: rows to measure tokens on when data.train is not on disk."""
    rows, sample, rows_note = _training_rows(cfg, token_csv)
    ids = prompts.encode_frame(tokenizer, sample, cfg.prompt, cfg.model.family, max_length=cfg.prompt.max_length)
    mean_tokens = sum(len(x) for x in ids) / max(len(ids), 1)
    hf_config, source = planner.architecture(cfg)
    linear = planner._linear_numel(model_mod.meta_backbone(hf_config))
    forward = planner.forward_flops_per_token(hf_config, linear, mean_tokens)
    factor, factor_note = flops_factor(cfg, hf_config.num_hidden_layers)
    device = planner.GPUS[gpu]
    efficiency = planner.anchor_efficiency()
    flops_per_s = gpus * device.tensor_tflops * 1e12 * efficiency

    folds = cfg.data.folds
    train_rows = math.floor(rows * (folds - 1) / folds)
    if cfg.data.max_rows is not None:
        train_rows = min(train_rows, cfg.data.max_rows)
    val_rows = rows - math.floor(rows * (folds - 1) / folds)
    eval_rows = min(val_rows, cfg.train.max_eval_rows or val_rows)
    epoch_rows = train_rows * (2 if cfg.train.swap_augment != "none" else 1)
    global_batch = cfg.train.per_device_batch_size * cfg.train.grad_accum * gpus
    steps_per_epoch = math.ceil(epoch_rows / global_batch)
    steps = math.ceil(steps_per_epoch * cfg.train.epochs) if cfg.train.max_steps < 0 else cfg.train.max_steps
    epochs = steps / steps_per_epoch
    eval_every = cfg.train.eval_steps if cfg.train.eval_steps >= 1 else math.ceil(cfg.train.eval_steps * steps)
    evals = math.ceil(steps / eval_every)  # the Trainer also evaluates the last step, whatever eval_steps says

    train_s = steps * global_batch * mean_tokens * forward * factor / flops_per_s
    pass_s = eval_rows * mean_tokens * forward / flops_per_s  # one forward pass over the validation rows
    eval_s = evals * pass_s
    # train/finish.py: the swapped order of the validation rows (the plain order is the best evaluation's, kept)
    finish_s = FINISH_PASSES * pass_s
    total_h = (train_s + eval_s + finish_s) / 3600
    epoch_h = (train_s + eval_s) / 3600 / epochs
    evals_per_epoch = round(evals / epochs, 1)
    k = cfg.kaggle
    usable_h = k.session_hours - k.session_margin_hours - SETUP_ALLOWANCE_S / 3600
    sessions = math.ceil(total_h / usable_h) if usable_h > 0 else None
    return {
        "gpu": gpu, "gpus": gpus, "rows": rows, "train_rows": train_rows, "epoch_rows": epoch_rows,
        "eval_rows": eval_rows, "evals_per_epoch": evals_per_epoch, "mean_tokens_per_row": round(mean_tokens, 1),
        "global_batch": global_batch, "steps": steps, "epochs": round(epochs, 3),
        "steps_per_epoch": steps_per_epoch,
        "train_hours_per_epoch": round(train_s / 3600 / epochs, 2),
        "eval_hours_per_epoch": round(eval_s / 3600 / epochs, 2), "evals": evals,
        "finish_hours": round(finish_s / 3600, 2),
        "hours_per_epoch": round(epoch_h, 2), "total_hours": round(total_h, 2),
        "session_hours": k.session_hours, "session_margin_hours": k.session_margin_hours,
        "setup_hours": round(SETUP_ALLOWANCE_S / 3600, 2), "usable_hours_per_session": round(usable_h, 2),
        "sessions": sessions,
        "method": (f"{rows_note}; {train_rows:,} training rows (fold {cfg.data.fold} of {folds} held out)"
                   f"{' x 2 (swapped twins)' if epoch_rows > train_rows else ''}, {mean_tokens:.0f} tokens per row "
                   f"at prompt.max_length {cfg.prompt.max_length} ({tokenizer_note}); {forward / 1e9:.1f} GFLOP per "
                   f"token forward ({source}) x {factor:.2f} for a training step ({factor_note}); {gpus} x "
                   f"{device.name} at {device.tensor_tflops:g} TFLOP/s x efficiency {efficiency:.3f}, fitted to "
                   f"{planner.ANCHOR['source']}. Projected, not measured"),
    }


def format_training(p: dict) -> str:
    lines = [f"training projection ({p['gpus']} x {p['gpu'].upper()}, data-parallel):",
             f"  method: {p['method']}",
             f"  one epoch: {p['epoch_rows']:,} rows = {p['steps_per_epoch']} steps of global batch "
             f"{p['global_batch']}: {p['train_hours_per_epoch']:.2f} h training + {p['eval_hours_per_epoch']:.2f} h "
             f"for {p['evals_per_epoch']:g} evaluations of {p['eval_rows']:,} rows = {p['hours_per_epoch']:.2f} h per "
             f"epoch; {p['epochs']:g} epoch(s), {p['steps']} steps with {p['evals']} evaluations, then the finish "
             f"({p['finish_hours']:.2f} h: the swapped order of the {p['eval_rows']:,} validation rows): "
             f"{p['total_hours']:.2f} h"]
    if p["sessions"] is None:
        lines.append(f"  Kaggle sessions: none can train: kaggle.session_hours {p['session_hours']} h leaves nothing "
                     f"after the {p['session_margin_hours']} h margin and {p['setup_hours']} h set-up")
    else:
        lines.append(f"  Kaggle sessions: {p['total_hours']:.2f} h / {p['usable_hours_per_session']:.2f} h of training "
                     f"per session ({p['session_hours']:g} h limit - {p['session_margin_hours']:g} h margin - "
                     f"{p['setup_hours']:g} h set-up) = {p['sessions']} session(s): `arena kaggle train`, then "
                     f"`arena kaggle train --resume` {p['sessions'] - 1} time(s)")
    return "\n".join(lines)
