"""The pre-flight projection: the Kaggle T4x2 wall time of a run's kernel on the hidden test set, from token
lengths measured with the run's tokenizer and prompt encoding, before anything is pushed."""

from __future__ import annotations

from pathlib import Path

from arena import data, model, planner, prompts
from arena.budget.inference import projected_tta_share
from arena.config import Config
from arena.errors import UserError
from arena.layout import RunFolder

# Fixed time on top of inference (pip install from the wheels dataset, loading and quantising the base model on
# both GPUs, tokenising the test set twice). An allowance, not a measurement.
LOAD_ALLOWANCE_S = 15 * 60
MAX_ROWS = 1000  # token lengths are measured on a sample of at most this many test rows
SAMPLE_ROWS = 200  # generated rows when no test CSV is there


def project_runtime(mean_tokens: float, rows: int, tta: bool, tokens_per_s: float | None, limit_hours: float) -> dict:
    """Projected T4x2 wall time: rows x mean tokens x passes / throughput + the load allowance."""
    passes = 2 if tta else 1
    total_tokens = rows * mean_tokens * passes
    result = {"hidden_test_rows": rows, "mean_tokens_per_row": round(mean_tokens, 1), "passes": passes,
              "total_tokens": round(total_tokens), "t4x2_tokens_per_s": tokens_per_s,
              "load_allowance_s": LOAD_ALLOWANCE_S, "time_limit_hours": limit_hours,
              "inference_hours": None, "projected_hours": None, "exceeds_limit": None}
    if tokens_per_s:
        inference_s = total_tokens / tokens_per_s
        result["inference_hours"] = round(inference_s / 3600, 3)
        result["projected_hours"] = round((inference_s + LOAD_ALLOWANCE_S) / 3600, 3)
        result["exceeds_limit"] = result["projected_hours"] > limit_hours
    return result


def _token_rows(test_csv: str | Path | None):
    """(rows, description) to measure token lengths on: --test-csv, data/test.csv, else a generated sample."""
    candidates = [Path(test_csv)] if test_csv else [Path("data/test.csv")]
    for path in candidates:
        if path.is_file():
            df = data.load(path)
            total = len(df)
            if total > MAX_ROWS:
                df = df.sample(MAX_ROWS, random_state=0)
            note = f"{len(df)} of {total} rows of {path}"
            if total < 100:
                note += " (few rows: a rough estimate; --test-csv data/train.csv measures more)"
            return df, note
        if test_csv:
            raise UserError(f"--test-csv {path}: file not found")
    df = data.generate_sample(SAMPLE_ROWS, seed=0)
    return df, (f"{SAMPLE_ROWS} generated sample rows, as no test CSV was given and data/test.csv is "
                f"missing: real rows are longer, so treat this as a lower bound (pass --test-csv)")


def preflight(run: RunFolder, cfg: Config, test_csv: str | Path | None = None) -> dict:
    """The Kaggle T4x2 projection for a trained run, with token lengths from the run's own tokenizer."""
    return project(cfg, model.load_tokenizer(run.adapter), "the run's tokenizer", test_csv)


def project(cfg: Config, tokenizer, tokenizer_note: str, test_csv: str | Path | None = None, gpu: str = "t4",
            gpus: int = 2) -> dict:
    """Measure tokens per row with `tokenizer` and the config's prompt encoding, and project the wall time of
    the hidden test set on `gpus` x `gpu`."""
    df, measured_on = _token_rows(test_csv)
    ids = prompts.encode_frame(tokenizer, df, cfg.prompt, cfg.model.family, max_length=cfg.infer.max_length)
    mean_tokens = sum(len(x) for x in ids) / max(len(ids), 1)
    speed = tokens_per_s(cfg, mean_tokens, gpu, gpus)
    result = project_runtime(mean_tokens, cfg.kaggle.hidden_test_rows, cfg.infer.tta, speed["tokens_per_s"],
                             cfg.kaggle.time_limit_hours)
    result |= {"gpu": gpu, "gpus": gpus, "throughput_method": speed["method"],
               "tta_share": projected_tta_share(result, cfg.kaggle.deadline_margin_minutes)}
    result["method"] = (f"tokens per row measured with {tokenizer_note} and the prompt encoding "
                        f"(family {cfg.model.family}, infer.max_length {cfg.infer.max_length}) on {measured_on}; "
                        f"projected = kaggle.hidden_test_rows x mean tokens x {result['passes']} "
                        f"pass{'es (swap TTA)' if result['passes'] == 2 else ''} / tokens per second "
                        f"+ {LOAD_ALLOWANCE_S // 60} min allowance for pip install, model load and tokenising")
    return result


