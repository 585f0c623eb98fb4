"""`train()`: the named steps of one run, writing one never-overwritten run folder: prepare data, build, fit, and
the finish (finish.py: save, evaluate, write the summary)."""

from __future__ import annotations

import gc
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from transformers import TrainerCallback

from arena import config as config_mod
from arena import data, faults, hardware, metrics, processes, prompts, reporting, room, task
from arena import model as model_mod
from arena.budget.callback import attach as attach_budget
from arena.config import Config
from arena.embedded import resolve_model_path
from arena.errors import UserError
from arena.inference.tta import encode_view
from arena.layout import RunFolder
from arena.task import swap_classes
from arena.train.finish import finish
from arena.train.resume import open_run_folder, release_held, resume_point
from arena.train.trainer import (
    EncodedRows,
    EvalLogits,
    NonFiniteGuard,
    PreferenceTrainer,
    RightPadCollator,
    WallClock,
    training_arguments,
)
from arena.writes import output_problems


@dataclass
class Split:
    """Training and validation rows of one run, with the class-prior baseline on validation."""

    train: pd.DataFrame
    val: pd.DataFrame
    prior: np.ndarray  # class frequencies of the training rows (metrics.class_prior)
    prior_log_loss: float  # the prior's log loss on the validation rows
    teachers: data.Teachers | None = None  # data.teacher's probabilities, for distillation


@dataclass
class Built:
    """What training needs besides the data: the model with its adapter, its tokenizer, where it runs, and
    the head's length-feature scaling (None when the head reads no features)."""

    model: torch.nn.Module
    tokenizer: object
    runtime: object
    scaler: dict | None


def check_setup(cfg: Config, resuming: bool = False) -> list[str]:
    """Problems found before any data or model loads: where the run will be written, the optimizer's name."""
    from transformers.training_args import OptimizerNames

    problems = [] if resuming else output_problems(cfg.train.runs_dir, "runs folder", folder=True, may_exist=True)
    problems += reporting.problems(cfg)
    if cfg.train.optim not in {o.value for o in OptimizerNames}:
        problems.append(f"train.optim: {cfg.train.optim!r} is not an optimizer transformers knows "
                        f"(e.g. adamw_torch, paged_adamw_8bit)")
    return problems


def prepare_data(cfg: Config, resuming: bool = False) -> Split:
    """The config's training rows, fold cfg.data.fold held out for validation (grouped by prompt). Every
    problem of the data and the set-up is reported at once, before any model loads."""
    problems = check_setup(cfg, resuming)
    df, teachers = None, None
    try:
        df = data.training_data(cfg.data, task.of_config(cfg))
    except data.DataError as exc:
        problems += exc.problems
    if cfg.data.teacher and df is not None:
        try:
            teachers = data.read_teachers(cfg.data.teacher, df["id"], task.of_config(cfg))
        except UserError as exc:
            problems += exc.problems
    if problems:
        raise UserError(problems=problems)
    folds = data.make_folds(df, cfg.data.folds, cfg.seed)
    train_df = df[folds != cfg.data.fold].reset_index(drop=True)
    val_df = df[folds == cfg.data.fold].reset_index(drop=True)
    if cfg.data.max_rows is not None:
        train_df = train_df.sample(n=min(cfg.data.max_rows, len(train_df)), random_state=cfg.seed).reset_index(drop=True)
    if cfg.train.max_eval_rows is not None and len(val_df) > cfg.train.max_eval_rows:
        val_df = val_df.sample(n=cfg.train.max_eval_rows, random_state=cfg.seed).reset_index(drop=True)
    prior = metrics.class_prior(data.label_matrix(train_df))
    prior_ll = metrics.log_loss(data.label_matrix(val_df), np.tile(prior, (len(val_df), 1)))
    print(f"data: {len(train_df)} train rows, {len(val_df)} validation rows (fold {cfg.data.fold} of {cfg.data.folds})")
    print(f"baselines on validation: uniform log loss {math.log(len(prior)):.4f}, class prior log loss "
          f"{prior_ll:.4f}")
    if teachers is not None:
        cover = teachers.coverage(train_df["id"])
        print(f"distillation: teacher rows among the {cover['rows']} training rows: "
              + ", ".join(f"{n} from {path}" for n, path in zip(cover["per_teacher"], teachers.paths))
              + f"; {cover['without_teacher']} without a teacher learn from their labels only")
    return Split(train_df, val_df, prior, prior_ll, teachers)


