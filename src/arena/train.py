"""Training on the HF Trainer: the PreferenceTrainer and its arguments, `train()` (named steps writing one
never-overwritten run folder: prepare data, build, fit, evaluate, write the summary), and K-fold CV on top."""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from arena import config as config_mod
from arena import data, metrics, processes, prompts, reporting
from arena.budget.callback import attach as attach_budget
from arena.config import Config
from arena.errors import UserError
from arena.layout import LABEL_COLUMNS, TRUE_COLUMNS, CVFolder, RunFolder, new_folder, swap_classes
from arena.writes import atomic_file, free_bytes, output_problems, write_text

# ---- the Trainer ------------------------------------------------------------------------------------


@dataclass
class PreferenceTrainingArguments(TrainingArguments):
    """TrainingArguments plus what the preference trainer adds."""

    head_learning_rate: float | None = field(default=None, metadata={
        "help": "learning rate of the score head (None: learning_rate). The head reads RMS-normalised hidden "
                "states and standardised length features, on another scale than the adapter's weights."})
    distill_weight: float = field(default=0.5, metadata={
        "help": "share of the loss given to the KL divergence to the teachers, on rows a teacher covers"})
    distill_temperature: float = field(default=1.0, metadata={"help": "temperature of the teachers and the model"})
    teacher_weights: list[float] | None = field(default=None, metadata={
        "help": "weight of each teacher's KL term (None: equal); renormalised over the teachers covering a row"})


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against label probabilities (one-hot or soft votes)."""
    return -(target * torch.log_softmax(logits.float(), dim=-1)).sum(-1).mean()


def distillation_loss(logits: torch.Tensor, labels: torch.Tensor, teacher: torch.Tensor, covered: torch.Tensor,
                      weight: float, temperature: float, teacher_weights: list[float] | None) -> torch.Tensor:
    """Per row (1 - weight) * cross-entropy on the labels + weight * T^2 * KL(teacher_T || model_T), the KL terms
    averaged over the teachers covering the row (teacher_weights); rows no teacher covers: the cross-entropy alone.
    teacher (n, teachers, 3) holds probabilities, covered (n, teachers) which teacher has the row."""
    logits = logits.float()
    ce = -(labels * torch.log_softmax(logits, dim=-1)).sum(-1)
    t = temperature
    # A teacher's probabilities are softened as its logits would be: log p / T, renormalised.
    log_p = torch.log_softmax(torch.log(teacher.float().clamp_min(1e-8)) / t, dim=-1)
    log_q = torch.log_softmax(logits / t, dim=-1).unsqueeze(1)
    kl = (log_p.exp() * (log_p - log_q)).sum(-1) * t * t
    w = covered.float() * (torch.tensor(teacher_weights, dtype=kl.dtype, device=kl.device)
                           if teacher_weights is not None else 1.0)
    has_teacher = w.sum(-1) > 0
    kl_row = (w * kl).sum(-1) / w.sum(-1).clamp_min(1e-12)
    return torch.where(has_teacher, (1 - weight) * ce + weight * kl_row, ce).mean()


class PairedSwapSampler(torch.utils.data.Sampler):
    """Rows 0..n-1 and their swapped twins n..2n-1 in a seeded random order of the pairs, each row followed by its
    twin: an even batch size keeps both orders of a row in the same batch, on the same process (accelerate deals
    whole batches to the processes) and so in the same optimizer step."""

    def __init__(self, pairs: int, seed: int):
        self.pairs, self.seed, self.epoch = pairs, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return 2 * self.pairs

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        for i in torch.randperm(self.pairs, generator=generator).tolist():
            yield i
            yield i + self.pairs


class PreferenceTrainer(Trainer):
    """Soft-label cross-entropy on the model's (n, 3) logits, mixed with the KL divergence to teachers on rows
    that carry teacher probabilities; the head in its own optimizer group; swapped twins paired in batches when
    the training rows ask for it."""

    loss_is_scaled_for_ga = False  # a per-batch mean: the Trainer divides it by grad_accum

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.pop("labels")
        teacher, covered = inputs.pop("teacher", None), inputs.pop("teacher_covered", None)
        logits = model(**inputs)
        if teacher is None:
            loss = soft_cross_entropy(logits, labels)
        else:
            loss = distillation_loss(logits, labels, teacher, covered, self.args.distill_weight,
                                     self.args.distill_temperature, self.args.teacher_weights)
        return (loss, {"logits": logits}) if return_outputs else loss

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if getattr(dataset, "paired", False):
            return PairedSwapSampler(len(dataset) // 2, self.args.data_seed if self.args.data_seed is not None
                                     else self.args.seed)
        return super()._get_train_sampler(train_dataset)

    def create_optimizer(self, model=None):
        optimizer = super().create_optimizer(model)
        head_lr = self.args.head_learning_rate
        if head_lr is not None:
            head = {id(p) for n, p in self.model.named_parameters() if p.requires_grad and ".score." in f".{n}"}
            for group in optimizer.param_groups:
                group["params"] = [p for p in group["params"] if id(p) not in head]
            head_params = [p for p in self.model.parameters() if id(p) in head]
            optimizer.add_param_group({"params": head_params, "lr": head_lr, "weight_decay": 0.0})
        return optimizer


class EncodedRows(torch.utils.data.Dataset):
    """Token ids, label probabilities and (optionally) head features and teacher probabilities of encoded rows.
    `paired`: the second half holds the first half's rows swapped, in the same order (train.swap_augment paired)."""

    def __init__(self, input_ids: list[list[int]], labels: np.ndarray, features: np.ndarray | None = None,
                 teacher: tuple[np.ndarray, np.ndarray] | None = None, paired: bool = False):
        self.input_ids = input_ids
        self.labels = labels.astype(np.float32)
        self.features = features
        self.teacher = teacher  # (probabilities (n, teachers, 3), covered (n, teachers))
        self.paired = paired

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, i: int) -> dict:
        row = {"input_ids": self.input_ids[i], "labels": self.labels[i]}
        if self.features is not None:
            row["features"] = self.features[i]
        if self.teacher is not None:
            row["teacher"], row["teacher_covered"] = self.teacher[0][i], self.teacher[1][i]
        return row

    def subset(self, order) -> EncodedRows:
        return EncodedRows([self.input_ids[i] for i in order], self.labels[order],
                           None if self.features is None else self.features[order],
                           None if self.teacher is None else (self.teacher[0][order], self.teacher[1][order]))


