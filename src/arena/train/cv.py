"""K-fold cross-validation on top of `train()`: out-of-fold predictions, OOF log loss and a per-fold table."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd

from arena import config as config_mod
from arena import data, metrics, processes, segments, task
from arena import model as model_mod
from arena.config import Config
from arena.errors import UserError
from arena.layout import CVFolder, RunFolder, folders_of, new_folder
from arena.task import of_columns
from arena.train.resume import Resume, last_complete_checkpoint
from arena.train.run import train
from arena.writes import atomic_file, write_text


def cross_validate(cfg: Config, folds: int, only: list[int] | None = None, origin: dict | None = None,
                   resume: str | None = None) -> Path:
    """Train the selected folds; write out-of-fold predictions, OOF log loss and a per-fold table. `origin`
    (config.origin()) goes into the CV folder and each fold run. `resume`: a CV folder (or "latest") whose
    finished folds are kept, unfinished ones resumed and missing ones trained. Under `accelerate launch` every
    process trains each fold in one CV folder the main process creates; the main one alone reads and writes."""
    cpu = model_mod.device_for(cfg) == "cpu"
    if resume is None:
        selected = check_selection(folds, only)
        cv = CVFolder(processes.decided_by_main(lambda: str(create_cv_folder(cfg, folds, selected, origin)), cpu))
    else:
        cv = find_cv(cfg, resume)
        cfg, folds, selected = resumed_plan(cv, folds, only)
        print(f"resuming the CV {cv.root}: folds {selected} of {folds}")
    main = processes.state(cpu).is_main_process
    rows, oof = [], []
    for fold in selected:
        fold_cfg = config_mod.replace(cfg, {"data.folds": folds, "data.fold": fold, "train.runs_dir": str(cv.root),
                                            "name": f"fold{fold}"}, by="arena cv")
        try:
            run = train_fold(fold_cfg, cv, fold, origin)
        except UserError:
            if main and resume is None and not rows:  # refused before any fold finished: no CV folder is left
                shutil.rmtree(cv.root, ignore_errors=True)
            raise
        # The main process ends a fold alone (it merges the processes' validation shares and writes): the others
        # start the next fold once it has written the fold's summary, so no collective waits out that work.
        processes.wait_for_main(run.metrics, cpu)
        if not main:
            continue
        summary = json.loads(run.metrics.read_text())
        rows.append({"fold": fold, "rows": summary["val_rows"], "log_loss": summary["val_log_loss"],
                     "log_loss_tta": summary["val_log_loss_tta"], "accuracy": summary["val_accuracy_tta"],
                     "prior": summary["prior_log_loss"], "minutes": summary["total_wall_seconds"] / 60,
                     "run": run.root.name})
        fold_oof = data.read_table(run.val_predictions, "validation predictions")  # ids as written ("NA" too)
        labels = of_columns(fold_oof.columns)
        numbers = [*labels.label_columns, *labels.true_columns]
        fold_oof[numbers] = fold_oof[numbers].astype(float)
        oof.append(fold_oof)
    if main:
        write_results(cv, folds, selected, rows, oof, task.of_config(cfg).metric)
    return cv.root


def check_selection(folds: int, only: list[int] | None) -> list[int]:
    """The folds to train: --only (each fold once, each one of 0..folds-1), else every fold."""
    selected = only if only is not None else list(range(folds))
    bad = [f for f in selected if not 0 <= f < folds]
    if bad:
        raise UserError(f"--only: folds {bad} are not in 0..{folds - 1}")
    twice = sorted({f for f in selected if selected.count(f) > 1})
    if twice:
        raise UserError(f"--only: fold(s) {twice} listed more than once (each fold is trained once)")
    return selected


def create_cv_folder(cfg: Config, folds: int, selected: list[int], origin: dict | None) -> Path:
    cv = CVFolder(new_folder(cfg.train.runs_dir, f"{cfg.name}-cv"))
    config_mod.dump(cfg, cv.config)
    write_text(cv.plan, json.dumps({"folds": folds, "selected": selected}, indent=2))
    if origin is not None:
        write_text(cv.recipe, json.dumps(origin, indent=2))
    return cv.root


def find_cv(cfg: Config, resume: str) -> CVFolder:
    """--resume: the CV folder given, or ("latest") the newest unfinished CV of exactly this config's name."""
    if resume != "latest":
        cv = CVFolder(resume)
        if not cv.plan.is_file() or not cv.config.is_file():
            raise UserError(f"--resume {resume}: not a CV folder from `arena cv` that can be resumed (no "
                            f"{cv.plan.name} and {cv.config.name}: a folder of an older arena, or not a CV folder)")
        if cv.summary.is_file():
            raise UserError(f"--resume {resume}: this CV finished (it has {cv.summary.name}); run a new one")
        return cv
    candidates = [cv for cv in map(CVFolder, folders_of(cfg.train.runs_dir, f"{cfg.name}-cv"))
                  if cv.plan.is_file() and not cv.summary.is_file()]
    if not candidates:
        raise UserError(f"--resume latest: no unfinished CV of '{cfg.name}' under {cfg.train.runs_dir}")
    return max(candidates, key=lambda cv: cv.plan.stat().st_mtime)


