"""Training on the HF Trainer: soft-label cross-entropy, eval log loss every N steps, best checkpoint,
resume, swap augmentation, one never-overwritten run folder per run; K-fold CV on top."""

from __future__ import annotations

import json
import math
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from arena import config as config_mod
from arena import data, metrics, prompts
from arena.config import Config
from arena.errors import UserError

CONFIG_FILE = "config.yaml"
ADAPTER_DIR = "adapter"
CHECKPOINT_DIR = "checkpoints"
METRICS_FILE = "metrics.json"
VAL_PREDICTIONS = "val_predictions.csv"


# ---- run folders ------------------------------------------------------------------------------------

def new_run_dir(runs_dir: str | Path, name: str) -> Path:
    """A fresh run folder; an existing one is never reused or overwritten."""
    root = Path(runs_dir)
    root.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    for attempt in range(1000):
        candidate = root / (f"{name}-{stamp}" + (f"-{attempt}" if attempt else ""))
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise UserError(f"{root}: could not create a new run folder")


def shared_new_run_dir(cfg: Config) -> Path:
    """The main process creates the run folder (and writes the resolved config); under `accelerate launch`
    every other process gets the same folder, so checkpoints and the best model are found by all ranks."""
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list

    state = PartialState()
    holder = [None]
    if state.is_main_process:
        run_dir = new_run_dir(cfg.train.runs_dir, cfg.name)
        config_mod.dump(cfg, run_dir / CONFIG_FILE)
        holder = [str(run_dir)]
    if state.num_processes > 1:
        broadcast_object_list(holder)
    return Path(holder[0])


def find_resumable(cfg: Config, resume: str) -> Path:
    if resume != "latest":
        run = Path(resume)
        if not (run / CONFIG_FILE).is_file():
            raise UserError(f"--resume {resume}: not a run folder (no {CONFIG_FILE})")
        return run
    candidates = sorted(Path(cfg.train.runs_dir).glob(f"{cfg.name}-*/{CHECKPOINT_DIR}/checkpoint-*"),
                        key=lambda p: p.stat().st_mtime)
    candidates = [c.parents[1] for c in candidates if not (c.parents[1] / ADAPTER_DIR).exists()]
    if not candidates:
        raise UserError(f"--resume latest: no unfinished run of '{cfg.name}' with a checkpoint under {cfg.train.runs_dir}")
    return candidates[-1]


# ---- datasets ---------------------------------------------------------------------------------------

class EncodedRows(torch.utils.data.Dataset):
    def __init__(self, input_ids: list[list[int]], labels: np.ndarray, features: np.ndarray | None = None):
        self.input_ids = input_ids
        self.labels = labels.astype(np.float32)
        self.features = features

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, i: int) -> dict:
        row = {"input_ids": self.input_ids[i], "labels": self.labels[i]}
        if self.features is not None:
            row["features"] = self.features[i]
        return row

    def subset(self, order) -> EncodedRows:
        return EncodedRows([self.input_ids[i] for i in order], self.labels[order],
                           None if self.features is None else self.features[order])


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


def swap_labels(labels: np.ndarray) -> np.ndarray:
    return labels[:, [1, 0, 2]]


def encode_rows(tokenizer, df: pd.DataFrame, cfg: Config, swap_augment: bool, scaler: dict | None) -> EncodedRows:
    labels = data.label_matrix(df)
    ids = prompts.encode_frame(tokenizer, df, cfg.prompt, cfg.model.family)
    features = data.head_features(df, scaler) if scaler else None
    if swap_augment:
        ids = ids + prompts.encode_frame(tokenizer, df, cfg.prompt, cfg.model.family, swap=True)
        labels = np.concatenate([labels, swap_labels(labels)])
        if scaler:
            features = np.concatenate([features, data.head_features(df, scaler, swap=True)])
    return EncodedRows(ids, labels, features)


