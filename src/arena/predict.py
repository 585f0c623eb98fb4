"""Inference: sorted dynamic batching, swap TTA, several processes (one per GPU) under accelerate, the validated
submission writer, and blending runs with weights fit on out-of-fold log loss."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from arena import config as config_mod
from arena import data, metrics, prompts
from arena.config import Config
from arena.errors import UserError
from arena.layout import LABEL_COLUMNS, SUBMISSION_COLUMNS, TRUE_COLUMNS, RunFolder, stamp, swap_classes
from arena.writes import atomic_file, output_problems

# ---- batching ---------------------------------------------------------------------------------------

def sorted_batches(lengths: list[int], max_batch_tokens: int, max_batch_size: int) -> list[list[int]]:
    """Row indices grouped longest-first so each batch pads only to its own longest row, within a token budget."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches, current = [], []
    for i in order:
        longest = lengths[current[0]] if current else lengths[i]
        if current and (len(current) + 1 > max_batch_size or (len(current) + 1) * longest > max_batch_tokens):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def padding_stats(lengths: list[int], batches: list[list[int]], fixed_length: int) -> dict:
    """Token slots processed by these batches vs padding every row to `fixed_length`."""
    real = int(sum(lengths))
    sorted_slots = int(sum(len(b) * max(lengths[i] for i in b) for b in batches))
    fixed_slots = int(len(lengths) * fixed_length)
    return {
        "real_tokens": real,
        "sorted_slots": sorted_slots,
        "fixed_slots": fixed_slots,
        "sorted_padding_fraction": 1 - real / sorted_slots if sorted_slots else 0.0,
        "fixed_padding_fraction": 1 - real / fixed_slots if fixed_slots else 0.0,
        "padded_tokens_fixed_over_sorted": (fixed_slots - real) / max(sorted_slots - real, 1),
    }


def logits_for(model, input_ids: list[list[int]], pad_token_id: int, cfg: Config, device: str,
               features: np.ndarray | None = None, desc: str = "predict") -> np.ndarray:
    """Logits (n, 3) in the input order; `features` are the head's standardised length features, if it has them."""
    batches = sorted_batches([len(x) for x in input_ids], cfg.infer.max_batch_tokens, cfg.infer.max_batch_size)
    return logits_for_batches(model, input_ids, pad_token_id, device, batches, features, desc=desc)


@torch.inference_mode()
def logits_for_batches(model, input_ids: list[list[int]], pad_token_id: int, device: str, batches: list[list[int]],
                       features: np.ndarray | None = None, pad_to: int | None = None,
                       desc: str = "predict") -> np.ndarray:
    """Logits (n, 3) in the input order, running these batches of row indices; each batch is padded to its
    longest row, or to `pad_to` tokens. On CUDA the forward runs under autocast at the model's compute dtype. Rows
    whose logits are not finite are named on stderr (by position in `input_ids`)."""
    import sys

    from arena.model import autocast, compute_dtype_of, left_pad

    out = np.zeros((len(input_ids), 3), dtype=np.float32)
    dtype = compute_dtype_of(model)
    with autocast(device, dtype):
        for batch in tqdm(batches, desc=desc, unit="batch", mininterval=2, disable=len(batches) < 4):
            ids, mask = left_pad([input_ids[i] for i in batch], pad_token_id, pad_to)
            batch_features = None if features is None else torch.from_numpy(features[batch]).to(device)
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), features=batch_features)
            out[batch] = logits.float().cpu().numpy()
    bad = np.flatnonzero(~np.isfinite(out).all(axis=1))
    if len(bad):
        shown = ", ".join(str(i) for i in bad[:20]) + (", ..." if len(bad) > 20 else "")
        print(f"warning: {desc}: {len(bad)} of {len(out)} rows have non-finite logits (rows {shown}): the compute "
              f"dtype {str(dtype).removeprefix('torch.')} overflowed? float16 does on some models: set "
              f"model.compute_dtype=float32 (or bfloat16 where the GPU has it)", file=sys.stderr)
    return out


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def combine_tta(logits: np.ndarray, swapped_logits: np.ndarray, how: str) -> np.ndarray:
    back = swap_classes(swapped_logits)
    if how == "logit":
        return softmax((logits + back) / 2)
    return (softmax(logits) + softmax(back)) / 2


