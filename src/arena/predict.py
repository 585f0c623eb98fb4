"""`arena predict`: a run (or adapter dataset) and a CSV to a validated submission, as a short sequence of named
steps over arena.inference (batching, passes, tta, submission, blend), whose names stay importable from here."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from arena import calibration, data, faults, metrics, processes, prompts, task
from arena import config as config_mod
from arena import model as model_mod
from arena.budget import inference as budget
from arena.config import Config
from arena.errors import UserError
from arena.inference import uncertainty
from arena.inference.batching import logits_for, logits_for_batches, model_device, padding_stats, sorted_batches
from arena.inference.blend import blend_files, fit_blend_weights
from arena.inference.passes import View, logits_for_views
from arena.inference.submission import (
    prediction_frame,
    read_logits,
    shard_names,
    write_logits,
    write_submission,
)
from arena.inference.tta import (
    combine_tta,
    encode_view,
    identical_responses,
    predict_frame,
    probabilities,
    set_identical_ties,
    softmax,
)
from arena.layout import RunFolder
from arena.writes import output_problems

__all__ = ["View", "blend_files", "combine_tta", "encode_view", "fit_blend_weights", "identical_responses",
           "logits_for", "logits_for_batches", "logits_for_views", "model_device", "padding_stats", "predict_file",
           "predict_frame", "prediction_frame", "probabilities", "read_logits", "report_budget", "set_identical_ties",
           "shard_names", "softmax", "sorted_batches", "write_logits", "write_submission"]


@dataclass
class Request:
    """An `arena predict` call, checked: the run and its config, the rows, the deadline, the calibration, plain
    logits kept by an earlier call, where the file and each process's share go."""

    run: RunFolder
    cfg: Config
    df: pd.DataFrame
    tta: bool
    base_model: str | None
    until: float | None
    calibration: tuple | None
    known: np.ndarray | None
    logits_file: Path | None
    out_path: Path
    shards: Path
    progress_dir: Path | None = None
    fill_only: bool = False


def predict_file(run_dir, data_path, out_path=None, tta: bool | None = None, overrides=(), base_model=None,
                 calibrate: bool = True, deadline: str | None = None, budget_hours: float | None = None,
                 kernel_start: float | None = None, logits_file=None, progress_dir=None,
                 fill_only: bool = False) -> Path | None:
    """`arena predict`: a run folder (or adapter dataset with the same layout) + a CSV -> validated submission,
    calibrated once when the run has a calibration (`calibrate=False` turns it off). With a `deadline` (epoch
    seconds or ISO time) or `budget_hours`, the plain order of every row comes first and swap TTA covers as many
    rows as the time left allows (budget.run_passes). Rows without finite logits are filled in (probabilities()).
    `logits_file`: written with every row's logits when it does not exist; when it does, its plain logits are
    taken instead of predicted again (the kernel's ensembles: every member's plain order before any swapped one).
    `progress_dir`: each process keeps its logits there as it goes, and logits an earlier call kept there for the
    same rows and run are taken; `fill_only`: no model loads, the kept logits and the class prior make the file.
    Under `accelerate launch`, every process predicts its share and the main one writes (the others return None)."""
    request = check_request(run_dir, data_path, out_path, tta, overrides, base_model, calibrate, deadline,
                            budget_hours, kernel_start, logits_file, progress_dir, fill_only)
    head = model_mod.read_head(request.run)
    views, pad_id = encode_views(request, head)
    merged = predict_views(request, views, pad_id)
    if merged is None:  # another process of `accelerate launch`: the main one writes
        return None
    probs = final_probabilities(request, merged, head)
    path = write_predictions(request, probs, views)
    if request.progress_dir is None:  # a --progress folder is kept for the caller (the kernel) to remove
        shutil.rmtree(request.shards, ignore_errors=True)
    return path