def resumed_plan(cv: CVFolder, folds: int | None, only: list[int] | None) -> tuple[Config, int, list[int]]:
    """The CV's own config, folds and selection; --folds or --only that differ from them are an error."""
    plan = json.loads(cv.plan.read_text(encoding="utf-8"))
    problems = []
    if folds is not None and folds != plan["folds"]:
        problems.append(f"--folds {folds}: the CV {cv.root} has {plan['folds']} folds")
    if only is not None and only != plan["selected"]:
        problems.append(f"--only {','.join(map(str, only))}: the CV {cv.root} trains folds {plan['selected']}")
    if problems:
        raise UserError(problems=problems + ["a resume finishes the CV as it was started"])
    return config_mod.load(cv.config), plan["folds"], plan["selected"]


def train_fold(fold_cfg: Config, cv: CVFolder, fold: int, origin: dict | None) -> RunFolder:
    """The fold's run: kept when it finished, resumed when it stopped with a checkpoint, else trained anew."""
    runs = sorted((RunFolder(p) for p in cv.root.glob(f"fold{fold}-*") if (p / "config.yaml").is_file()),
                  key=lambda r: r.root.name)
    finished = [r for r in runs if r.is_finished()]
    if finished:
        print(f"fold {fold}: finished before, kept ({finished[-1].root})")
        return finished[-1]
    resumable = [r for r in runs if last_complete_checkpoint(r, quiet=True) is not None]
    if resumable:
        return RunFolder(train(fold_cfg, resume=Resume(str(resumable[-1].root)), origin=origin))
    return RunFolder(train(fold_cfg, origin=origin))


def write_results(cv: CVFolder, folds: int, selected: list[int], rows: list[dict], oof: list[pd.DataFrame],
                  metric: str) -> None:
    """oof_predictions.csv and cv.json, and the per-fold table printed, the task's `metric` first."""
    oof_df = pd.concat(oof, ignore_index=True)
    with atomic_file(cv.oof_predictions) as tmp:
        oof_df.to_csv(tmp, index=False)
    labels = of_columns(oof_df.columns)
    truth = oof_df[labels.true_columns].to_numpy()
    pred = oof_df[labels.label_columns].to_numpy()
    result = {"folds": folds, "selected": selected, "oof_rows": len(oof_df), "metric": metric,
              "oof_log_loss": metrics.log_loss(truth, pred), "oof_accuracy": metrics.accuracy(truth, pred),
              "per_fold": rows}
    write_text(cv.summary, json.dumps(result, indent=2, default=float))
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    scores = {"log_loss": f"log loss {result['oof_log_loss']:.4f}", "accuracy": f"accuracy {result['oof_accuracy']:.4f}"}
    print(f"OOF {scores.pop(metric)} (the task's metric; swap TTA), {scores.popitem()[1]} over {len(oof_df)} rows "
          f"({labels.labels}); written to {cv.root}")
    print(segments.render(segments.tables(oof_df), title="\nOOF by segment (worst first):"))