def encode_view(tokenizer, df: pd.DataFrame, cfg: Config, max_length: int, feature_scaler: dict | None,
                swap: bool = False) -> tuple[list[list[int]], np.ndarray | None]:
    """Token ids and head features of the rows in A/B order, or in B/A order with swap=True."""
    ids = prompts.encode_frame(tokenizer, df, cfg.prompt, cfg.model.family, swap=swap, max_length=max_length)
    features = data.head_features(df, feature_scaler, swap=swap) if feature_scaler else None
    return ids, features


def predict_frame(model, tokenizer, df: pd.DataFrame, cfg: Config, rt, tta: bool, max_length: int,
                  feature_scaler: dict | None = None, plain_logits: np.ndarray | None = None) -> dict:
    """Probabilities for a DataFrame of rows; with TTA also the plain and swapped-back parts.
    `plain_logits`: the rows' logits in the A/B order when they are already known (not predicted again)."""
    model.eval()
    device = model_device(model)
    if plain_logits is None:
        ids, features = encode_view(tokenizer, df, cfg, max_length, feature_scaler)
        logits = logits_for(model, ids, tokenizer.pad_token_id, cfg, device, features, desc="predict A/B")
    else:
        logits = np.asarray(plain_logits, dtype=np.float32)
    result = {"logits": logits, "probs_plain": softmax(logits)}
    if tta:
        ids, features = encode_view(tokenizer, df, cfg, max_length, feature_scaler, swap=True)
        swapped = logits_for(model, ids, tokenizer.pad_token_id, cfg, device, features, desc="predict B/A")
        result["probs_swapped"] = softmax(swap_classes(swapped))
        result["probs"] = combine_tta(logits, swapped, cfg.infer.tta_average)
    else:
        result["probs"] = result["probs_plain"]
    return result


def model_device(model) -> str:
    return str(next(model.parameters()).device)


# ---- submission -------------------------------------------------------------------------------------

def prediction_frame(ids, probs: np.ndarray) -> pd.DataFrame:
    frame = pd.DataFrame({"id": list(ids)})
    frame[LABEL_COLUMNS] = probs
    return frame


def write_submission(frame: pd.DataFrame, expected_ids, path: str | Path) -> Path:
    """Validate (ids, columns, finite, [0,1], rows sum to 1) and only then write; never overwrite."""
    path = Path(path)
    if path.exists():
        raise UserError(f"{path}: already exists; predictions never overwrite an earlier file")
    probs = frame[LABEL_COLUMNS].to_numpy(dtype=np.float64)
    frame = frame.copy()
    frame[LABEL_COLUMNS] = probs / probs.sum(axis=1, keepdims=True)
    metrics.validate_submission(frame, expected_ids)
    with atomic_file(path) as tmp:
        frame[SUBMISSION_COLUMNS].to_csv(tmp, index=False)
    return path


# ---- processes --------------------------------------------------------------------------------------

View = tuple[list[list[int]], "np.ndarray | None"]  # token ids and head features of every row