class LeftPadCollator:
    """Pads a batch to its longest row (not to max_length), on the left: see model.load_tokenizer."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, rows: list[dict]) -> dict:
        longest = max(len(r["input_ids"]) for r in rows)
        input_ids = torch.full((len(rows), longest), self.pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(rows), longest), dtype=torch.long)
        for i, r in enumerate(rows):
            n = len(r["input_ids"])
            input_ids[i, longest - n:] = torch.tensor(r["input_ids"], dtype=torch.long)
            attention[i, longest - n:] = 1
        batch = {"input_ids": input_ids, "attention_mask": attention}
        for key in ("labels", "features"):
            if key in rows[0]:
                batch[key] = torch.tensor(np.stack([r[key] for r in rows]), dtype=torch.float32)
        return batch


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against label probabilities (one-hot or soft votes)."""
    return -(target * torch.log_softmax(logits.float(), dim=-1)).sum(-1).mean()


def _compute_metrics(eval_pred) -> dict:
    logits, labels = eval_pred.predictions, eval_pred.label_ids
    probs = torch.softmax(torch.tensor(logits, dtype=torch.float64), dim=-1).numpy()
    return {"log_loss": metrics.log_loss(labels, probs), "accuracy": metrics.accuracy(labels, probs)}


def _trainer_class(head_learning_rate: float | None = None):
    from transformers import Trainer

    class SoftLabelTrainer(Trainer):
        loss_is_scaled_for_ga = False  # a per-batch mean: the Trainer divides it by grad_accum

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            from arena.model import features_for

            labels = inputs.pop("labels")
            with features_for(model, inputs.pop("features", None)):
                outputs = model(**inputs)
            loss = soft_cross_entropy(outputs.logits, labels)
            return (loss, outputs) if return_outputs else loss

        def create_optimizer(self, model=None):
            optimizer = super().create_optimizer(model)
            if head_learning_rate is not None:
                # The score head reads hidden states with norms in the hundreds: at the adapter's learning
                # rate every Adam step moves all logits together and the loss oscillates above the prior.
                head = {id(p) for n, p in self.model.named_parameters() if p.requires_grad and ".score." in f".{n}"}
                for group in optimizer.param_groups:
                    group["params"] = [p for p in group["params"] if id(p) not in head]
                head_params = [p for n, p in self.model.named_parameters() if id(p) in head]
                optimizer.add_param_group({"params": head_params, "lr": head_learning_rate, "weight_decay": 0.0})
            return optimizer

    return SoftLabelTrainer


# ---- training ---------------------------------------------------------------------------------------

def split_train_val(cfg: Config) -> tuple[pd.DataFrame, pd.DataFrame]:
    df = data.read_for_training(cfg.data)
    folds = data.make_folds(df, cfg.data.folds, cfg.seed)
    if not 0 <= cfg.data.fold < cfg.data.folds:
        raise UserError(f"data.fold: {cfg.data.fold} is not in 0..{cfg.data.folds - 1}")
    train_df = df[folds != cfg.data.fold].reset_index(drop=True)
    val_df = df[folds == cfg.data.fold].reset_index(drop=True)
    if cfg.data.max_rows is not None:
        train_df = train_df.sample(n=min(cfg.data.max_rows, len(train_df)), random_state=cfg.seed).reset_index(drop=True)
    if cfg.train.max_eval_rows is not None and len(val_df) > cfg.train.max_eval_rows:
        val_df = val_df.sample(n=cfg.train.max_eval_rows, random_state=cfg.seed).reset_index(drop=True)
    return train_df, val_df


def training_arguments(cfg: Config, run_dir: Path, rt):
    from transformers import TrainingArguments

    t = cfg.train
    return TrainingArguments(
        output_dir=str(run_dir / CHECKPOINT_DIR),
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
        report_to="none",
        seed=cfg.seed,
        data_seed=cfg.seed,
        train_sampling_strategy=t.sampling,
        remove_unused_columns=False,
        label_names=["labels"],
        ddp_find_unused_parameters=False,
        dataloader_num_workers=0,
    )