def check_request(run_dir, data_path, out_path, tta, overrides, base_model, calibrate, deadline, budget_hours,
                  kernel_start, logits_file, progress_dir=None, fill_only=False) -> Request:
    """Every problem of the call at once (run, config, deadline, base model, rows, calibration, kept logits,
    output), before any model loads; the output's name is decided by the main process."""
    run = RunFolder(run_dir)
    cfg, df, problems = None, None, []
    try:
        cfg = config_mod.load_run(run, list(overrides))
    except UserError as exc:
        problems += exc.problems
    until = None
    try:
        if kernel_start is not None and cfg is not None:
            if deadline is not None or budget_hours is not None:
                raise UserError("--kernel-start: give it alone, without --deadline or --budget-hours")
            # the kernel's own clock: a deadline already passed still gives a valid file (prior-filled rows)
            until = budget.kernel_deadline(kernel_start, cfg.kaggle)
        else:
            until = budget.parse_deadline(deadline, budget_hours)
    except UserError as exc:
        problems += exc.problems
    if run.is_trained():
        problems += model_mod.check_trained(run)
    if base_model is not None and not (Path(base_model) / "config.json").is_file():
        problems.append(f"--base-model {base_model}: not a model folder (no config.json)")
    try:
        # lenient: a hidden test's odd rows are repaired and counted
        df = data.load_test(data_path, task.of_config(cfg) if cfg is not None else None)
    except data.DataError as exc:
        problems += exc.problems
    cal = None
    if calibrate and run.is_trained():
        try:
            cal = calibration.for_run(run)
        except UserError as exc:
            problems += exc.problems
    known = read_logits(logits_file, df, problems) if logits_file and Path(logits_file).exists() else None
    if logits_file and known is None and not Path(logits_file).exists():
        problems += output_problems(logits_file, "logits file (--logits)")  # before the prediction, not after
    problems += progress_problems(progress_dir, fill_only, logits_file, until)
    cpu = cfg is None or model_mod.device_for(cfg) == "cpu"
    # every process writes its shard in the same folder: the main process names it and the output (both stamped)
    out_path, shards = (Path(p) for p in processes.decided_by_main(
        lambda: shard_names(out_path, run, data_path, progress_dir), cpu))
    problems = output_problems(out_path, "prediction file") + problems
    if cfg is not None and task.of_config(cfg).submission == "winner":
        problems += output_problems(data.probabilities_path(out_path), "probabilities beside the submission")
    if problems:
        raise UserError(problems=problems)
    return Request(run, cfg, df, cfg.infer.tta if tta is None else tta, base_model, until, cal, known,
                   Path(logits_file) if logits_file else None, out_path, shards,
                   Path(progress_dir) if progress_dir else None, fill_only)


def progress_problems(progress_dir, fill_only: bool, logits_file, until: float | None) -> list[str]:
    """--progress must be a folder that can be written, --fill-only needs logits to fill from, and an injected
    session-limit fault a deadline to bring forward."""
    problems = []
    if progress_dir is not None:
        problems += output_problems(progress_dir, "progress folder (--progress)", folder=True, may_exist=True)
    if fill_only and progress_dir is None and logits_file is None:
        problems.append("--fill-only: give --progress DIR (or --logits FILE), the logits to fill the file from")
    try:
        fault = faults.from_env()
    except UserError as exc:
        return problems + exc.problems
    if fault is not None and fault.name == "session-limit" and until is None:
        problems.append(f"{faults.FAULT_ENV}=session-limit: the prediction has no deadline to bring forward (give "
                        f"--deadline, --budget-hours or --kernel-start)")
    return problems


def encode_views(request: Request, head: dict) -> tuple[list, int]:
    """The rows as the model reads them, in A/B order and (with TTA) B/A order; the pad token id."""
    cfg = request.cfg
    tokenizer = model_mod.load_tokenizer(request.run.adapter)
    budget_problem = prompts.budget_problem(tokenizer, cfg.prompt, cfg.model.family, cfg.infer.max_length)
    if budget_problem:
        raise config_mod.ConfigError(f"infer.max_length: {budget_problem}")
    scaler = head.get("feature_scaler")
    views = [encode_view(tokenizer, request.df, cfg, cfg.infer.max_length, scaler, swap=swap)
             for swap in ((False, True) if request.tta else (False,))]
    return views, tokenizer.pad_token_id


def predict_views(request: Request, views: list, pad_id: int):
    """(plain logits, swapped logits or None, pass reports) on the main process, None on the others; the kept
    plain logits are used, not predicted again, and written when this call predicted them."""
    rows = len(request.df)
    if request.known is not None and not request.tta:  # nothing left to predict: no model to load
        return request.known, None, [budget.PassReport(rows=rows, plain_rows=rows)]
    merged = logits_for_views(request.run, request.cfg, request.base_model, views, pad_id, request.until,
                              request.shards, request.known, request.progress_dir, request.fill_only)
    if merged is not None and request.logits_file and request.known is None:
        write_logits(request.logits_file, request.df["id"], merged[0], merged[1])
    return merged