def logits_for_views(run: RunFolder, cfg: Config, base_model: str | None, views: list[View], pad_id: int,
                     deadline: float | None = None, shards: str | Path | None = None,
                     known_plain: np.ndarray | None = None):
    """(plain logits, swapped logits or None, one budget.PassReport per process) of every row on the main process
    (None on the others); NaN where a pass did not reach a row. Under `accelerate launch` each process loads its
    own copy of the model (on its GPU, or the CPU) and predicts its share of the rows, dealt so that every process
    gets the same number of tokens, within the deadline (budget.run_passes); it writes its share to its own file
    in `shards` and the main process merges them (processes.collect_shards: no collective that could time out
    while one GPU is slower). One process predicts every row. `known_plain`: every row's plain logits, predicted
    by an earlier call (then only the swapped order runs)."""
    from arena import model as model_mod
    from arena import processes
    from arena.budget import inference as budget

    cpu = model_mod.device_for(cfg) == "cpu"
    procs = processes.state(cpu)
    n = len(views[0][0])
    rows = processes.deal_by_tokens([len(x) for x in views[0][0]], procs.num_processes)[procs.process_index]
    if deadline is not None and time.time() >= deadline - budget.FINISH_RESERVE_S:
        # no batch can run (run_passes stops before the first): no model to load, every row takes the prior
        print(f"WARNING: the deadline passed {time.time() - deadline:.0f} s before prediction began: NO row is "
              f"predicted, every row takes the run's class prior", file=sys.stderr, flush=True)
        model, device = None, "cpu"
    else:
        model, _, _ = model_mod.load_trained(cfg, run, base_model, cfg.infer.quantization)
        model.eval()
        device = model_device(model)
    local = [([ids[i] for i in rows], None if features is None else features[rows]) for ids, features in views]

    def forward(view: int, batch: list[int]) -> np.ndarray:
        ids, features = local[view]
        return logits_for_batches(model, ids, pad_id, device, [batch], features)[batch]

    lengths = [len(x) for x in local[0][0]]
    batches = sorted_batches(lengths, cfg.infer.max_batch_tokens, cfg.infer.max_batch_size)
    costs = [len(b) * max(lengths[i] for i in b) for b in batches]
    where = f" (process {procs.process_index})" if procs.num_processes > 1 else ""
    plain, swapped, report = budget.run_passes(forward, batches, costs, len(rows), len(views) > 1, deadline,
                                               desc="predict" + where,
                                               known_plain=None if known_plain is None else known_plain[rows])
    print(f"budget{where}: {report.describe()}", flush=True)
    # the passes stop FINISH_RESERVE_S before the deadline: the other ranks' shards are due by then
    parts = processes.collect_shards((rows, plain, swapped, report), shards, cpu, deadline)
    if parts is None:
        return None
    whole = [np.full((n, 3), np.nan, dtype=np.float32) for _ in views]
    reports = []
    for part in parts:
        if part is None:  # a rank that never wrote: its rows stay NaN, filled in like rows the budget left out
            continue
        shard, *pieces, shard_report = part
        for target, piece in zip(whole, pieces):
            target[shard] = piece
        reports.append(shard_report)
    return whole[0], (whole[1] if len(views) > 1 else None), reports


def probabilities(plain: np.ndarray, swapped: np.ndarray | None, how: str,
                  prior=None) -> tuple[np.ndarray, dict]:
    """Probabilities of every row from its plain and swapped logits (NaN: not predicted), and the counts of each
    case. A row with finite logits in both orders averages them (swap TTA); one finite order alone is taken as
    it is; a row with neither (non-finite logits, or a pass that never reached it) takes `prior`, the run's
    training class prior (head.json), else (runs saved before it was stored) the mean probability of the rows that
    have one, else uniform: the submission is always valid."""
    plain_ok = np.isfinite(plain).all(axis=1)
    swapped_ok = np.isfinite(swapped).all(axis=1) if swapped is not None else np.zeros(len(plain), dtype=bool)
    probs = np.full((len(plain), 3), np.nan)
    both, only_plain, only_swapped = plain_ok & swapped_ok, plain_ok & ~swapped_ok, swapped_ok & ~plain_ok
    if both.any():
        probs[both] = combine_tta(plain[both], swapped[both], how)
    probs[only_plain] = softmax(plain[only_plain])
    if only_swapped.any():
        probs[only_swapped] = softmax(swap_classes(swapped[only_swapped]))
    neither = ~(plain_ok | swapped_ok)
    if prior is not None:
        fallback = np.asarray(prior, dtype=float) / np.sum(prior)
    else:
        fallback = probs[~neither].mean(axis=0) if (~neither).any() else np.full(3, 1 / 3)
    probs[neither] = fallback
    return probs, {"tta": int(both.sum()), "plain_only": int(only_plain.sum()), "swapped_only": int(only_swapped.sum()),
                   "prior": int(neither.sum())}


