"""The HF Trainer for preference rows: its arguments, its loss (losses.py: soft labels, label smoothing,
distillation), the paired swap sampler, the encoded rows and their collator, and the callbacks a run attaches
(evaluation logits, wall clock)."""

from __future__ import annotations

import contextlib
import functools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from arena.config import Config
from arena.errors import UserError
from arena.layout import RunFolder
from arena.model import model_device, right_pad
from arena.model.head import name_in_head
from arena.processes import COLLECTIVE_TIMEOUT
from arena.train.losses import distillation_loss, smooth_labels, soft_cross_entropy
from arena.train.selection import EvalLogits, StartTakesPart  # noqa: F401 (EvalLogits: also imported from here)
from arena.writes import write_text


@dataclass
class PreferenceTrainingArguments(TrainingArguments):
    """TrainingArguments plus what the preference trainer adds; one process trains on one GPU."""

    head_learning_rate: float | None = field(default=None, metadata={
        "help": "learning rate of the score head (None: learning_rate). The head reads RMS-normalised hidden "
                "states and standardised length features, on another scale than the adapter's weights."})
    distill_weight: float = field(default=0.5, metadata={
        "help": "share of the loss given to the KL divergence to the teachers, on rows a teacher covers"})
    distill_temperature: float = field(default=1.0, metadata={"help": "temperature of the teachers and the model"})
    teacher_weights: list[float] | None = field(default=None, metadata={
        "help": "weight of each teacher's KL term (None: equal); renormalised over the teachers covering a row"})
    label_smoothing: float = field(default=0.0, metadata={
        "help": "hard labels trained as (1 - s) * one-hot + s / classes (losses.smooth_labels); teachers unchanged"})


    @property
    def n_gpu(self) -> int:
        # The Trainer gives one process that sees several GPUs n_gpu > 1: batches of per-device x n_gpu rows for
        # nn.DataParallel, which never wraps 4-bit models, so they ran doubled on one GPU. Here a process uses one
        # GPU; `accelerate launch` (configs/accelerate/) runs one process per GPU.
        return min(super().n_gpu, 1)


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


class PreferenceTrainer(StartTakesPart, Trainer):
    """Soft-label cross-entropy on the model's (n, classes) logits, mixed with the KL divergence to teachers on rows
    that carry teacher probabilities; the head in its own optimizer group; swapped twins paired in batches when
    the training rows ask for it; the start in checkpoint selection (StartTakesPart)."""

    loss_is_scaled_for_ga = False  # a per-batch mean: the Trainer divides it by grad_accum

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.pop("labels")
        teacher, covered = inputs.pop("teacher", None), inputs.pop("teacher_covered", None)
        logits = model(**inputs)
        if model.training:  # evaluation's loss stays the cross-entropy on the true labels
            labels = smooth_labels(labels, self.args.label_smoothing)
        if teacher is None:
            loss = soft_cross_entropy(logits, labels)
        else:
            loss = distillation_loss(logits, labels, teacher, covered, self.args.distill_weight,
                                     self.args.distill_temperature, self.args.teacher_weights)
        if model.training:
            for guard in self.callback_handler.callbacks:
                if isinstance(guard, NonFiniteGuard):
                    guard.observe(loss)
        return (loss, {"logits": logits}) if return_outputs else loss

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        with adapters_load_onto_own_device(model if model is not None else self.model):
            super()._load_from_checkpoint(resume_from_checkpoint, model)

    def _load_best_model(self):
        with adapters_load_onto_own_device(self.model):
            super()._load_best_model()

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
            head = {id(p) for n, p in self.model.named_parameters() if p.requires_grad and name_in_head(n) is not None}
            for group in optimizer.param_groups:
                group["params"] = [p for p in group["params"] if id(p) not in head]
            head_params = [p for p in self.model.parameters() if id(p) in head]
            optimizer.add_param_group({"params": head_params, "lr": head_lr, "weight_decay": 0.0})
        return optimizer

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        # Under FSDP with a sharded state dict this writes nothing, and _save_checkpoint next asks on every rank
        # whether the best checkpoint's folder exists: when the newest is the best, its folder appears only later, so
        # some ranks record it and some do not, and at the end only those load it and wait for the others forever.
        if output_dir is not None and self.is_fsdp_enabled:
            Path(output_dir).mkdir(parents=True, exist_ok=True)
        super().save_model(output_dir, _internal_call)


@contextlib.contextmanager
def adapters_load_onto_own_device(model):
    """The Trainer calls `model.load_adapter(...)` (on resume, and for the best checkpoint) without torch_device,
    so peft loads the weights onto infer_device(), "cuda": GPU 0, where every other rank would open a CUDA context
    and an allocator cache beside rank 0's model. Within this context the call loads onto the model's own device."""
    load = getattr(type(model), "load_adapter", None)
    if load is None:  # not a peft model (or wrapped): the Trainer does not call load_adapter on it
        yield
        return
    model.load_adapter = functools.partial(load, model, torch_device=model_device(model))
    try:
        yield
    finally:
        del model.load_adapter


