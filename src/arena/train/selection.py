"""Checkpoint selection: the evaluation logits kept by optimizer step (EvalLogits), and the run's start taking part
in the selection (StartTakesPart): the model before its first optimizer step is evaluated on the validation rows,
saved as checkpoint-0 and is the best checkpoint until a later one beats it, so a run never ends worse on its own
validation rows than it began."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from arena import metrics
from arena.writes import atomic_file


class EvalLogits(TrainerCallback):
    """The Trainer's compute_metrics (log loss, accuracy), which also keeps each evaluation's logits by optimizer
    step, in the validation rows' order, and writes them into the checkpoint saved at that step (FILE, with the rows'
    ids): the finish reuses the best checkpoint's instead of predicting the same rows again, also when it runs in a
    later process (a run stopped or killed after its last step)."""

    FILE = "eval_logits.npz"

    def __init__(self, order: np.ndarray, ids=None):
        self.order = order  # validation row at each position of the (length-sorted) eval dataset
        self.ids = None if ids is None else np.asarray(ids, dtype=str)  # the validation rows' ids, in their order
        self.latest: np.ndarray | None = None
        self.by_step: dict[int, np.ndarray] = {}

    def __call__(self, eval_pred) -> dict:
        logits, labels = eval_pred.predictions, eval_pred.label_ids
        if len(logits) == len(self.order):
            self.latest = np.empty_like(logits, dtype=np.float32)
            self.latest[self.order] = logits
        if not np.isfinite(logits).all():  # e.g. a compute dtype that overflows: no candidate (NonFiniteGuard says why)
            return {"log_loss": float("inf"), "accuracy": float("nan")}
        probs = metrics.softmax(np.asarray(logits, dtype=np.float64))
        return {"log_loss": metrics.log_loss(labels, probs), "accuracy": metrics.accuracy(labels, probs)}

    def on_evaluate(self, args, state, control, **kwargs):
        if self.latest is not None:
            self.by_step[state.global_step] = self.latest
            self.latest = None

    def on_save(self, args, state, control, **kwargs):
        logits = self.by_step.get(state.global_step)
        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if state.is_world_process_zero and logits is not None and checkpoint.is_dir():
            ids = self.ids if self.ids is not None else np.array([], dtype=str)
            with atomic_file(checkpoint / self.FILE, overwrite=True) as tmp, open(tmp, "wb") as out:
                np.savez(out, logits=logits, ids=ids)

    @staticmethod
    def of(trainer) -> EvalLogits | None:
        """The trainer's EvalLogits callback (make_trainer attaches one), if it has one."""
        return next((c for c in trainer.callback_handler.callbacks if isinstance(c, EvalLogits)), None)

    def best(self, state) -> np.ndarray | None:
        """The plain-order logits of the best checkpoint's evaluation: this process's own, else the ones written into
        that checkpoint by an earlier process; None when neither is there, or they are of other rows."""
        if state.best_global_step in self.by_step:
            return self.by_step[state.best_global_step]
        if not state.best_model_checkpoint:
            return None
        try:
            with np.load(Path(state.best_model_checkpoint) / self.FILE) as saved:
                logits, ids = saved["logits"], saved["ids"]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            return None
        if logits.ndim != 2 or len(logits) != len(self.order) or (self.ids is not None and not np.array_equal(ids, self.ids)):
            return None
        return logits


class StartTakesPart:
    """Trainer mixin. With `eval_on_start` (train.eval_on_start), the Trainer evaluates the model before its first
    optimizer step but leaves that evaluation out of checkpoint selection (its best-model bookkeeping starts at the
    first checkpoint, and it treats a best step of 0 as none). Here that evaluation is the first candidate: when its
    log loss is finite it sets the best metric, the start is saved as checkpoint-0 (the checkpoint rotation keeps the
    best one), and it stays the best checkpoint, loaded at the end by load_best_model_at_end, unless a later
    evaluation is strictly better."""

    def _evaluate(self, trial, ignore_keys_for_eval, skip_scheduler: bool = False):
        scores = super()._evaluate(trial, ignore_keys_for_eval, skip_scheduler)
        if (self.state.global_step == 0 and self.args.load_best_model_at_end and self.args.metric_for_best_model
                and self._determine_best_metric(metrics=scores, trial=trial)):  # not when its log loss is infinite
            self.state.best_model_checkpoint = str(Path(self._get_output_dir(trial)) / f"{PREFIX_CHECKPOINT_DIR}-0")
            self._save_checkpoint(self.model, trial)
            self.control = self.callback_handler.on_save(self.args, self.state, self.control)
        return scores


def start_eval(history: list[dict]) -> dict | None:
    """The start's evaluation (step 0) in a run's log history, None when the run did not evaluate its start."""
    return next((h for h in history if h.get("step") == 0 and "eval_log_loss" in h), None)