def identical_responses(df: pd.DataFrame) -> np.ndarray:
    """Rows whose two responses are the same text after whitespace normalisation (every turn, in order)."""
    def normal(turns) -> str:
        return " ".join("\n".join("" if t is None else str(t) for t in turns).split())

    return np.array([normal(a) == normal(b) for a, b in zip(df["response_a"], df["response_b"])], dtype=bool)


def set_identical_ties(probs: np.ndarray, df: pd.DataFrame, tie: float | None) -> tuple[np.ndarray, int]:
    """`infer.identical_tie`: rows with identical responses get P(tie) = `tie`, the rest split evenly between A
    and B (None: left as predicted). Returns the probabilities and the number of rows set."""
    same = identical_responses(df)
    if tie is None or not same.any():
        return probs, 0
    probs = probs.copy()
    probs[same] = [(1 - tie) / 2, (1 - tie) / 2, tie]
    return probs, int(same.sum())


def predict_file(run_dir, data_path, out_path=None, tta: bool | None = None, overrides=(), base_model=None,
                 calibrate: bool = True, deadline: str | None = None, budget_hours: float | None = None,
                 kernel_start: float | None = None, logits_file=None) -> Path | None:
    """`arena predict`: a run folder (or adapter dataset with the same layout) + a CSV -> validated submission,
    calibrated once when the run has a calibration (`calibrate=False` turns it off). With a `deadline` (epoch
    seconds or ISO time) or `budget_hours`, the plain order of every row comes first and swap TTA covers as many
    rows as the time left allows (budget.run_passes). Rows without finite logits are filled in (probabilities()).
    `logits_file`: written with every row's logits when it does not exist; when it does, its plain logits are
    taken instead of predicted again (the kernel's ensembles: every member's plain order before any swapped one).
    Under `accelerate launch`, every process predicts its share and the main one writes (the others return None)."""
    from arena import calibration, processes
    from arena import model as model_mod
    from arena.budget import inference as budget

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
        df = data.load_test(data_path)  # lenient: a hidden test's odd rows are repaired and counted
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
    cpu = cfg is None or model_mod.device_for(cfg) == "cpu"
    # every process writes its shard beside the same output file: the main process names both (they are stamped)
    out_path, shards = (Path(p) for p in processes.decided_by_main(lambda: shard_names(out_path, run, data_path), cpu))
    problems = output_problems(out_path, "prediction file") + problems
    if problems:
        raise UserError(problems=problems)
    tta = cfg.infer.tta if tta is None else tta
    head = model_mod.read_head(run)
    scaler = head.get("feature_scaler")
    tokenizer = model_mod.load_tokenizer(run.adapter)
    max_length = cfg.infer.max_length
    budget_problem = prompts.budget_problem(tokenizer, cfg.prompt, cfg.model.family, max_length)
    if budget_problem:
        raise config_mod.ConfigError(f"infer.max_length: {budget_problem}")
    views = [encode_view(tokenizer, df, cfg, max_length, scaler)]
    if tta:
        views.append(encode_view(tokenizer, df, cfg, max_length, scaler, swap=True))
    if known is not None and not tta:  # nothing left to predict: no model to load
        merged = known, None, [budget.PassReport(rows=len(df), plain_rows=len(df))]
    else:
        merged = logits_for_views(run, cfg, base_model, views, tokenizer.pad_token_id, until, shards, known)
    if merged is None:  # another process of `accelerate launch`: the main one writes
        return None
    shutil.rmtree(shards, ignore_errors=True)
    plain, swapped, reports = merged
    if logits_file and known is None:
        write_logits(logits_file, df["id"], plain, swapped)
    probs, counts = probabilities(plain, swapped, cfg.infer.tta_average, head.get("class_prior"))
    report_budget(reports, counts, len(df), tta, until)
    if cal is not None:
        probs = cal[0].apply(probs)
        print(f"calibration applied: {calibration.describe(cal[0])} from {cal[1]}"
              + ("" if tta else " (fit on swap-averaged predictions; this prediction has no swap TTA)"))
    probs, ties = set_identical_ties(probs, df, cfg.infer.identical_tie)
    if ties:
        print(f"identical responses: {ties} row(s) set to P(tie) = {cfg.infer.identical_tie:g} (infer.identical_tie)")
    path = write_submission(prediction_frame(df["id"], probs), df["id"], out_path)
    lengths = [len(x) for x in views[0][0]]
    stats = padding_stats(lengths, sorted_batches(lengths, cfg.infer.max_batch_tokens, cfg.infer.max_batch_size),
                          max_length)
    print(f"wrote {len(df)} predictions to {path} (swap TTA {'on' if tta else 'off'}; "
          f"padding {stats['sorted_padding_fraction']:.1%} sorted vs {stats['fixed_padding_fraction']:.1%} fixed)")
    if data.label_matrix(df) is not None:
        truth = data.label_matrix(df)
        print(f"labels present: log loss {metrics.log_loss(truth, probs):.4f}, accuracy {metrics.accuracy(truth, probs):.3f}")
    return path