class LeftPadCollator:
    """A batch padded to its longest row, on the left (model.left_pad), with float labels and features."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, rows: list[dict]) -> dict:
        from arena.model import left_pad

        input_ids, attention = left_pad([r["input_ids"] for r in rows], self.pad_token_id)
        batch = {"input_ids": input_ids, "attention_mask": attention}
        for key in ("labels", "features", "teacher", "teacher_covered"):
            if key in rows[0]:
                batch[key] = torch.tensor(np.stack([r[key] for r in rows]), dtype=torch.float32)
        return batch


class EvalLogits(TrainerCallback):
    """The Trainer's compute_metrics (log loss, accuracy), which also keeps each evaluation's logits by optimizer
    step, in the validation rows' order: the final validation reuses the best checkpoint's instead of predicting
    the same rows again."""

    def __init__(self, order: np.ndarray):
        self.order = order  # validation row at each position of the (length-sorted) eval dataset
        self.latest: np.ndarray | None = None
        self.by_step: dict[int, np.ndarray] = {}

    def __call__(self, eval_pred) -> dict:
        logits, labels = eval_pred.predictions, eval_pred.label_ids
        if len(logits) == len(self.order):
            self.latest = np.empty_like(logits, dtype=np.float32)
            self.latest[self.order] = logits
        probs = torch.softmax(torch.tensor(logits, dtype=torch.float64), dim=-1).numpy()
        return {"log_loss": metrics.log_loss(labels, probs), "accuracy": metrics.accuracy(labels, probs)}

    def on_evaluate(self, args, state, control, **kwargs):
        if self.latest is not None:
            self.by_step[state.global_step] = self.latest
            self.latest = None


class WallClock(TrainerCallback):
    """Writes the run's wall time so far into each checkpoint, so a resumed run reports the time of all its
    processes (the Trainer's train_runtime covers only the last one)."""

    FILE = "wall_clock.json"

    def __init__(self, started: float):
        self.started, self.before = started, 0.0  # `before`: set from the checkpoint on resume

    def seconds(self) -> float:
        return self.before + time.time() - self.started

    @classmethod
    def recorded(cls, checkpoint: str | None) -> float:
        """The wall seconds a checkpoint's run had spent when it was saved (0 without a record)."""
        record = Path(checkpoint) / cls.FILE if checkpoint else None
        return json.loads(record.read_text())["seconds"] if record and record.is_file() else 0.0

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if checkpoint.is_dir():
                write_text(checkpoint / self.FILE, json.dumps({"seconds": round(self.seconds(), 2)}), overwrite=True)


def training_arguments(cfg: Config, run: RunFolder, rt) -> PreferenceTrainingArguments:
    t = cfg.train
    return PreferenceTrainingArguments(
        output_dir=str(run.checkpoints),
        head_learning_rate=t.head_learning_rate,
        distill_weight=t.distill_weight,
        distill_temperature=t.distill_temperature,
        teacher_weights=t.teacher_weights,
        per_device_train_batch_size=t.per_device_batch_size,
        per_device_eval_batch_size=t.per_device_batch_size * 2,
        gradient_accumulation_steps=t.grad_accum,
        num_train_epochs=t.epochs,
        max_steps=t.max_steps,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler,
        warmup_steps=t.warmup_ratio,
        weight_decay=t.weight_decay,
        optim=t.optim,
        max_grad_norm=t.max_grad_norm,
        fp16=rt.fp16,
        bf16=rt.bf16,
        use_cpu=rt.device == "cpu",
        eval_strategy="steps",
        eval_steps=t.eval_steps,
        save_strategy="steps",
        save_steps=t.eval_steps,
        save_total_limit=t.save_total_limit,
        load_best_model_at_end=True,
        metric_for_best_model="log_loss",
        greater_is_better=False,
        logging_steps=t.logging_steps,
        logging_first_step=True,
        report_to=t.report_to,
        run_name=run.root.name,
        seed=cfg.seed,
        data_seed=cfg.seed,
        train_sampling_strategy=t.sampling,
        remove_unused_columns=False,
        label_names=["labels"],
        ddp_find_unused_parameters=False,
        dataloader_num_workers=0,
    )


# ---- the steps of a run -----------------------------------------------------------------------------


@dataclass
class Split:
    """Training and validation rows of one run, with the class-prior baseline on validation."""

    train: pd.DataFrame
    val: pd.DataFrame
    prior: np.ndarray  # class frequencies of the training rows
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
        df = data.training_data(cfg.data)
    except data.DataError as exc:
        problems += exc.problems
    if cfg.data.teacher and df is not None:
        try:
            teachers = data.read_teachers(cfg.data.teacher, df["id"])
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
    prior = data.label_matrix(train_df).mean(axis=0)
    prior_ll = metrics.log_loss(data.label_matrix(val_df), np.tile(prior, (len(val_df), 1)))
    print(f"data: {len(train_df)} train rows, {len(val_df)} validation rows (fold {cfg.data.fold} of {cfg.data.folds})")
    print(f"baselines on validation: uniform log loss {math.log(3):.4f}, class prior log loss {prior_ll:.4f}")
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
    from arena import model as model_mod
    from arena.embedded import resolve_model_path

    path = resolve_model_path(cfg.model.path)
    problems = model_mod.adapter_problems(cfg, path)
    tokenizer = model_mod.load_tokenizer(path)
    problems += [f"{key}: {problem}" for key, length in (("prompt.max_length", cfg.prompt.max_length),
                                                         ("infer.max_length", cfg.infer.max_length))
                 if (problem := prompts.budget_problem(tokenizer, cfg.prompt, cfg.model.family, length))]
    if problems:
        raise config_mod.ConfigError(problems=problems)
    return tokenizer


def check_room(cfg: Config, built: Built) -> None:
    """Disk room for the run, known once the model is built and before anything is written: each checkpoint
    holds the trainable weights and Adam's two moments (float32), save_total_limit of them plus one while
    rotating, then the final adapter; 64 MiB more for logs, predictions and plots."""
    trainable = sum(p.numel() for p in built.model.parameters() if p.requires_grad) * 4
    need = trainable * 3 * (cfg.train.save_total_limit + 1) + trainable + 64 * 2**20
    free = free_bytes(cfg.train.runs_dir)
    if free < need:
        raise UserError(f"{cfg.train.runs_dir}: {free / 2**20:.0f} MiB free on its disk; this run needs about "
                        f"{need / 2**20:.0f} MiB (train.save_total_limit={cfg.train.save_total_limit} checkpoints "
                        f"of {3 * trainable / 2**20:.0f} MiB each, and the adapter)")


def build(cfg: Config, split: Split) -> Built:
    """Base model + head (bias at the log class prior) + adapter; the head's feature scaler from training rows."""
    from arena import model as model_mod

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
    ids = prompts.encode_frame(tokenizer, df, cfg.prompt, cfg.model.family)
    features = data.head_features(df, scaler) if scaler else None
    teacher = teachers.for_rows(df["id"]) if teachers is not None else None
    if swap_augment != "none":
        ids = ids + prompts.encode_frame(tokenizer, df, cfg.prompt, cfg.model.family, swap=True)
        labels = np.concatenate([labels, swap_classes(labels)])
        if scaler:
            features = np.concatenate([features, data.head_features(df, scaler, swap=True)])
        if teacher is not None:
            swapped = teachers.for_rows(df["id"], swap=True)
            teacher = tuple(np.concatenate([a, b]) for a, b in zip(teacher, swapped))
    return EncodedRows(ids, labels, features, teacher, paired=swap_augment == "paired")


def fit_length_head(features: np.ndarray, labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression of the labels (one-hot or soft) on the head's length features, its
    regularisation chosen by 5-fold cross-validated log loss on the training rows."""
    from sklearn.linear_model import LogisticRegressionCV

    n = len(labels)
    # Soft labels: every row once per class, weighted by that class's probability.
    x = np.concatenate([features] * 3)
    y = np.repeat(np.arange(3), n)
    w = labels.T.reshape(-1)
    keep = w > 0
    lr = LogisticRegressionCV(Cs=10, cv=5, scoring="neg_log_loss", max_iter=2000, l1_ratios=(0.0,),
                              use_legacy_attributes=False, random_state=seed)
    lr.fit(x[keep], y[keep], sample_weight=w[keep])
    return lr.coef_, lr.intercept_


def make_trainer(cfg: Config, run: RunFolder, built: Built, split: Split, callbacks=()) -> PreferenceTrainer:
    """The encoded rows and the Trainer; with `model.head_init: prior` and length features, the head starts
    at a length-feature logistic regression fit on the training rows."""
    from arena import model as model_mod

    train_rows = encode_rows(built.tokenizer, split.train, cfg, cfg.train.swap_augment, built.scaler, split.teachers)
    if built.scaler and cfg.model.head_init == "prior":
        model_mod.init_feature_head(built.model, *fit_length_head(train_rows.features, train_rows.labels, cfg.seed))
    # Evaluation order does not change the metric: sorted by length, eval batches carry little padding.
    val_rows = encode_rows(built.tokenizer, split.val, cfg, swap_augment="none", scaler=built.scaler)
    order = np.argsort([len(x) for x in val_rows.input_ids], kind="stable")
    eval_logits = EvalLogits(order)
    trainer = PreferenceTrainer(
        model=built.model,
        args=training_arguments(cfg, run, built.runtime),
        data_collator=LeftPadCollator(built.tokenizer.pad_token_id),
        train_dataset=train_rows,
        eval_dataset=val_rows.subset(order),
        compute_metrics=eval_logits,
        callbacks=[eval_logits, *callbacks],
    )
    reporting.attach(trainer, run)
    return trainer


def fit(trainer: PreferenceTrainer, checkpoint: str | None):
    """Train (from `checkpoint` when resuming); the best checkpoint is loaded at the end."""
    return trainer.train(resume_from_checkpoint=checkpoint)


def evaluate(cfg: Config, run: RunFolder, built: Built, split: Split, trainer: PreferenceTrainer) -> dict:
    """The trained (best) model on the validation rows, plain and with swap TTA through the inference code;
    the plain order's logits are the best checkpoint's evaluation when the Trainer kept them. Writes
    val_predictions.csv (predictions beside the truth)."""
    from arena import predict

    kept = next((c for c in trainer.callback_handler.callbacks if isinstance(c, EvalLogits)), None)
    plain = kept.by_step.get(trainer.state.best_global_step) if kept else None
    val = predict.predict_frame(trainer.model, built.tokenizer, split.val, cfg, built.runtime, tta=True,
                                max_length=cfg.prompt.max_length, feature_scaler=built.scaler, plain_logits=plain)
    frame = predict.prediction_frame(split.val["id"], val["probs"])
    frame[TRUE_COLUMNS] = data.label_matrix(split.val)
    frame["fold"] = cfg.data.fold
    with atomic_file(run.val_predictions) as tmp:
        frame.to_csv(tmp, index=False)
    truth = data.label_matrix(split.val)
    return {
        "val_log_loss": metrics.log_loss(truth, val["probs_plain"]),
        "val_accuracy": metrics.accuracy(truth, val["probs_plain"]),
        "val_log_loss_tta": metrics.log_loss(truth, val["probs"]),
        "val_accuracy_tta": metrics.accuracy(truth, val["probs"]),
    }


def write_summary(cfg: Config, run: RunFolder, built: Built, split: Split, trainer: PreferenceTrainer, result,
                  scores: dict, clock: WallClock) -> dict:
    """metrics.json and loss_curve.png; wall times count the processes before a resume too."""
    args, state = trainer.args, trainer.state
    summary = {
        "run_dir": str(run.root),
        "fold": cfg.data.fold,
        "train_rows": len(split.train),
        "val_rows": len(split.val),
        "uniform_log_loss": math.log(3),
        "prior_log_loss": split.prior_log_loss,
        **scores,
        "best_eval_log_loss": state.best_metric,
        "best_checkpoint": state.best_model_checkpoint,
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
    write_text(run.metrics, json.dumps(summary, indent=2, default=float))
    plot_curves(summary["history"], run.loss_curve, split.prior_log_loss)
    return summary


def train(cfg: Config, resume: str | None = None, callbacks=(), origin: dict | None = None) -> Path:
    """Train one run (validation on fold cfg.data.fold); returns the run folder. `callbacks`: extra
    TrainerCallbacks (progress, early stopping, tests that stop a run). `origin`: config.origin(), stored as the
    run's recipe.json for `arena runs`."""
    from arena import model as model_mod

    clock = WallClock(time.time())
    wall_hours = cfg.train.max_wall_hours  # this process's budget: the invocation's, never a resumed run's stored one
    cpu = model_mod.runtime_for(cfg).device == "cpu"
    run, checkpoint = None, None
    if resume:
        run, checkpoint = processes.decided_by_main(lambda: resume_point(cfg, resume), cpu)
        run, cfg = RunFolder(run), config_mod.load(RunFolder(run).config)
        print(f"resuming {run.root} from {checkpoint or 'its start (no complete checkpoint)'}")
        clock.before = WallClock.recorded(checkpoint)
    torch.manual_seed(cfg.seed)
    split = prepare_data(cfg, resuming=run is not None)
    built = build(cfg, split)
    check_room(cfg, built)
    run = run or open_run_folder(cfg, cpu, origin)
    print(f"run folder: {run.root}  (device {built.runtime.device}, compute dtype "
          f"{str(built.runtime.dtype).removeprefix('torch.')})")
    trainer = make_trainer(cfg, run, built, split, [clock, *callbacks])
    attach_budget(trainer, run.root, wall_hours, clock.started)  # a stop for time raises budget.BudgetStop
    with reporting.environment(cfg, run):
        result = fit(trainer, checkpoint)
    if not trainer.is_world_process_zero():
        return run.root
    model_mod.save_trained(trainer.model, built.tokenizer, run, model_mod.head_bias(cfg, split.prior), built.scaler)
    scores = evaluate(cfg, run, built, split, trainer)
    summary = write_summary(cfg, run, built, split, trainer, result, scores, clock)
    print(f"validation log loss {summary['val_log_loss']:.4f} (swap TTA {summary['val_log_loss_tta']:.4f}), "
          f"accuracy {summary['val_accuracy']:.3f}; class-prior baseline {split.prior_log_loss:.4f}, "
          f"uniform {math.log(3):.4f}")
    print(f"train wall time {summary['train_wall_seconds']:.0f} s; run saved to {run.root}")
    return run.root


# ---- run folders ------------------------------------------------------------------------------------


def open_run_folder(cfg: Config, cpu: bool, origin: dict | None = None) -> RunFolder:
    """A new run folder, created by the main process with the resolved config (and where it came from) in it;
    under `accelerate launch` every other process gets the same folder, so checkpoints and the best model are
    found by all ranks."""

    def create() -> str:
        run = RunFolder(new_folder(cfg.train.runs_dir, cfg.name))
        config_mod.dump(cfg, run.config)
        if origin is not None:
            write_text(run.recipe, json.dumps(origin, indent=2))
        return str(run.root)

    return RunFolder(processes.decided_by_main(create, cpu))


def resume_point(cfg: Config, resume: str) -> tuple[str, str | None]:
    """(run folder, its last complete checkpoint or None) for --resume; run by the main process only, since it
    moves an incomplete checkpoint aside."""
    run = find_resumable(cfg, resume)
    checkpoint = last_complete_checkpoint(run)
    return str(run.root), None if checkpoint is None else str(checkpoint)


def find_resumable(cfg: Config, resume: str) -> RunFolder:
    """--resume: the given run folder, or ("latest") the newest unfinished run of this config with a checkpoint."""
    if resume != "latest":
        run = RunFolder(resume)
        if not run.config.is_file():
            raise UserError(f"--resume {resume}: not a run folder (no {run.config.name})")
        if run.adapter.exists():
            raise UserError(f"--resume {resume}: this run finished (it has {run.adapter.name}/); train a new one")
        return run
    runs = [RunFolder(p) for p in Path(cfg.train.runs_dir).glob(f"{cfg.name}-*") if p.is_dir()]
    unfinished = [(checkpoint.stat().st_mtime, r) for r in runs if not r.adapter.exists()
                  and (checkpoint := last_complete_checkpoint(r, quiet=True))]
    if not unfinished:
        raise UserError(f"--resume latest: no unfinished run of '{cfg.name}' with a checkpoint under {cfg.train.runs_dir}")
    return max(unfinished, key=lambda pair: pair[0])[1]


def last_complete_checkpoint(run: RunFolder, quiet: bool = False) -> Path | None:
    """The run's newest checkpoint whose files are whole. The Trainer writes trainer_state.json last, so a run
    killed while saving leaves a checkpoint without it (or with part of it): such a checkpoint is renamed
    `incomplete-checkpoint-N` (kept, out of the Trainer's way) and the one before it is used."""
    from arena.model import tensor_shapes

    checkpoints = [p for p in run.checkpoints.glob("checkpoint-*") if p.name.split("-", 1)[1].isdigit()]
    for checkpoint in sorted(checkpoints, key=lambda p: int(p.name.split("-", 1)[1]), reverse=True):
        problems: list[str] = []
        try:
            json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            problems.append("trainer_state.json missing or partial")
        if (checkpoint / "adapter_model.safetensors").exists():
            tensor_shapes(checkpoint / "adapter_model.safetensors", problems)
        if problems:
            if not quiet:
                aside = checkpoint.with_name(f"incomplete-{checkpoint.name}")
                checkpoint.rename(aside)
                print(f"note: {checkpoint} is incomplete ({problems[0]}): the run was stopped while saving it; "
                      f"moved aside to {aside.name}", file=sys.stderr)
            continue
        return checkpoint
    return None


def plot_curves(history: list[dict], path: Path, prior_ll: float) -> None:
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
    ax.axhline(math.log(3), linestyle=":", color="grey", label="uniform 1.099")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("log loss")
    ax.legend()
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


# ---- cross-validation -------------------------------------------------------------------------------


def cross_validate(cfg: Config, folds: int, only: list[int] | None = None, origin: dict | None = None) -> Path:
    """Train the selected folds; write out-of-fold predictions, OOF log loss and a per-fold table. `origin`
    (config.origin()) goes into the CV folder and each fold run."""
    selected = only if only is not None else list(range(folds))
    bad = [f for f in selected if not 0 <= f < folds]
    if bad:
        raise UserError(f"--only: folds {bad} are not in 0..{folds - 1}")
    cv = CVFolder(new_folder(cfg.train.runs_dir, f"{cfg.name}-cv"))
    if origin is not None:
        write_text(cv.recipe, json.dumps(origin, indent=2))
    rows, oof = [], []
    for fold in selected:
        fold_cfg = config_mod.from_dict(cfg.to_dict(), [f"data.folds={folds}", f"data.fold={fold}",
                                                        f"train.runs_dir={cv.root}", f"name=fold{fold}"])
        run = RunFolder(train(fold_cfg, origin=origin))
        summary = json.loads(run.metrics.read_text())
        rows.append({"fold": fold, "rows": summary["val_rows"], "log_loss": summary["val_log_loss"],
                     "log_loss_tta": summary["val_log_loss_tta"], "accuracy": summary["val_accuracy_tta"],
                     "prior": summary["prior_log_loss"], "minutes": summary["total_wall_seconds"] / 60,
                     "run": run.root.name})
        oof.append(pd.read_csv(run.val_predictions, dtype={"id": str}))
    oof_df = pd.concat(oof, ignore_index=True)
    with atomic_file(cv.oof_predictions) as tmp:
        oof_df.to_csv(tmp, index=False)
    truth = oof_df[TRUE_COLUMNS].to_numpy()
    pred = oof_df[LABEL_COLUMNS].to_numpy()
    result = {"folds": folds, "selected": selected, "oof_rows": len(oof_df),
              "oof_log_loss": metrics.log_loss(truth, pred), "oof_accuracy": metrics.accuracy(truth, pred),
              "per_fold": rows}
    write_text(cv.summary, json.dumps(result, indent=2, default=float))
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"OOF log loss {result['oof_log_loss']:.4f} (swap TTA), accuracy {result['oof_accuracy']:.3f} "
          f"over {len(oof_df)} rows; written to {cv.root}")
    return cv.root