def global_batch(cfg: Config) -> int:
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    return cfg.train.per_device_batch_size * cfg.train.grad_accum * world


def train(cfg: Config, resume: str | None = None) -> Path:
    """Train one run (validation on fold cfg.data.fold); returns the run folder."""
    from arena import model as model_mod
    from arena import predict

    if resume:
        run_dir = find_resumable(cfg, resume)
        cfg = config_mod.load(run_dir / CONFIG_FILE)
        print(f"resuming {run_dir}")
    else:
        run_dir = None
    torch.manual_seed(cfg.seed)
    train_df, val_df = split_train_val(cfg)
    train_labels = data.label_matrix(train_df)
    val_labels = data.label_matrix(val_df)
    prior = train_labels.mean(axis=0)
    prior_ll = metrics.log_loss(val_labels, np.tile(prior, (len(val_df), 1)))
    print(f"data: {len(train_df)} train rows, {len(val_df)} validation rows (fold {cfg.data.fold} of {cfg.data.folds})")
    print(f"baselines on validation: uniform log loss {math.log(3):.4f}, class prior log loss {prior_ll:.4f}")

    started = time.time()
    scaler = data.fit_feature_scaler(train_df) if cfg.model.length_features else None
    model, tokenizer, rt = model_mod.build_for_training(
        cfg, class_prior=prior, num_features=len(scaler["mean"]) if scaler else 0)
    if run_dir is None:
        run_dir = shared_new_run_dir(cfg)
    print(f"run folder: {run_dir}  (device {rt.device}, compute dtype {str(rt.dtype).removeprefix('torch.')})")

    train_rows = encode_rows(tokenizer, train_df, cfg, cfg.train.swap_augment, scaler)
    if scaler and cfg.model.head_init == "prior":
        model_mod.init_feature_head(model, *fit_length_head(train_rows.features, train_rows.labels, cfg.seed))
    # Evaluation order does not change the metric: sort by length so eval batches carry little padding.
    val_rows = encode_rows(tokenizer, val_df, cfg, swap_augment=False, scaler=scaler)
    val_rows = val_rows.subset(np.argsort([len(x) for x in val_rows.input_ids], kind="stable"))

    trainer = _trainer_class(cfg.train.head_learning_rate)(
        model=model,
        args=training_arguments(cfg, run_dir, rt),
        data_collator=LeftPadCollator(tokenizer.pad_token_id),
        train_dataset=train_rows,
        eval_dataset=val_rows,
        compute_metrics=_compute_metrics,
    )
    has_checkpoint = any((run_dir / CHECKPOINT_DIR).glob("checkpoint-*"))
    result = trainer.train(resume_from_checkpoint=True if (resume and has_checkpoint) else None)
    train_seconds = time.time() - started
    if not trainer.is_world_process_zero():
        return run_dir

    bias = model_mod.head_bias(cfg, prior)
    model_mod.save_trained(trainer.model, tokenizer, run_dir / ADAPTER_DIR, bias, scaler)

    # Final validation with the best weights, plain and with swap TTA, through the inference code.
    val = predict.predict_frame(trainer.model, tokenizer, val_df, cfg, rt, tta=True,
                                max_length=cfg.prompt.max_length, feature_scaler=scaler)
    frame = predict.prediction_frame(val_df["id"], val["probs"])
    for col, values in zip(data.LABEL_COLUMNS, val_labels.T):
        frame[f"true_{col}"] = values
    frame["fold"] = cfg.data.fold
    frame.to_csv(run_dir / VAL_PREDICTIONS, index=False)

    history = list(trainer.state.log_history)
    summary = {
        "run_dir": str(run_dir),
        "fold": cfg.data.fold,
        "train_rows": len(train_df),
        "val_rows": len(val_df),
        "uniform_log_loss": math.log(3),
        "prior_log_loss": prior_ll,
        "val_log_loss": metrics.log_loss(val_labels, val["probs_plain"]),
        "val_accuracy": metrics.accuracy(val_labels, val["probs_plain"]),
        "val_log_loss_tta": metrics.log_loss(val_labels, val["probs"]),
        "val_accuracy_tta": metrics.accuracy(val_labels, val["probs"]),
        "best_eval_log_loss": trainer.state.best_metric,
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "global_step": trainer.state.global_step,
        "global_batch": global_batch(cfg),
        "per_device_batch_size": cfg.train.per_device_batch_size,
        "grad_accum": cfg.train.grad_accum,
        "train_wall_seconds": round(result.metrics.get("train_runtime", train_seconds), 2),
        "total_wall_seconds": round(time.time() - started, 2),
        "train_examples_per_second": result.metrics.get("train_samples_per_second"),
        "device": rt.device,
        "compute_dtype": str(rt.dtype).removeprefix("torch."),
        "history": history,
    }
    (run_dir / METRICS_FILE).write_text(json.dumps(summary, indent=2, default=float))
    plot_curves(history, run_dir / "loss_curve.png", prior_ll)
    print(
        f"validation log loss {summary['val_log_loss']:.4f} (swap TTA {summary['val_log_loss_tta']:.4f}), "
        f"accuracy {summary['val_accuracy']:.3f}; class-prior baseline {prior_ll:.4f}, uniform {math.log(3):.4f}"
    )
    print(f"train wall time {summary['train_wall_seconds']:.0f} s; run saved to {run_dir}")
    return run_dir


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
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---- cross-validation -------------------------------------------------------------------------------