def check_base_model(cfg: Config):
    """What the base model must offer this config, checked from its config.json and tokenizer before its weights
    load: the layers and modules the adapter targets exist, and prompt.max_length and infer.max_length hold the
    format's scaffold plus min_tokens of each part. Returns the base model's tokenizer."""
    path = resolve_model_path(cfg.model.path)
    problems = model_mod.adapter_problems(cfg, path) + model_mod.compute_dtype_problems(cfg, model_mod.model_config(path))
    tokenizer = model_mod.load_tokenizer(path)
    problems += [f"{key}: {problem}" for key, length in (("prompt.max_length", cfg.prompt.max_length),
                                                         ("infer.max_length", cfg.infer.max_length))
                 if (problem := prompts.budget_problem(tokenizer, cfg.prompt, cfg.model.family, length))]
    if problems:
        raise config_mod.ConfigError(problems=problems)
    return tokenizer


def build(cfg: Config, split: Split) -> Built:
    """Base model + head (bias at the log class prior) + adapter; the head's feature scaler from training rows."""
    tokenizer = check_base_model(cfg)
    scaler = data.fit_feature_scaler(split.train) if cfg.model.length_features else None
    model, tokenizer, rt = model_mod.build_for_training(
        cfg, class_prior=split.prior, num_features=len(scaler["mean"]) if scaler else 0, tokenizer=tokenizer)
    return Built(model, tokenizer, rt, scaler)


def encode_rows(tokenizer, df: pd.DataFrame, cfg: Config, swap_augment: str, scaler: dict | None,
                teachers: data.Teachers | None = None) -> EncodedRows:
    """Rows as the model reads them, with their teachers' probabilities when given. swap_augment random or
    paired: also every row with A and B swapped, after all the rows in the same order (paired: the training
    sampler keeps each row beside its twin)."""
    labels = data.label_matrix(df)
    ids, features = encode_view(tokenizer, df, cfg, cfg.prompt.max_length, scaler)
    teacher = teachers.for_rows(df["id"]) if teachers is not None else None
    if swap_augment != "none":
        swapped_ids, swapped_features = encode_view(tokenizer, df, cfg, cfg.prompt.max_length, scaler, swap=True)
        ids = ids + swapped_ids
        labels = np.concatenate([labels, swap_classes(labels)])
        if scaler:
            features = np.concatenate([features, swapped_features])
        if teacher is not None:
            swapped = teachers.for_rows(df["id"], swap=True)
            teacher = tuple(np.concatenate([a, b]) for a, b in zip(teacher, swapped))
    return EncodedRows(ids, labels, features, teacher, paired=swap_augment == "paired")


