"""Inference: sorted dynamic batching, swap TTA, several processes (one per GPU) under accelerate, the validated
submission writer, and blending runs with weights fit on out-of-fold log loss."""

from __future__ import annotations

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


def logits_for_views(run: RunFolder, cfg: Config, base_model: str | None, views: list[View], pad_id: int):
    """Logits (n, 3) of every view (plain, swapped), on the main process (None on the others). Under `accelerate
    launch` each process loads its own copy of the model (on its GPU, or the CPU) and predicts its share of the
    rows, dealt so that every process gets the same number of tokens; one process predicts every row."""
    from arena import model as model_mod
    from arena import processes

    cpu = model_mod.runtime_for(cfg).device == "cpu"
    procs = processes.state(cpu)
    rows = processes.deal_by_tokens([len(x) for x in views[0][0]], procs.num_processes)[procs.process_index]
    model, _, _ = model_mod.load_trained(cfg, run, base_model, cfg.infer.quantization)
    device = model_device(model)
    part = []
    for k, (ids, features) in enumerate(views):
        part.append(logits_for(model, [ids[i] for i in rows], pad_id, cfg, device,
                               None if features is None else features[rows],
                               desc=f"predict view {k + 1}/{len(views)}" + (
                                   f" (process {procs.process_index})" if procs.num_processes > 1 else "")))
    parts = processes.gather_to_main((rows, part), cpu)
    if parts is None:
        return None
    logits = [np.zeros((len(ids), 3), dtype=np.float32) for ids, _ in views]
    for shard, shard_logits in parts:
        for whole, piece in zip(logits, shard_logits):
            whole[shard] = piece
    return logits


def predict_file(run_dir, data_path, out_path=None, tta: bool | None = None, overrides=(), base_model=None,
                 calibrate: bool = True) -> Path | None:
    """`arena predict`: a run folder (or adapter dataset with the same layout) + a CSV -> validated submission,
    calibrated once when the run has a calibration (`calibrate=False` turns it off).
    Under `accelerate launch`, every process predicts its share and the main one writes (the others return None)."""
    from arena import calibration
    from arena import model as model_mod

    run = RunFolder(run_dir)
    if out_path is None:
        out_path = run.predictions / f"{Path(data_path).stem}-{stamp()}.csv"
    cfg, df, problems = None, None, output_problems(out_path, "prediction file")
    try:
        cfg = config_mod.load_run(run, list(overrides))
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
    if problems:
        raise UserError(problems=problems)
    tta = cfg.infer.tta if tta is None else tta
    scaler = model_mod.read_head(run).get("feature_scaler")
    tokenizer = model_mod.load_tokenizer(run.adapter)
    max_length = cfg.infer.max_length
    budget = prompts.budget_problem(tokenizer, cfg.prompt, cfg.model.family, max_length)
    if budget:
        raise config_mod.ConfigError(f"infer.max_length: {budget}")
    views = [encode_view(tokenizer, df, cfg, max_length, scaler)]
    if tta:
        views.append(encode_view(tokenizer, df, cfg, max_length, scaler, swap=True))
    logits = logits_for_views(run, cfg, base_model, views, tokenizer.pad_token_id)
    if logits is None:  # another process of `accelerate launch`: the main one writes
        return None
    probs = combine_tta(logits[0], logits[1], cfg.infer.tta_average) if tta else softmax(logits[0])
    if cal is not None:
        probs = cal[0].apply(probs)
        print(f"calibration applied: {calibration.describe(cal[0])} from {cal[1]}"
              + ("" if tta else " (fit on swap-averaged predictions; this prediction has no swap TTA)"))
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