def cross_validate(cfg: Config, folds: int, only: list[int] | None = None) -> Path:
    """Train the selected folds; write out-of-fold predictions, OOF log loss and a per-fold table."""
    selected = only if only is not None else list(range(folds))
    bad = [f for f in selected if not 0 <= f < folds]
    if bad:
        raise UserError(f"--only: folds {bad} are not in 0..{folds - 1}")
    cv_dir = new_run_dir(cfg.train.runs_dir, f"{cfg.name}-cv")
    rows, oof = [], []
    for fold in selected:
        fold_cfg = config_mod.from_dict(cfg.to_dict(), [f"data.folds={folds}", f"data.fold={fold}",
                                                        f"train.runs_dir={cv_dir}", f"name=fold{fold}"])
        run_dir = train(fold_cfg)
        summary = json.loads((run_dir / METRICS_FILE).read_text())
        rows.append({"fold": fold, "rows": summary["val_rows"], "log_loss": summary["val_log_loss"],
                     "log_loss_tta": summary["val_log_loss_tta"], "accuracy": summary["val_accuracy_tta"],
                     "prior": summary["prior_log_loss"], "minutes": summary["total_wall_seconds"] / 60,
                     "run": run_dir.name})
        oof.append(pd.read_csv(run_dir / VAL_PREDICTIONS, dtype={"id": str}))
    oof_df = pd.concat(oof, ignore_index=True)
    oof_df.to_csv(cv_dir / "oof_predictions.csv", index=False)
    truth = oof_df[[f"true_{c}" for c in data.LABEL_COLUMNS]].to_numpy()
    pred = oof_df[list(data.LABEL_COLUMNS)].to_numpy()
    table = pd.DataFrame(rows)
    result = {"folds": folds, "selected": selected, "oof_rows": len(oof_df),
              "oof_log_loss": metrics.log_loss(truth, pred), "oof_accuracy": metrics.accuracy(truth, pred),
              "per_fold": rows}
    (cv_dir / "cv.json").write_text(json.dumps(result, indent=2, default=float))
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"OOF log loss {result['oof_log_loss']:.4f} (swap TTA), accuracy {result['oof_accuracy']:.3f} "
          f"over {len(oof_df)} rows; written to {cv_dir}")
    return cv_dir