def tokens_per_s(cfg: Config, mean_tokens: float, gpu: str = "t4", gpus: int = 2) -> dict:
    """Inference throughput: infer.t4x2_tokens_per_s when set (measured on Kaggle's T4x2), else the planner's
    projection for the architecture."""
    if cfg.infer.t4x2_tokens_per_s > 0 and (gpu, gpus) == ("t4", 2):
        return {"tokens_per_s": cfg.infer.t4x2_tokens_per_s,
                "method": "infer.t4x2_tokens_per_s, as set in the config (a measured figure)"}
    try:
        return planner.throughput(cfg, mean_tokens, gpu=gpu, gpus=gpus)
    except UserError as e:
        return {"tokens_per_s": None, "method": f"unknown: {e}; set infer.t4x2_tokens_per_s"}


def format_preflight(pf: dict) -> str:
    if "members" in pf:
        return format_ensemble(pf)
    hardware = f"{pf['gpus']} x {pf['gpu'].upper()}" if "gpu" in pf else "Kaggle GPU T4x2"
    lines = [f"pre-flight projection ({hardware}):", f"  method: {pf['method']}"]
    if "throughput_method" in pf:  # absent from bundles built before the planner
        lines.append(f"  tokens per second: {pf['throughput_method']}")
    lines += [f"  mean tokens per row: {pf['mean_tokens_per_row']}; {pf['hidden_test_rows']:,} hidden rows x "
              f"{pf['passes']} pass(es) = {pf['total_tokens']:,} tokens"]
    known = pf["projected_hours"] is not None
    breakdown = (f"{pf['inference_hours']:.2f} h inference at {pf['t4x2_tokens_per_s']:g} tokens/s + "
                 f"{pf['load_allowance_s'] / 3600:.2f} h allowance") if known else ""
    tta = [f"  projected swap TTA share: {pf['tta_share']:.0%} of rows (the kernel runs the plain order for every "
           f"row, then the swapped order until its deadline)"] if known and pf.get("tta_share") is not None else []
    lines += _wall_time_lines(pf, "  projected wall time", breakdown, "", tta, "the projection",
                              "Lower infer.max_length, turn off infer.tta, or use a faster model.")
    return "\n".join(lines)


def _wall_time_lines(pf: dict, label: str, breakdown: str, unknown_why: str, notes: list[str], subject: str,
                     advice: str) -> list[str]:
    """The projected wall time against the limit, `notes` under it, and the warning when it exceeds the limit."""
    limit = f"limit {pf['time_limit_hours']} h"
    if pf["projected_hours"] is None:
        return [f"{label}: unknown{unknown_why}; {limit}"]
    lines = [f"{label}: {pf['projected_hours']:.2f} h = {breakdown}; {limit}", *notes]
    if pf["exceeds_limit"]:
        lines.append(f"  WARNING: {subject} EXCEEDS the {pf['time_limit_hours']} h limit: the kernel would time out. "
                     f"{advice}")
    return lines


# ---- ensembles: the members run one after another -------------------------------------------------

def sum_projections(member_projections: list[dict], runs: list[str]) -> dict:
    """The ensemble's wall time: the members run one after another, so their projections (each with its own
    load allowance) add up; the total is checked against the time limit."""
    limit = min(pf["time_limit_hours"] for pf in member_projections)
    hours = [pf["projected_hours"] for pf in member_projections]
    total = None if any(h is None for h in hours) else round(sum(hours), 3)
    return {"members": [pf | {"run": run} for pf, run in zip(member_projections, runs)],
            "projected_hours": total, "time_limit_hours": limit,
            "exceeds_limit": None if total is None else total > limit,
            "method": "the members run one after another: projected = the sum of every member's projection "
                      "(each its inference time + its load allowance)"}


def format_ensemble(pf: dict) -> str:
    lines = [f"pre-flight projection of an ensemble of {len(pf['members'])} runs, predicting one after another:"]
    for index, member in enumerate(pf["members"]):
        lines.append(f"member {index} ({member['run']}):")
        lines += ["  " + line for line in format_preflight(member).splitlines()]
    parts = " + ".join(f"{m['projected_hours']:.2f}" for m in pf["members"] if m["projected_hours"] is not None)
    lines += _wall_time_lines(pf, "ensemble projected wall time", f"{parts} h (members in turn)",
                              " (a member's throughput is unknown)", [], "the ensemble's projection",
                              "Drop a member, turn off infer.tta, or lower infer.max_length.")
    return "\n".join(lines)
