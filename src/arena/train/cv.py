"""K-fold cross-validation on top of `train()`: out-of-fold predictions, OOF log loss and a per-fold table."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from arena import config as config_mod
from arena import data, metrics, processes
from arena import model as model_mod
from arena.config import Config
from arena.errors import UserError
from arena.labels import LABEL_COLUMNS, TRUE_COLUMNS
from arena.layout import CVFolder, RunFolder, new_folder
from arena.train.run import train
from arena.writes import atomic_file, write_text


def cross_validate(cfg: Config, folds: int, only: list[int] | None = None, origin: dict | None = None) -> Path:
    """Train the selected folds; write out-of-fold predictions, OOF log loss and a per-fold table. `origin`
    (config.origin()) goes into the CV folder and each fold run. Under `accelerate launch` every process trains
    each fold in one CV folder the main process creates; the main one alone reads the folds' results and writes."""
    selected = only if only is not None else list(range(folds))
    bad = [f for f in selected if not 0 <= f < folds]
    if bad:
        raise UserError(f"--only: folds {bad} are not in 0..{folds - 1}")
    cpu = model_mod.device_for(cfg) == "cpu"
    cv = CVFolder(processes.decided_by_main(lambda: str(create_cv_folder(cfg, origin)), cpu))
    main = processes.state(cpu).is_main_process
    rows, oof = [], []
    for fold in selected:
        fold_cfg = config_mod.from_dict(cfg.to_dict(), [f"data.folds={folds}", f"data.fold={fold}",
                                                        f"train.runs_dir={cv.root}", f"name=fold{fold}"])
        run = RunFolder(train(fold_cfg, origin=origin))
        # The main process finishes a fold alone (with DDP it evaluates alone): the others start the next fold once
        # it has written the fold's summary, so the next fold's first collective does not wait out its evaluation.
        processes.wait_for_main(run.metrics, cpu)
        if not main:
            continue
        summary = json.loads(run.metrics.read_text())
        rows.append({"fold": fold, "rows": summary["val_rows"], "log_loss": summary["val_log_loss"],
                     "log_loss_tta": summary["val_log_loss_tta"], "accuracy": summary["val_accuracy_tta"],
                     "prior": summary["prior_log_loss"], "minutes": summary["total_wall_seconds"] / 60,
                     "run": run.root.name})
        fold_oof = data.read_table(run.val_predictions, "validation predictions")  # ids as written ("NA" too)
        numbers = [*LABEL_COLUMNS, *TRUE_COLUMNS]
        fold_oof[numbers] = fold_oof[numbers].astype(float)
        oof.append(fold_oof)
    if main:
        write_results(cv, folds, selected, rows, oof)
    return cv.root


def create_cv_folder(cfg: Config, origin: dict | None) -> Path:
    cv = CVFolder(new_folder(cfg.train.runs_dir, f"{cfg.name}-cv"))
    if origin is not None:
        write_text(cv.recipe, json.dumps(origin, indent=2))
    return cv.root


def write_results(cv: CVFolder, folds: int, selected: list[int], rows: list[dict], oof: list[pd.DataFrame]) -> None:
    """oof_predictions.csv and cv.json, and the per-fold table printed."""
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