def write_logits(path, ids, plain: np.ndarray, swapped: np.ndarray | None) -> None:
    with atomic_file(path) as tmp, open(tmp, "wb") as out:
        np.savez(out, ids=np.asarray(ids, dtype=str), plain=plain,
                 swapped=np.full_like(plain, np.nan) if swapped is None else swapped)
    print(f"logits of {len(plain)} rows kept in {path}")


def read_logits(path, df: pd.DataFrame | None, problems: list[str]) -> np.ndarray | None:
    """The plain logits that `write_logits` kept for these rows (None, with the problem added, if the file is
    not one, or is for other rows)."""
    try:
        with np.load(path) as kept:
            ids, plain = kept["ids"], kept["plain"]
    except (OSError, ValueError, KeyError) as exc:
        problems.append(f"--logits {path}: not a logits file from `arena predict --logits` ({exc})")
        return None
    if df is not None and (plain.shape != (len(df), 3) or ids.tolist() != df["id"].astype(str).tolist()):
        problems.append(f"--logits {path}: holds the logits of other rows than {len(df)} rows of this --data "
                        f"(ids differ); give a new file name to predict them")
        return None
    return plain


def shard_names(out_path, run: RunFolder, data_path) -> tuple[str, str]:
    """The submission's path (default: RUN/predictions/<data>-<time>.csv) and the folder beside it where each
    process leaves its share."""
    out = Path(out_path) if out_path else run.predictions / f"{Path(data_path).stem}-{stamp()}.csv"
    return str(out), str(out.with_name(f".{out.name}.shards-{stamp()}"))


def report_budget(reports: list, counts: dict, rows: int, tta: bool, deadline: float | None) -> None:
    """The lines a kernel log needs: how many rows got swap TTA and why it stopped, and every filled-in row."""
    from arena.budget import inference as budget

    stopped = sorted({r.stopped for r in reports if r.stopped})
    if tta:
        print(f"swap TTA: {counts['tta']} of {rows} rows ({counts['tta'] / max(rows, 1):.0%}); "
              + (f"stopped by {'; '.join(stopped)}" if stopped else
                 "every row" + ("" if deadline is None else " within the deadline")), flush=True)
    elif stopped:
        print(f"plain pass stopped by {'; '.join(stopped)}", flush=True)
    reached = sum(r.plain_rows for r in reports), sum(r.swapped_rows for r in reports)
    nonfinite = reached[0] - counts["tta"] - counts["plain_only"], reached[1] - counts["tta"] - counts["swapped_only"]
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


# ---- blending ---------------------------------------------------------------------------------------