def fit_length_head(features: np.ndarray, labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression of the labels (one-hot or soft) on the head's length features, its
    regularisation chosen by cross-validated log loss on the training rows (5 folds, fewer where the rarest class
    has fewer rows). With a class of fewer than 2 rows there is nothing to cross-validate: the features get no
    weight and the bias is the log class prior."""
    from sklearn.linear_model import LogisticRegressionCV
    from threadpoolctl import threadpool_limits

    n, classes = labels.shape
    # Soft labels: every row once per class, weighted by that class's probability.
    x = np.concatenate([features] * classes)
    y = np.repeat(np.arange(classes), n)
    w = labels.T.reshape(-1)
    keep = w > 0
    rarest = int(np.bincount(y[keep], minlength=classes).min())
    if rarest < 2:
        return np.zeros((classes, features.shape[1])), np.log(metrics.class_prior(labels))
    lr = LogisticRegressionCV(Cs=10, cv=min(5, rarest), scoring="neg_log_loss", max_iter=2000, l1_ratios=(0.0,),
                              use_legacy_attributes=False, random_state=seed)
    # A few thousand rows of a dozen features: BLAS threads only spin against the other processes on the machine
    # (several times slower while another rank or a data loader is busy).
    with threadpool_limits(limits=1, user_api="blas"):
        lr.fit(x[keep], y[keep], sample_weight=w[keep])
    if classes == 2:  # sklearn's binary form, the logit of class 1: as softmax logits (0, z)
        return np.concatenate([np.zeros_like(lr.coef_), lr.coef_]), np.concatenate([[0.0], lr.intercept_])
    return lr.coef_, lr.intercept_


def make_trainer(cfg: Config, run: RunFolder, built: Built, split: Split, callbacks=()) -> PreferenceTrainer:
    """The encoded rows and the Trainer; with `model.head_init: prior` and length features, the head starts
    at a length-feature logistic regression fit on the training rows."""
    train_rows = encode_rows(built.tokenizer, split.train, cfg, cfg.train.swap_augment, built.scaler, split.teachers)
    if built.scaler and cfg.model.head_init == "prior":
        model_mod.init_feature_head(built.model, *fit_length_head(train_rows.features, train_rows.labels, cfg.seed))
    # Evaluation order does not change the metric: sorted by length, eval batches carry little padding.
    val_rows = encode_rows(built.tokenizer, split.val, cfg, swap_augment="none", scaler=built.scaler)
    order = np.argsort([len(x) for x in val_rows.input_ids], kind="stable")
    eval_logits = EvalLogits(order, split.val["id"].to_numpy())
    trainer = PreferenceTrainer(
        model=built.model,
        args=training_arguments(cfg, run, built.runtime),
        data_collator=RightPadCollator(built.tokenizer.pad_token_id),
        train_dataset=train_rows,
        eval_dataset=val_rows.subset(order),
        compute_metrics=eval_logits,
        callbacks=[eval_logits, *callbacks],
    )
    reporting.attach(trainer, run)
    return trainer


class PastTheEnd(Exception):
    """Raised by NoStepPastTheEnd before a step past the run's last one begins."""


class NoStepPastTheEnd(TrainerCallback):
    """Stops a step past max_steps before it runs. The Trainer resumed from a checkpoint of the run's last step (a run
    stopped for time or killed in its finish) would train one whenever that step is not an epoch's last: it skips the
    epoch's trained batches and steps again before it checks max_steps."""

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps:
            raise PastTheEnd


def fit(trainer: PreferenceTrainer, checkpoint: str | None):
    """Train (from `checkpoint` when resuming); the best checkpoint is loaded at the end. Resumed at the run's last
    step, nothing is trained: the Trainer loads the checkpoint (its state, its weights) and the training ends there
    as the Trainer ends it, with the best checkpoint's weights."""
    guard = NoStepPastTheEnd()
    trainer.add_callback(guard)
    if checkpoint is not None:  # the start was evaluated (and saved) by the run's first process, if at all
        trainer.args.eval_on_start = False
    try:
        with room.disk_full_is_an_error(trainer.args.output_dir, "a checkpoint", "free some room, then `arena train --resume`"):
            return trainer.train(resume_from_checkpoint=checkpoint)
    except PastTheEnd:
        return end_at_the_last_step(trainer)
    finally:
        trainer.remove_callback(guard)


def end_at_the_last_step(trainer: PreferenceTrainer):
    """What the Trainer does when its last step is done (load_best_model_at_end, on_train_end), after PastTheEnd."""
    from transformers.trainer_utils import TrainOutput

    trainer.is_in_train = False
    if trainer.args.load_best_model_at_end and trainer.state.best_model_checkpoint is not None:
        trainer._load_best_model()  # PreferenceTrainer's: onto each process's own device
    trainer.control = trainer.callback_handler.on_train_end(trainer.args, trainer.state, trainer.control)
    print(f"step {trainer.state.global_step} is the run's last: nothing is left to train; the finish runs with the "
          f"weights of {Path(trainer.state.best_model_checkpoint or 'its last checkpoint').name}")
    return TrainOutput(trainer.state.global_step, 0.0, {"train_runtime": 0.0})


def train(cfg: Config, resume: str | None = None, callbacks=(), origin: dict | None = None) -> Path:
    """Train one run (validation on fold cfg.data.fold); returns the run folder. `callbacks`: extra
    TrainerCallbacks (progress, early stopping, tests that stop a run). `origin`: config.origin(), stored as the
    run's recipe.json for `arena runs`. The run's model is freed when it returns: the next fold of `arena cv` or
    point of `arena sweep` starts without its weights."""
    try:
        return train_steps(cfg, resume, callbacks, origin)
    finally:
        release_held()
        free_memory()


def free_memory() -> None:
    """Frees a finished run's model, which accelerate keeps in reference cycles (Accelerator._models, the patched
    forward that refers back to its model): the cyclic collector alone frees them, whenever it happens to run.
    (After an exception the traceback still holds the run's frame, and with it the model.)"""
    gc.collect()
    hardware.empty_cache()


def train_steps(cfg: Config, resume: str | None, callbacks, origin: dict | None) -> Path:
    """train()'s named steps, in a frame of their own: once it is gone, nothing but cycles holds the model."""
    clock = WallClock(time.time())
    wall_hours = cfg.train.max_wall_hours  # this process's budget: the invocation's, never a resumed run's stored one
    cpu = model_mod.device_for(cfg) == "cpu"
    processes.state(cpu)  # once, before anything else: its timeout, and this process's GPU before weights load
    run, checkpoint = None, None
    if resume:
        run, checkpoint, moved = processes.decided_by_main(lambda: resume_point(cfg, resume), cpu)
        run, cfg = RunFolder(run), config_mod.load(RunFolder(run).config, moved)  # where its inputs are now
        print(f"resuming {run.root} from {checkpoint or 'its start (no complete checkpoint)'}")
        clock.before = WallClock.recorded(checkpoint)
    torch.manual_seed(cfg.seed)
    split = prepare_data(cfg, resuming=run is not None)
    room.check_room(cfg)  # before the model loads
    built = build(cfg, split)
    run = run or open_run_folder(cfg, cpu, origin)
    print(f"run folder: {run.root}  (device {built.runtime.device}, compute dtype "
          f"{str(built.runtime.dtype).removeprefix('torch.')})")
    guard = NonFiniteGuard(cfg.train.nan_patience, str(built.runtime.dtype).removeprefix("torch."))
    trainer = make_trainer(cfg, run, built, split, run_callbacks(clock, guard, callbacks))
    # a stop for time raises budget.BudgetStop
    attach_budget(trainer, run.root, wall_hours, clock.started, built.runtime.sharded, EvalLogits.of(trainer))
    with reporting.environment(cfg, run):
        result = fit(trainer, checkpoint)
    guard.raise_if_tripped(run.root)
    summary = finish(cfg, run, built, split, trainer, result, clock)
    if summary is not None:
        print(f"validation log loss {summary['val_log_loss']:.4f} (swap TTA {summary['val_log_loss_tta']:.4f}), "
              f"accuracy {summary['val_accuracy']:.3f} (swap TTA {summary['val_accuracy_tta']:.3f}); class-prior "
              f"baseline {split.prior_log_loss:.4f}, uniform {summary['uniform_log_loss']:.4f}; the task is scored "
              f"by {summary['metric']}")
        if summary["start_kept"]:
            print(f"no checkpoint beat the start on the validation rows (log loss {summary['start_eval_log_loss']:.4f}):"
                  f" the run's model is the start, before its first optimizer step")
        print(f"train wall time {summary['train_wall_seconds']:.0f} s; run saved to {run.root}")
    return run.root


def run_callbacks(clock: WallClock, guard: NonFiniteGuard, extra=()) -> list:
    """Every TrainerCallback a run attaches besides the evaluation's, in one list (the one place to add one)."""
    return [clock, guard, *faults.training_callbacks(), *extra]
