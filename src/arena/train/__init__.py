"""Training on the HF Trainer, by concern: trainer.py (the PreferenceTrainer, its sampler, collator and callbacks),
losses.py (soft labels, label smoothing, distillation), selection.py (checkpoint selection: the evaluations' logits,
the start as a candidate), run.py (`train()` and its named steps), finish.py (after the last step: save, evaluate,
summarise), resume.py (run folders, checkpoints), cv.py (K-fold CV). `from arena import train; train.train(cfg)` and
every name below keep working from `arena.train` (`train.finish` is the module; its `finish()` is
train.finish.finish)."""

from arena.errors import UserError
from arena.train.cv import cross_validate
from arena.train.finish import evaluate, plot_curves, save_adapter, write_summary
from arena.train.losses import distillation_loss, smooth_labels, soft_cross_entropy
from arena.train.resume import Resume, find_resumable, last_complete_checkpoint, open_run_folder, resume_point
from arena.train.run import (
    Built,
    Split,
    build,
    check_base_model,
    check_setup,
    encode_rows,
    fit,
    fit_length_head,
    make_trainer,
    prepare_data,
    run_callbacks,
    train,
)
from arena.train.trainer import (
    EncodedRows,
    EvalLogits,
    NonFiniteGuard,
    PairedSwapSampler,
    PreferenceTrainer,
    PreferenceTrainingArguments,
    RightPadCollator,
    WallClock,
    training_arguments,
)

__all__ = ["Built", "EncodedRows", "EvalLogits", "NonFiniteGuard", "PairedSwapSampler", "PreferenceTrainer",
           "PreferenceTrainingArguments", "Resume", "RightPadCollator", "Split", "UserError", "WallClock", "build",
           "check_base_model", "check_setup", "cross_validate", "distillation_loss", "encode_rows",
           "evaluate", "find_resumable", "fit", "fit_length_head", "last_complete_checkpoint",
           "make_trainer", "open_run_folder", "plot_curves", "prepare_data", "resume_point", "run_callbacks",
           "save_adapter", "smooth_labels", "soft_cross_entropy", "train", "training_arguments", "write_summary"]