def final_probabilities(request: Request, merged, head: dict) -> np.ndarray:
    """Probabilities of every row: the orders combined, rows without a finite prediction filled in (and said),
    the run's calibration, identical responses set to a tie."""
    plain, swapped, reports = merged
    cfg = request.cfg
    probs, counts = probabilities(plain, swapped, cfg.infer.tta_average, head.get("class_prior"))
    report_budget(reports, counts, len(request.df), request.tta, request.until,
                  cfg.infer.tta_order, uncertainty.reached(plain, swapped)[1])
    if request.calibration is not None:
        fitted, source = request.calibration
        probs = fitted.apply(probs)
        print(f"calibration applied: {calibration.describe(fitted)} from {source}"
              + ("" if request.tta else " (fit on swap-averaged predictions; this prediction has no swap TTA)"))
    probs, ties = set_identical_ties(probs, request.df, cfg.infer.identical_tie)
    if ties:
        print(f"identical responses: {ties} row(s) set to P(tie) = {cfg.infer.identical_tie:g} (infer.identical_tie)")
    return probs


def write_predictions(request: Request, probs: np.ndarray, views: list) -> Path:
    """The validated submission, and what a log needs: padding saved by sorting, the score when labels are there."""
    cfg, df = request.cfg, request.df
    the_task = task.of_config(cfg)
    path = write_submission(prediction_frame(df["id"], probs), df["id"], request.out_path, the_task)
    lengths = [len(x) for x in views[0][0]]
    stats = padding_stats(lengths, sorted_batches(lengths, cfg.infer.max_batch_tokens, cfg.infer.max_batch_size),
                          cfg.infer.max_length)
    print(f"wrote {len(df)} predictions to {path} (swap TTA {'on' if request.tta else 'off'}; "
          f"padding {stats['sorted_padding_fraction']:.1%} sorted vs {stats['fixed_padding_fraction']:.1%} fixed)"
          + (f"; as the competition takes it, `id,winner`, with the probabilities in {data.probabilities_path(path).name}"
             if the_task.submission == "winner" else ""))
    truth = data.label_matrix(df)
    if truth is not None:
        print(f"labels present: log loss {metrics.log_loss(truth, probs):.4f}, accuracy "
              f"{metrics.accuracy(truth, probs):.3f} (the task is scored by {the_task.metric})")
    return path


def report_budget(reports: list, counts: dict, rows: int, tta: bool, deadline: float | None,
                  order: str = "shortest", cut: float | None = None) -> None:
    """The lines a kernel log needs: how many rows each order covered (swap TTA: which rows first, infer.tta_order,
    and the uncertainty `cut` it reached: every row whose plain top probability is below it got both orders) and
    why it stopped, and every filled-in row."""
    stopped = sorted({r.stopped for r in reports if r.stopped})
    if tta:
        plain = counts["tta"] + counts["plain_only"]
        print(f"plain order: {plain} of {rows} rows; swap TTA: {counts['tta']} of {rows} rows "
              f"({counts['tta'] / max(rows, 1):.0%}, {order} rows first); "
              + (f"stopped by {'; '.join(stopped)}" if stopped else
                 "every row" + ("" if deadline is None else " within the deadline")), flush=True)
        if order == "uncertain" and cut is not None:
            print(f"swap TTA reached the uncertainty cut {cut:.3f}: every row whose plain-order top probability is "
                  f"below it got both orders", flush=True)
    elif stopped:
        print(f"plain pass stopped by {'; '.join(stopped)}", flush=True)
    failed = [r.failed for r in reports if r.failed]
    if failed:
        print(f"WARNING: {len(failed)} process(es) failed during the passes ({'; '.join(failed)}): the other "
              f"processes took the batches they left ({sum(r.taken for r in reports)} batch(es) taken in all)",
              flush=True)
    nonfinite = sum(r.nonfinite[0] for r in reports), sum(r.nonfinite[1] for r in reports)
    if any(nonfinite):
        print(f"WARNING: non-finite logits in {nonfinite[0]} row(s) of the plain order"
              + (f" and {nonfinite[1]} of the swapped order" if tta else "")
              + f": {counts['swapped_only']} took the swapped order's prediction, the rest as below", flush=True)
    if counts["prior"]:
        print(f"WARNING: {counts['prior']} row(s) have no finite prediction in either order (non-finite logits, "
              f"or not reached in time): they take the run's class prior", flush=True)
    if deadline is not None:
        print(f"time left before the deadline: {deadline - time.time():.0f} s "
              f"(finish reserve {budget.FINISH_RESERVE_S:.0f} s)", flush=True)