def fit_blend_weights(oof_probs: list[np.ndarray], truth: np.ndarray) -> np.ndarray:
    """Non-negative weights summing to 1 that minimise the OOF log loss of the weighted average."""
    from scipy.optimize import minimize

    def loss(theta):
        w = softmax(theta[None, :])[0]
        return metrics.log_loss(truth, sum(wi * p for wi, p in zip(w, oof_probs)))

    best = minimize(loss, np.zeros(len(oof_probs)), method="Nelder-Mead", options={"xatol": 1e-4, "fatol": 1e-6})
    return softmax(best.x[None, :])[0]


def blend_files(oof_paths: list[str], pred_paths: list[str], out_path: str, calibrate: bool = True) -> Path:
    """`arena blend`: weights fit on the runs' OOF log loss, applied to their test predictions. Every file is
    checked (readable, columns, values, the same ids across runs) before anything is fit or written. OOF files
    hold raw predictions: each is calibrated with the calibration of its run or CV folder, if any (unless
    `calibrate=False`), as `arena predict` calibrated that run's test predictions; those are taken as written."""
    from arena import calibration

    problems = output_problems(out_path, "blended submission")
    if len(oof_paths) != len(pred_paths):
        problems.append(f"blend: give one --oof file per --preds file, in the same order "
                        f"(got {len(oof_paths)} and {len(pred_paths)})")
    oofs = _read_runs(oof_paths, "OOF", [*LABEL_COLUMNS, *TRUE_COLUMNS], problems)
    preds = _read_runs(pred_paths, "prediction", LABEL_COLUMNS, problems)
    cals = []
    for path in oof_paths if calibrate else ():
        try:
            cals.append(calibration.for_predictions_file(path))
        except UserError as exc:
            problems += exc.problems
    if problems:
        raise UserError(problems=problems)
    for path, frame, cal in zip(oof_paths, oofs, cals):
        if cal is not None:
            frame[LABEL_COLUMNS] = cal[0].apply(frame[LABEL_COLUMNS].to_numpy())
            print(f"OOF {path}: calibrated with {calibration.describe(cal[0])} from {cal[1]}")
    ids, test_ids = oofs[0].index, preds[0].index
    truth = oofs[0].loc[ids, TRUE_COLUMNS].to_numpy()
    weights = fit_blend_weights([f.loc[ids, LABEL_COLUMNS].to_numpy() for f in oofs], truth)
    blended = sum(w * f.loc[test_ids, LABEL_COLUMNS].to_numpy() for w, f in zip(weights, preds))
    for path, w, frame in zip(oof_paths, weights, oofs):
        print(f"weight {w:.3f}  OOF log loss {metrics.log_loss(truth, frame.loc[ids, LABEL_COLUMNS].to_numpy()):.4f}  {path}")
    oof_blend = sum(w * f.loc[ids, LABEL_COLUMNS].to_numpy() for w, f in zip(weights, oofs))
    print(f"blended OOF log loss {metrics.log_loss(truth, oof_blend):.4f}")
    return write_submission(prediction_frame(test_ids, blended), test_ids, out_path)


def _read_runs(paths: list[str], role: str, columns: list[str], problems: list[str]) -> list[pd.DataFrame]:
    """One frame per run (numeric columns indexed by id); every problem, ids differing from the first file's
    included, is added to `problems`."""
    frames = []
    for path in paths:
        try:
            raw = metrics.read_columns(path, role, ["id", *columns])
        except UserError as exc:
            problems += exc.problems
            continue
        found, _ = metrics.check_frame(raw[SUBMISSION_COLUMNS], str(path),
                                            expected_ids=frames[0].index if frames else None)
        bad_truth = raw[[c for c in columns if c in TRUE_COLUMNS]].apply(pd.to_numeric, errors="coerce").isna()
        if bad_truth.to_numpy().any():
            found.append(f"{path}: missing or non-numeric true_* label values (an OOF file from `arena cv` or a "
                         f"run's val_predictions.csv has them)")
        problems += found
        if not found:
            frames.append(raw.set_index("id")[columns].astype(float))
    return frames