class EncodedRows(torch.utils.data.Dataset):
    """Token ids, label probabilities and (optionally) head features and teacher probabilities of encoded rows.
    `paired`: the second half holds the first half's rows swapped, in the same order (train.swap_augment paired)."""

    def __init__(self, input_ids: list[list[int]], labels: np.ndarray, features: np.ndarray | None = None,
                 teacher: tuple[np.ndarray, np.ndarray] | None = None, paired: bool = False):
        self.input_ids = input_ids
        self.labels = labels.astype(np.float32)
        self.features = features
        self.teacher = teacher  # (probabilities (n, teachers, classes), covered (n, teachers))
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


class RightPadCollator:
    """A batch padded to its longest row, on the right (model.right_pad), with float labels and features."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, rows: list[dict]) -> dict:
        input_ids, attention = right_pad([r["input_ids"] for r in rows], self.pad_token_id)
        batch = {"input_ids": input_ids, "attention_mask": attention}
        for key in ("labels", "features", "teacher", "teacher_covered"):
            if key in rows[0]:
                batch[key] = torch.tensor(np.stack([r[key] for r in rows]), dtype=torch.float32)
        return batch


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


class NonFiniteGuard(TrainerCallback):
    """Stops training after `patience` consecutive optimizer steps whose loss was not finite or whose update the
    float16 grad scaler skipped (it skips steps with overflowing gradients and lowers its scale: a few at the start
    are normal, a streak means the compute dtype overflows). The stop saves a checkpoint, so the run can resume;
    `raise_if_tripped` then names the step, the loss, the cause and the fix. Every process stops together."""

    def __init__(self, patience: int, compute_dtype: str):
        self.patience, self.compute_dtype = patience, compute_dtype
        self.streak, self.step_loss, self.step_finite = 0, None, True
        self.tripped: str | None = None

    def observe(self, loss: torch.Tensor) -> None:
        """Called by PreferenceTrainer.compute_loss for every training micro-batch."""
        value = loss.detach().float()
        if not bool(torch.isfinite(value)):
            self.step_finite = False
        self.step_loss = value.item()

    def on_pre_optimizer_step(self, args, state, control, optimizer=None, model=None, **kwargs):
        """A step whose gradients are not finite is not applied: without a grad scaler (float32, bfloat16) the
        optimizer would write NaN into every weight it updates, for good. Gradients set to None are skipped by
        torch's optimizers. Every process decides alike (DDP's gradients agree; FSDP's shards may not)."""
        if getattr(optimizer, "scaler", None) is not None or model is None:
            return  # float16: the grad scaler skips such a step and lowers its scale
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        bad = any(not bool(torch.isfinite(g).all()) for g in grads)
        if args.world_size > 1 and torch.distributed.is_initialized():
            flag = torch.tensor([float(bad)], device=args.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            bad = bool(flag.item())
        if bad:
            for param in model.parameters():
                param.grad = None
            self.step_finite = False
            print(f"WARNING: step {state.global_step + 1}: non-finite gradients, the update is skipped "
                  f"(train.nan_patience {self.patience} such steps in a row stop the run)", flush=True)

    def on_step_end(self, args, state, control, **kwargs):
        skipped = bool(getattr(kwargs.get("optimizer"), "step_was_skipped", False))
        bad = not self.step_finite or skipped
        if args.world_size > 1:  # the decision is every process's, else one would wait for the others forever
            flag = torch.tensor([float(bad)], device=args.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            bad = bool(flag.item())
        self.streak = self.streak + 1 if bad else 0
        if self.streak >= self.patience and self.tripped is None:
            what = "non-finite losses" if not self.step_finite else "optimizer steps skipped by the grad scaler"
            self.tripped = (f"training stopped at step {state.global_step}: {self.streak} consecutive steps with "
                            f"{what} (last loss {self.step_loss}; train.nan_patience={self.patience}). Likely cause: "
                            f"the compute dtype {self.compute_dtype} overflows on this model. Fix: "
                            f"model.compute_dtype float32 (or bfloat16 on a GPU that has it)")
            control.should_training_stop = True
            control.should_save = True
        self.step_finite = True
        return control

    def raise_if_tripped(self, run_root) -> None:
        if self.tripped is not None:
            raise UserError(f"{self.tripped}. A checkpoint was saved in {run_root}: set the fix in its config.yaml "
                            f"and continue with `arena train --resume {run_root}`, or train anew with the fix")


def training_arguments(cfg: Config, run: RunFolder, rt) -> PreferenceTrainingArguments:
    t = cfg.train
    return PreferenceTrainingArguments(
        output_dir=str(run.checkpoints),
        head_learning_rate=t.head_learning_rate,
        distill_weight=t.distill_weight,
        distill_temperature=t.distill_temperature,
        teacher_weights=t.teacher_weights,
        label_smoothing=t.label_smoothing,
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
        eval_on_start=t.eval_on_start,
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
        ddp_timeout=int(COLLECTIVE_TIMEOUT.total_seconds()),
    )
