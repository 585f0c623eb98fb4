import ast
import copy
import dataclasses
import json
import math
import re
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from benchmarks import baselines, family, measure, plan, report, speed, split, text, variants

from arena import config, data, metrics, predict
from arena.task import THREE_WAY

REPO = Path(__file__).resolve().parents[1]
NUMBER = re.compile(r"(?<![\w.])\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?")


# ---- splitting and baselines -------------------------------------------------------------------------

def test_split_by_prompt_holds_out_whole_prompts_only():
    df = data.generate_sample(200, seed=3)
    # several rows per prompt, as in PandaLM
    df["prompt"] = [[f"prompt {i % 30}"] for i in range(len(df))]
    rest, held = split.split_by_prompt(df, held_out_rows=50, seed=0)
    assert len(rest) + len(held) == len(df)
    assert 50 <= len(held) < 50 + 10
    assert not set(split.prompt_keys(rest)) & set(split.prompt_keys(held))
    again_rest, again_held = split.split_by_prompt(df, held_out_rows=50, seed=0)
    assert again_held["id"].tolist() == held["id"].tolist()


def test_build_split_keeps_side_sources_out_and_drops_prompts_shared_across_files():
    a = data.generate_sample(120, seed=1)
    b = data.generate_sample(60, seed=2)
    b["id"] = [f"b{i}" for i in range(len(b))]
    b["prompt"] = list(a["prompt"].iloc[:60])  # every prompt of b also appears in a
    p = plan.Plan([plan.SourcePlan("a.csv", held_out=40, train=None),
                   plan.SourcePlan("b.csv", held_out=10, train=30, main_eval=False)],
                  folds=5, max_rows=100, speed_rows=4, repeats=1)
    s = split.build_split({"a.csv": a, "b.csv": b}, p, seed=0)
    held = set(split.prompt_keys(s.main_eval)) | set(split.prompt_keys(s.side_eval["b"]))
    assert not set(split.prompt_keys(s.train)) & held
    assert set(s.main_eval["source"]) == {"a"} and list(s.side_eval) == ["b"]
    assert s.dropped_for_leaks > 0
    assert (s.train["source"] == "b").sum() <= 30
    comp = split.composition({"a.csv": a, "b.csv": b}, p, s.train, s.train.iloc[:0],
                             {"held-out": s.main_eval, "b": s.side_eval["b"]})
    assert [c["source"] for c in comp] == ["a", "b"] and [c["main_eval"] for c in comp] == [True, False]
    assert comp[0]["file"]["rows"] == len(a) and comp[1]["held_out"] == len(s.side_eval["b"])
    assert sum(c["train_share"] for c in comp) == pytest.approx(1)


def test_every_source_says_why_it_is_in_the_main_or_a_side_set():
    for p in (plan.FULL, plan.QUICK, plan.generated_plan(plan.QUICK, 90)):
        assert all(sp.reason and not NUMBER.search(sp.reason) for sp in p.sources)
    assert [sp.main_eval for sp in plan.QUICK.sources] == [sp.main_eval for sp in plan.FULL.sources]


def test_length_baseline_beats_uniform_on_a_generated_sample():
    df = data.generate_sample(600, seed=0)
    rest, held = split.split_by_prompt(df, held_out_rows=200, seed=0)
    lr = baselines.fit_length_baseline(rest)
    probs = baselines.predict_length_baseline(lr, held)
    assert metrics.log_loss(held["label"].to_numpy(), probs) < math.log(3) - 0.05
    cal_lr, params = baselines.fit_calibrated_length_baseline(rest)
    cal = baselines.calibrate(baselines.predict_length_baseline(cal_lr, held), params)
    np.testing.assert_allclose(cal.sum(axis=1), 1)
    assert metrics.log_loss(held["label"].to_numpy(), cal) < math.log(3) - 0.05


def test_calibration_fixes_an_overconfident_forecast():
    rng = np.random.default_rng(0)
    guess = rng.integers(0, 3, 2000)
    honest = np.full((2000, 3), 0.2)
    honest[np.arange(2000), guess] = 0.6  # right 60% of the time, each other class 20%
    y = np.array([rng.choice(3, p=row) for row in honest])
    overconfident = predict.softmax(3 * np.log(honest))
    params = baselines.fit_calibration(overconfident, y)
    assert math.exp(params[0]) == pytest.approx(3, rel=0.05)
    assert metrics.log_loss(y, baselines.calibrate(overconfident, params)) < metrics.log_loss(y, overconfident) - 0.1


# ---- speed ------------------------------------------------------------------------------------------

def test_right_pad_pads_every_row_to_max_length():
    from arena.model import right_pad

    ids, mask = right_pad([[5, 6, 7], [8], []], pad_token_id=0, length=6)
    assert ids.shape == mask.shape == (3, 6)
    assert ids.tolist() == [[5, 6, 7, 0, 0, 0], [8, 0, 0, 0, 0, 0], [0] * 6]
    assert mask.sum(dim=1).tolist() == [3, 1, 0]
    with pytest.raises(ValueError, match="longer than 2"):
        right_pad([[1, 2, 3]], 0, 2)
    assert speed.fixed_batches(5, 2) == [[0, 1], [2, 3], [4]]


def test_fixed_padding_gives_the_logits_of_sorted_batching(tiny_model_dir):
    from arena import model as model_mod

    cfg = config.from_dict({"model": {"path": str(tiny_model_dir), "family": "plain", "quantization": "none",
                                      "length_features": True},
                            "prompt": {"max_length": 96, "min_tokens": 8},
                            "infer": {"max_length": 96, "max_batch_tokens": 384, "max_batch_size": 4}})
    rt = model_mod.runtime_for(cfg)
    model = model_mod.load_base(cfg, rt, bias=[0.0, 0.0, 0.0], num_features=len(data.HEAD_FEATURE_NAMES))
    tokenizer = model_mod.load_tokenizer(tiny_model_dir)
    torch = pytest.importorskip("torch")
    with torch.no_grad():
        for head in (m for m in model.modules() if isinstance(m, model_mod.PreferenceHead)):
            head.proj.weight.normal_(std=0.5)
            head.features.weight.normal_(std=0.5)
    model.eval()
    df = data.generate_sample(10, seed=4)
    for i in range(0, 10, 2):  # short rows, so that lengths differ and fixed padding really pads
        df.at[i, "prompt"], df.at[i, "response_a"], df.at[i, "response_b"] = ["Hi"], ["Sure!"], ["No" * i]
    scaler = data.fit_feature_scaler(df)
    ids, feats = predict.encode_view(tokenizer, df, cfg, 96, scaler)
    assert len({len(x) for x in ids}) > 1 and max(len(x) for x in ids) <= 96
    fixed = speed.fixed_padding_logits(model, ids, tokenizer.pad_token_id, 96, 4, "cpu", feats)
    dynamic = predict.logits_for(model, ids, tokenizer.pad_token_id, cfg, "cpu", feats)
    np.testing.assert_allclose(fixed, dynamic, atol=1e-4)
    assert np.abs(fixed).max() > 1e-3


# ---- the report -------------------------------------------------------------------------------------

def difference(mean: float, se: float, verdict: str) -> dict:
    return {"mean": mean, "se": se, "verdict": verdict}


def fake_family(work: str) -> dict:
    """results["family"] as family.measure writes it, with made-up values (no two alike)."""
    def steps(name, k):
        lines = {"train": [f"data: {61 + k} train rows, {17 + k} validation rows (fold 0 of 5)",
                           f"validation log loss 0.{6813 + k} (swap TTA 0.{6722 + k}), accuracy 0.{573 + k}"],
                 "cv": [f"OOF accuracy 0.{6141 + k} (the task's metric; swap TTA), log loss 0.{6637 + k} over "
                        f"{96 + k} rows (two-way); written to {work}/family/{name}/cv/family-{name}-cv-20261207"],
                 "predict": [f"wrote {32 + k} predictions to {work}/family/{name}/submission.csv"],
                 "score": [f"log_loss 0.{6912 + k}  accuracy 0.{5313 + k}  rows {32 + k}"],
                 "package": [f"bundle: {work}/family/{name}/bundle"],
                 "rehearsal": [f"rehearsal passed: /home/u/arena/{work}/family/{name}/kernel/submission.csv "
                               f"({32 + k} rows, valid)"]}
        return [{"step": step, "command": f"arena {step} --set name=family-{name}", "exit": 0,
                 "wall_s": 12.3 + 7.1 * i + 3.3 * k, "printed": printed}
                for i, (step, printed) in enumerate(lines.items())]

    def scores(k, columns):
        return {"predict": {"columns": columns, "rows": 32 + k},
                "rehearsal": {"rows": 32 + k, "columns": columns, "max_prob_diff_vs_predict": 1.7e-7 * (k + 1)}}

    return {"sizes": dataclasses.asdict(family.FULL), "overrides": ["train.max_steps=45"], "wall_seconds": 731.4,
            "tasks": [
                {"id": "wsdm", "competition": family.WSDM, "task": "two-way (model_a / model_b), accuracy",
                 "overrides": [], "steps": steps("wsdm", 0), "scores": scores(0, ["id", "winner"]),
                 "data": {"train_rows": 96, "test_rows": 32, "made_by": "arena data sample"}},
                {"id": "arena", "competition": "lmsys-chatbot-arena", "task": "three-way, log_loss",
                 "overrides": [], "steps": steps("arena", 1), "scores": scores(1, ["id", "winner_model_a"]),
                 "data": {"train_rows": 72, "test_rows": 31, "extra_file": f"{work}/family/arena/x.parquet",
                          "sources": ["autoj_pairwise_dev", "pandalm_human"],
                          "extra_rows": 48, "extra_format": "arena-33k", "extra_source": "lmsys/chatbot_arena_conversations"},
                 "extra": {"line": f"extra data {work}/family/arena/x.parquet (arena-33k): 48 rows in, 46 kept; dropped "
                                   "2 duplicate of a training/test row (either order)", "rows_in": 48, "kept": 46,
                           "dropped": 2}},
            ]}


def fake_results() -> dict:
    """A results dict of the shape `measure.run` writes, with made-up values (no two alike)."""
    cfg = config.load(None, ["train.max_steps=45", "data.max_rows=360", "data.folds=10"])
    gpu = config.load(config.CONFIG_DIR / plan.GPU_RECIPE)
    methods = list(measure.METHODS)
    sources = {"autoj_pairwise_dev": True, "pandalm_human": True, "hh_rlhf_harmless": False}

    def scores(k, rows):
        return {m: {"log_loss": 1.01 + 0.013 * i + 0.007 * k, "accuracy": 0.41 + 0.017 * i + 0.003 * k, "rows": rows}
                for i, m in enumerate(methods)}

    def timing(s):
        return {"median_s": s, "times_s": [s * 0.97, s, s * 1.06]}

    def padding(real, sorted_slots, fixed_slots):
        return {"real_tokens": real, "sorted_slots": sorted_slots, "fixed_slots": fixed_slots,
                "sorted_padding_fraction": 1 - real / sorted_slots, "fixed_padding_fraction": 1 - real / fixed_slots,
                "padded_tokens_fixed_over_sorted": (fixed_slots - real) / (sorted_slots - real)}

    def comparison(length, k):
        return {"max_length": length, "max_batch_tokens": 4096 + k, "max_batch_size": 16 + k, "fixed_batch_size": 8 + k,
                "sorted_batch_sizes": [13 + k, 11 + k], "padding": padding(7001 + k, 7303 + k, 8192 + k),
                "max_abs_logit_diff_sorted_vs_fixed": 6.1e-8 * (k + 1), "sorted": timing(18.3 + k),
                "fixed": timing(19.7 + k)}

    main = comparison(256, 0)
    quant = {q: {"load_s": 9.4 + i, **timing(18.3 + 7.1 * i), "log_loss": 1.0217 + 0.0061 * i,
                 "max_prob_diff_vs_trained": 0.027 * i} for i, q in enumerate(speed.QUANTIZATIONS)}
    return {
        "schema": report.SCHEMA, "command": "python -m benchmarks --out docs/benchmarks.md", "quick": False,
        "date": "2026-11-23T11:20:00", "wall_seconds": 1683.4,
        "environment": {"device": {"cpu": "AMD EPYC", "cores": 2, "torch_threads": 2, "memory_gib": 23.4, "gpu": None,
                                   "python": "3.11.7", "platform": "Linux"},
                        "versions": {"torch": "2.13.0+cpu", "bitsandbytes": "0.50.2"}, "commit": "50f92aa",
                        "loadavg_start": [0.31, 0.52, 0.71], "loadavg_end": [2.03, 1.94, 1.55]},
        "work_dir": "bench/20261123-105159", "run_dir": "bench/20261123-105159/runs/bench-20261123-105201",
        "config_file": "configs/default.yaml", "overrides": ["data.train=bench/20261123-105159/train.csv"],
        "config": cfg.to_dict(), "runtime": {"device": "cpu", "dtype": "float32"},
        "base_model": {"model_type": "gemma3_text", "num_hidden_layers": 18, "hidden_size": 640, "parameters": 268098176},
        "gpu_recipe": {"file": f"configs/{plan.GPU_RECIPE}", "config": gpu.to_dict()},
        "plan": {**plan.FULL.to_dict(), "seed": 42, "padding_lengths": [256, 512, 1024, 2048]},
        "data": {"dir": "../shared/data", "labels": "human", "dropped_for_leaks": 3, "training_file_rows": 437,
                 "checkpoint_val_rows": 64},
        "composition": [{"source": s, "file": {"rows": 696 + 303 * i, "prompts": 522 - 51 * i,
                                               "rows_per_prompt": 1.33 + 2.3 * i, "tie_rate": 0.27 - 0.13 * i,
                                               **({"scenarios": 58} if i == 0 else {})},
                         "train": 251 - 87 * i, "train_share": 0.697 - 0.31 * i, "checkpoint_val": 40 - 11 * i,
                         "held_out": 280 - 95 * i, "main_eval": main_eval, "tie_train": 0.303 - 0.12 * i,
                         "tie_held_out": 0.257 - 0.106 * i} for i, (s, main_eval) in enumerate(sources.items())],
        "methods": [{"id": k, "label": v} for k, v in measure.METHODS.items()],
        "baselines": baselines.settings(cfg, np.array([0.21, -0.04, 0.06])),
        "quality": {"held-out": {"all": scores(0, 369), "autoj_pairwise_dev": scores(1, 280),
                                 "pandalm_human": scores(2, 89)}, "hh_rlhf_harmless": {"all": scores(3, 64)}},
        "fit_seconds": {"prior": 0.13, "length_lr": 0.031, "length_lr_cal": 0.24, "step0": 0.62, "model": 421.3,
                        "model_tta": 421.3, "model_tta_cal": 423.9},
        "model_calibration": {"form": "softmax(log p / T + b)", "temperature": 1.37, "bias": [0.12, -0.05, 0.0],
                              "rows": 64, "cross_fit": {"folds": 5, "seed": 42, "stratified_by": "true class"},
                              "log_loss_before": 1.0621, "log_loss_after_cross_fitted": 1.0488},
        "eval_wall_seconds": {"held-out": 362.1, "hh_rlhf_harmless": 68.3},
        "train_summary": {"train_rows": 360, "global_step": 45, "global_batch": 8, "train_wall_seconds": 421.3,
                          "total_wall_seconds": 498.2, "train_examples_per_second": 0.85, "start_kept": True,
                          "start_eval_log_loss": 0.9517},
        "diagnostics": {"tie_rate_train": 0.222, "tie_rate_held_out": 0.206, "mean_pred_tie_tta": 0.245,
                        "position_bias_plain": -0.006, "position_bias_swapped": 0.015, "true_a_minus_b": 0.057,
                        "mean_abs_diff_plain_vs_swapped": 0.094, "mean_abs_diff_model_vs_step0": 0.027,
                        "first_train_loss": 0.7145, "last_train_loss": 1.0759,
                        "eval_log_loss_by_step": [[0, 0.9517], [30, 0.9568], [45, 0.9617]],
                        "model_vs_step0": {"standard_errors": 2.0,
                                           "plain": {"mean": 0.0542, "se": 0.0131, "verdict": "hurts"},
                                           "tta": {"mean": -0.0151, "se": 0.0062, "verdict": "helps"}}},
        "speed": {"device": "cpu", "rows": 32, "repeats": 3, "warmup_passes": 1, "held_out_rows": 369, **main,
                  "padding_all_held_out": padding(81002, 82311, 94464), "truncated_share_all_held_out": 0.69,
                  "padding_by_length": [{"max_length": n, "max_batch_tokens": max(4096, 4 * n), "max_batch_size": 16,
                                         "truncated_share": 0.69 / (i + 1), "median_tokens": 256.0 + 47 * i,
                                         **padding(81002 + 11 * i, 82311 + 1301 * i, 94464 * (i + 1))}
                                        for i, n in enumerate([256, 512, 1024, 2048])],
                  "padding_budget": {"floor_tokens": 4096, "rows_at_max_length": 4, "max_batch_size": 16},
                  "long": comparison(512, 1), "plain": main["sorted"], "tta": timing(38.4), "tta_average": "prob",
                  "trained_quantization": "nf4", "quantization": quant,
                  "functions": {"sorted": "arena.predict.logits_for",
                                "fixed": "benchmarks.speed.fixed_padding_logits",
                                "tta": "arena.predict.predict_frame", "speed": "benchmarks.speed.measure"}},
        "family": fake_family("bench/20261123-105159"),
        "variants": {"labels": variants.VARIANTS, "standard_errors": 2.0, "rows": 369, "variants": [
            {"id": "default", "log_loss": 1.0269, "accuracy": 0.4986, "train_seconds": 421.3, "steps": 45,
             "train_rows": 360, "fold": 0},
            {"id": "paired", "log_loss": 1.0241, "accuracy": 0.5041, "train_seconds": 433.7, "steps": 45,
             "train_rows": 360, "rows_seen": 180, "vs_default": difference(-0.0028, 0.0019, "no measurable difference")},
            {"id": "distilled", "log_loss": 1.0302, "accuracy": 0.4932, "train_seconds": 447.1, "steps": 45,
             "train_rows": 360, "vs_default": difference(0.0033, 0.0011, "hurts"),
             "teacher": {"what": "length LR, out of fold", "folds": 5, "rows": 437, "oof_log_loss": 1.0412,
                         "weight": 0.5, "temperature": 1.0, "covered": 360}},
            {"id": "self_distilled", "log_loss": 1.0288, "accuracy": 0.4959, "train_seconds": 452.6, "steps": 45,
             "train_rows": 360, "covered": 360, "weight": 0.5,
             "vs_default": difference(0.0019, 0.0012, "no measurable difference")},
            {"id": "middle", "log_loss": 1.0244, "accuracy": 0.5014, "train_seconds": 425.0, "steps": 45,
             "train_rows": 360, "vs_default": difference(-0.0025, 0.0021, "no measurable difference")},
            {"id": "fold_average", "log_loss": 1.0203, "accuracy": 0.5068, "train_seconds": 850.6, "fold": 1,
             "fold1_log_loss": 1.0311, "vs_default": difference(-0.0066, 0.0024, "helps")},
            {"id": "fold_merged", "log_loss": 1.0217, "accuracy": 0.5014, "train_seconds": 881.9,
             "merge_seconds": 31.3, "vs_default": difference(-0.0052, 0.0023, "helps"),
             "vs_average": difference(0.0014, 0.0009, "no measurable difference"), "mean_abs_diff_vs_average": 0.0087},
        ], "budgets": {
            "tta_order": {"every_row_vs_plain": difference(-0.0341, 0.0062, "helps"), "shares": [
                {"share": share, "rows": round(share * 369), "vs_shortest": difference(-0.0047 * k, 0.0018, "helps"),
                 "shortest_vs_plain": difference(-0.0103 * k, 0.0031, "helps"),
                 "uncertain_vs_plain": difference(-0.0150 * k, 0.0036, "helps")}
                for k, share in enumerate((0.33, 0.66), start=1)]},
            "gated": {"full_vs_first": difference(-0.0066, 0.0024, "helps"), "shares": [
                {"share": share, "rows": round(share * 369), "vs_first": difference(-0.0041 * k, 0.0015, "helps"),
                 "vs_equal_time": difference(-0.0012 * k, 0.0011, "no measurable difference"),
                 "vs_full_ensemble": difference(0.0021 / k, 0.0013, "no measurable difference")}
                for k, share in enumerate((0.33, 0.66), start=1)]}}},
    }


def test_the_variants_table_holds_every_variant_with_its_verdict(tmp_path):
    text = report.markdown(fake_results(), tmp_path / "bench.md")
    for label in variants.VARIANTS.values():
        assert f"| {label} | " in text, label
    assert "| paired swap (train.swap_augment: paired) | 1.0241 | 0.5041 | -0.0028 ± 0.0019 | no measurable " \
           "difference |" in text
    assert "a teacher weaker than the student" in text or "a teacher at least as good as the student" in text
    older = fake_results()
    del older["variants"]
    assert "### Variants" not in report.markdown(older, tmp_path / "bench.md")


def test_the_budgets_compare_swap_tta_orders_and_a_gated_model_with_verdicts(tmp_path):
    text = report.markdown(fake_results(), tmp_path / "bench.md")
    section = text.split("### Where the inference time goes: equal budgets", 1)[1].split("\n## ", 1)[0]
    assert "| 33% (122 rows) | -0.0103 ± 0.0031 | -0.0150 ± 0.0036 | -0.0047 ± 0.0018 | helps |" in section
    assert "| 66% (244 rows) | -0.0082 ± 0.0015 | -0.0024 ± 0.0011 | no measurable difference | +0.0010 ± 0.0013 " \
           "| no measurable difference |" in section
    assert "self-distilled (data.teacher: the default model's own predictions)*: the default model's swap-TTA" in text
    older = fake_results()  # results written before the budgets and the two variants existed
    del older["variants"]["budgets"]
    older["variants"]["variants"] = [r for r in older["variants"]["variants"] if r["id"] not in ("self_distilled",
                                                                                               "middle")]
    text = report.markdown(older, tmp_path / "old.md")
    assert "### Variants" in text and "equal budgets" not in text and "self-distilled" not in text


def family_text(results: dict, folder: Path) -> str:
    text = report.markdown(results, folder / "bench.md")
    return text.split("## 4. The arena family through the CLI", 1)[1].split("\n## ", 1)[0]


def test_the_family_section_shows_every_step_of_both_tasks(tmp_path):
    results = fake_results()
    section = family_text(results, tmp_path)
    for t in results["family"]["tasks"]:
        for step in t["steps"]:
            shown = step["printed"][0].replace("/home/u/arena/", "").replace(f"{results['work_dir']}/", "<work>/")
            assert f"| {t['id']} | {step['step']} | 0 | {step['wall_s']:.1f} | {shown}" in section
    assert "rehearsal passed: <work>/family/wsdm/kernel/submission.csv (32 rows, valid)" in section
    assert "Its report line: `extra data <work>/family/arena/x.parquet (arena-33k): 48 rows in, 46 kept" in section
    assert "`arena predict` wrote `id,winner` (32 rows)" in section and "bench/20261123" not in section
    assert "failed" not in section and "/home/u/arena" not in section
    assert "its probabilities differ from `arena predict`'s by at most 1.7e-07" in section
    results["family"]["tasks"][1]["scores"]["rehearsal"]["max_prob_diff_vs_predict"] = 0.0
    assert "its probabilities are `arena predict`'s exactly" in family_text(results, tmp_path)
    older = fake_results()  # results written before the family stage existed still render
    del older["family"]
    assert "arena family" not in report.markdown(older, tmp_path / "bench.md")


def test_a_failed_family_step_shows_its_error_and_the_steps_it_left_unrun(tmp_path):
    results = fake_results()
    wsdm = results["family"]["tasks"][0]
    wsdm["steps"][4].update(exit=2, printed=["error: two problems", "the second"])
    wsdm["steps"][5].update(exit=None, wall_s=None, printed=["not run: package failed"])
    del wsdm["scores"]["rehearsal"]
    section = family_text(results, tmp_path)
    assert f"| wsdm | package | 2 | {wsdm['steps'][4]['wall_s']:.1f} | error: two problems<br>the second |" in section
    assert "| wsdm | rehearsal | - | - | not run: package failed |" in section
    assert "- `wsdm`: `arena predict` wrote `id,winner` (32 rows); **failed**: `package` (the table" in section


def test_competition_rows_become_arena_conversations_that_data_extra_reads_back(tmp_path):
    df = data.generate_sample(40, seed=2)
    assert df["prompt"].map(len).max() > 1  # multi-turn rows too
    path = tmp_path / "extra.parquet"
    family.arena_33k(df, judge="bench").to_parquet(path, index=False)
    back = data.read_extras([str(path)], THREE_WAY, [])
    assert back["id"].tolist() == df["id"].astype(str).tolist() and back["label"].tolist() == df["label"].tolist()
    for column in data.TEXT_COLUMNS:
        assert back[column].map(list).tolist() == df[column].map(list).tolist(), column
    assert set(pd.read_parquet(path)["winner"]) == {"model_a", "model_b", "tie"}


def test_a_step_keeps_its_result_lines_and_its_error_whole():
    out = "noise\rdata: 8 train rows\nvalidation log loss 0.7\nwarning: x\nerror: first\nsecond problem\n"
    assert family.kept_lines("train", out) == ["data: 8 train rows", "validation log loss 0.7", "error: first",
                                               "second problem"]
    assert family.kept_lines("cv", "OOF by segment (worst first):\nOOF accuracy 0.6\n") == ["OOF accuracy 0.6"]


def test_a_variant_helps_or_hurts_only_beyond_two_standard_errors():
    y = np.tile(np.eye(3), (40, 1))
    default = np.full((120, 3), 1 / 3)
    better = 0.5 * y + 0.5 * default
    assert variants.versus_default(y, default, better)["verdict"] == "helps"
    assert variants.versus_default(y, better, default)["verdict"] == "hurts"
    noisy = default + np.random.default_rng(0).normal(0, 0.01, default.shape)
    assert variants.versus_default(y, default, np.abs(noisy))["verdict"] == "no measurable difference"
    rows = variants.row_log_losses(y, better)
    assert rows.mean() == pytest.approx(metrics.log_loss(y, better))


def test_md_table_formats_numbers_and_escapes_pipes():
    table = text.md_table(["a", "b"], [["x|y", 0.123456], [None, float("nan")]])
    assert table.splitlines() == ["| a | b |", "|---|---|", "| x\\|y | 0.1235 |", "| - | - |"]
    assert text.ranges([9, 10, 11, 14, 16, 17]) == "9-11, 14, 16-17" and text.ranges(None) == "all"


def test_rendering_the_same_results_twice_gives_the_same_markdown(tmp_path):
    results = fake_results()
    (tmp_path / "r.json").write_text(json.dumps(results))
    first = report.render_file(tmp_path / "r.json", tmp_path / "a" / "bench.md").read_bytes()
    second = report.render(json.loads((tmp_path / "r.json").read_text()), tmp_path / "b" / "bench.md").read_bytes()
    assert first == second
    text = first.decode()
    for needle in ("| method | log loss | accuracy", "### Data and split", "**The default model", "Diagnostics",
                   "What limits it", "Sorted dynamic batching vs fixed padding", "at max_length 512",
                   "| max_length | median row (tokens)", "Cost of swap TTA", "Quantization at inference", "| int8 |",
                   "full-size GPU path: not measured", "make bench", "python -m benchmarks --quick --out /tmp/bench.md",
                   "python -m benchmarks.report", "(bench-quality.png)", "(bench-speed.png)", "`bench.json`"):
        assert needle in text, needle
    repeats = [", ".join(f"{t:.1f}" for t in results["speed"][k]["times_s"]) + " s" for k in ("plain", "tta")]
    assert f"| all repeats | {repeats[0]} | {repeats[1]} |  |" in text  # the noise behind the TTA / plain ratio
    for png in ("bench-quality.png", "bench-speed.png"):
        assert (tmp_path / "a" / png).stat().st_size > 5000


def test_the_calibrated_model_is_a_row_of_the_quality_table_when_measured(tmp_path):
    results = fake_results()
    text = report.markdown(results, tmp_path / "bench.md")
    row = next(line for line in text.splitlines() if line.startswith("| default model + swap TTA + calibration |"))
    assert f"{results['quality']['held-out']['all']['model_tta_cal']['log_loss']:.4f}" in row
    assert "fit on the model's own 64 checkpoint-selection rows" in text and "T = 1.370" in text
    older = copy.deepcopy(results)  # results written before the calibrated row existed still render
    del older["model_calibration"], older["fit_seconds"]["model_tta_cal"]
    older["methods"] = [m for m in older["methods"] if m["id"] != "model_tta_cal"]
    for scores in [*older["quality"]["held-out"].values(), older["quality"]["hh_rlhf_harmless"]["all"]]:
        del scores["model_tta_cal"]
    text = report.render(older, tmp_path / "old" / "bench.md").read_text()
    assert "calibration |" not in text.replace("length LR + calibration |", "") and "own 64 checkpoint-selection rows" not in text


def test_the_model_settings_in_the_report_come_from_the_results_config(tmp_path):
    results = fake_results()
    text = report.markdown(results, tmp_path / "bench.md")
    assert "(gemma3_text, 18 layers, 268M parameters), nf4 + LoRA r16 (alpha 32) on q_proj, k_proj, v_proj, o_proj " \
           "of layers 9-17," in text
    assert "prompt.max_length 256, 1 epoch(s) capped at 45 steps, batch 4 x 2" in text
    assert "keeps one fold in 10 of it" in text and "C=1," in text
    changed = copy.deepcopy(results)
    changed["config"]["peft"].update(r=64, layers_to_transform=[4, 5, 6])
    changed["config"]["prompt"]["max_length"] = 777
    changed["config"]["train"].update(epochs=3.0, per_device_batch_size=5, grad_accum=7)
    changed["baselines"]["length_lr"]["C"] = 0.25
    text = report.markdown(changed, tmp_path / "bench.md")
    assert "nf4 + LoRA r64 (alpha 32) on q_proj, k_proj, v_proj, o_proj of layers 4-6," in text
    assert "prompt.max_length 777, 3 epoch(s) capped at 45 steps, batch 5 x 7" in text
    assert "C=0.25," in text and "LoRA r16 (alpha 32) on q_proj, k_proj, v_proj, o_proj" not in text


ORDERED = {"log_loss", "accuracy"}  # compared with each other by the verdict: one factor keeps their order


def _keys(value) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in _keys(v)}
    return {k for v in value for k in _keys(v)} if isinstance(value, list) else set()


def _perturbed(value, salt: str, keys: set[str], path: str = "", key: str = "", in_list: bool = False):
    """Every number in `value` changed by a factor (or, in a list, a shift) of its own, every digit of its text
    shifted (but for names the report looks up), booleans kept: a number that the report prints the same
    whatever the results is typed into it, not read from them."""
    if isinstance(value, dict):
        return {k: _perturbed(v, salt, keys, f"{path}/{k}", k) for k, v in value.items()}
    if isinstance(value, list):  # one shift for a list's numbers: ranges such as layers 9-17 stay ranges
        grown = [f"extra {salt}"] if value and all(isinstance(v, str) for v in value) else []  # counts move too
        return [_perturbed(v, salt, keys, path, key, in_list=True) for v in value] + grown
    seed = zlib.crc32(f"{salt}{key if key in ORDERED else path}".encode())
    if isinstance(value, str):
        shift = 1 + zlib.crc32(salt.encode()) % 9
        return value if value in keys else re.sub(r"\d", lambda m: str((int(m[0]) + shift) % 10), value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    if isinstance(value, int):
        return value + 1 + seed % 50 if in_list else round(value * (1.1 + seed % 1000 / 613)) + 1
    return value * (1.1 + seed % 1000 / 613) + 0.0123


def constant_numbers(results: dict, folder: Path) -> tuple[list[str], list[tuple]]:
    """Numbers printed the same in the report of `results` and of two perturbed copies (in lines that keep their
    shape), and the lines whose shape changed (a sentence picked by a measured value)."""
    keys = _keys(results)
    renders = [report.markdown(r, folder / "bench.md").splitlines()
               for r in (results, _perturbed(results, "a", keys), _perturbed(results, "b", keys))]
    assert len({len(r) for r in renders}) == 1
    constant, reshaped = [], []
    for lines in zip(*renders):
        if lines[0].startswith("#"):
            continue  # section numbers
        tokens = [NUMBER.findall(line) for line in lines]
        if len({len(t) for t in tokens}) > 1:
            reshaped.append(lines)
            continue
        constant += [t[0] for t in zip(*tokens) if len(set(t)) == 1]
    return constant, reshaped


def test_every_number_in_the_report_moves_with_the_results(tmp_path):
    constant, reshaped = constant_numbers(fake_results(), tmp_path)
    assert not reshaped
    # The trained quantization against itself is 1.00x whatever it measured.
    assert constant == ["1.00"], constant


def test_the_report_template_types_no_number():
    """Every string literal of the report's code (format specs aside) is free of digits: numbers come from results."""
    typed = set()
    for module in ("report", "speed_report", "variants_report", "family_report", "text"):
        tree = ast.parse((REPO / "benchmarks" / f"{module}.py").read_text())
        specs = [v.format_spec for v in ast.walk(tree) if isinstance(v, ast.FormattedValue) and v.format_spec]
        skip = {id(n) for spec in specs for n in ast.walk(spec)}
        skip |= {id(n.body[0].value) for n in ast.walk(tree)  # docstrings
                 if isinstance(n, ast.Module | ast.FunctionDef | ast.ClassDef) and isinstance(n.body[0], ast.Expr)}
        typed |= {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
                  and id(n) not in skip and NUMBER.search(n.value)}
    assert typed - {"utf-8"} == {"## 1. Quality on ", "## 2. Speed on this ",
                                 "## 3. The full-size GPU path: not measured by this command",
                                 "## 4. The arena family through the CLI"}


def test_report_refuses_a_file_that_is_not_benchmark_results(tmp_path, capsys):
    (tmp_path / "r.json").write_text(json.dumps({"quality": {}}))
    assert report.main([str(tmp_path / "r.json"), "--out", str(tmp_path / "b.md")]) == 2
    assert "not a benchmarks results file" in capsys.readouterr().err and not (tmp_path / "b.md").exists()


def test_arena_does_not_import_the_benchmarks():
    sources = {p: p.read_text() for p in (REPO / "src" / "arena").rglob("*.py")}
    assert not [p for p, text in sources.items() if re.search(r"^\s*(from|import) benchmarks\b", text, re.M)]


# ---- the command ------------------------------------------------------------------------------------

def test_bench_refuses_to_reuse_a_work_folder(tmp_path, capsys):
    from benchmarks.__main__ import main

    work = tmp_path / "work"
    work.mkdir()
    (work / "results.json").write_text("{}")
    assert main(["--quick", "--work", str(work), "--out", str(tmp_path / "b.md")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (work / "results.json").read_text() == "{}" and sorted(tmp_path.iterdir()) == [work]


def test_a_bad_set_is_refused_before_the_bench_writes_anything(tmp_path, capsys):
    from benchmarks.__main__ import main

    assert main(["--quick", "--work", str(tmp_path / "work"), "--out", str(tmp_path / "b.md"),
                 "--set", "train.epoch=2"]) == 2
    assert "unknown key 'train.epoch'" in capsys.readouterr().err and list(tmp_path.iterdir()) == []


@pytest.mark.e2e
def test_quick_bench_writes_results_and_the_report_rendered_from_them(tiny_model_dir, tmp_path):
    """Every stage of the bench on the tiny random Gemma-2 (`--set model.path`): the embedded model's real path is
    test_e2e's; this is the bench's code, its results and the report rendered from them."""
    from benchmarks.__main__ import main

    out = tmp_path / "docs" / "bench.md"
    work = tmp_path / "work"
    tiny = [f"model.path={tiny_model_dir}", "peft.layers_to_transform=null", "prompt.min_tokens=8"]
    assert main(["--quick", "--out", str(out), "--work", str(work), *(a for o in tiny for a in ("--set", o))]) == 0
    text = out.read_text()
    for needle in ("# Benchmarks", "--quick", "| method | log loss | accuracy", "| uniform | 1.0986",
                   "length LR", "default model + swap TTA", "Sorted dynamic batching vs fixed padding",
                   "Cost of swap TTA", "Quantization at inference", "| nf4 |", "| int8 |", "| none |",
                   "full-size GPU path: not measured", "at max_length 256", "torch ", "transformers ", "peft ",
                   "bitsandbytes "):
        assert needle in text, needle
    for png in ("bench-quality.png", "bench-speed.png"):
        assert (out.parent / png).stat().st_size > 5000
    results = json.loads((work / "results.json").read_text())
    assert (out.parent / "bench.json").read_text() == (work / "results.json").read_text()
    # The resolved config the model trained with, as arena wrote it into the run folder, and in the report.
    from arena.layout import RunFolder

    cfg = results["config"]
    assert cfg == config.load(RunFolder(results["run_dir"]).config).to_dict()
    assert cfg["data"]["train"] == str(work / "train.csv") and cfg["train"]["max_steps"] == 2
    # `arena runs` on the benchmark's runs lists what it changed from configs/default.yaml.
    from arena import tracking

    run = RunFolder(results["run_dir"])
    assert "train.max_steps=2" in tracking.changes(cfg, json.loads(run.recipe.read_text()))
    assert results["plan"]["overrides"][-3:] == tiny and all(f"`{o}`" in text for o in tiny)  # --set, in the report
    assert results["base_model"]["num_hidden_layers"] == 2 and cfg["model"]["path"] == str(tiny_model_dir)
    p, t = cfg["peft"], cfg["train"]
    assert f"LoRA r{p['r']} (alpha {p['alpha']})" in text
    assert f"prompt.max_length {cfg['prompt']['max_length']}" in text
    assert f"batch {t['per_device_batch_size']} x {t['grad_accum']}" in text
    assert results["train_summary"]["train_rows"] == sum(c["train"] for c in results["composition"])
    # Every number on the page moves with results.json (but the trained quantization's 1.00x against itself).
    # (the tiny model's times and padding under 1 print as 0.0 or 0.2 however they are perturbed)
    constant, reshaped = constant_numbers(results, tmp_path)
    assert {c for c in constant if float(c.replace(",", "")) >= 1} <= {"1.00"} and len(reshaped) < 10, (constant, reshaped)
    # Rendered from results.json alone: again, byte for byte.
    again = report.render_file(out.parent / "bench.json", tmp_path / "again" / "bench.md")
    assert again.read_text() == text
    train_df = data.load(work / "train.csv")
    eval_df = data.load(work / "eval.csv")
    assert not set(split.prompt_keys(train_df)) & set(split.prompt_keys(eval_df))
    # The calibrated model's fit saw only the run's checkpoint-selection rows, none of the held-out ones.
    cal = results["model_calibration"]
    assert cal["fitted_on"] == str(RunFolder(results["run_dir"]).val_predictions)
    fitted_ids = set(pd.read_csv(cal["fitted_on"], dtype={"id": str})["id"])
    assert fitted_ids <= set(train_df["id"].astype(str)) and not fitted_ids & set(eval_df["id"].astype(str))
    assert "default model + swap TTA + calibration" in text
    assert isinstance(pd.read_csv(work / "predictions_held-out.csv"), pd.DataFrame)
    # Every variant trained and scored, and the equal budgets computed from the predictions made.
    measured = results["variants"]
    assert [r["id"] for r in measured["variants"]] == list(variants.VARIANTS)
    assert all(r["vs_default"]["verdict"] for r in measured["variants"][1:])
    assert [s["share"] for s in measured["budgets"]["tta_order"]["shares"]] == [0.33, 0.66]
    assert [s["share"] for s in measured["budgets"]["gated"]["shares"]] == [0.33, 0.66]
    assert "### Where the inference time goes: equal budgets" in text
    # The arena family: both tasks through every step of the CLI, at the quick sizes, in the work folder.
    fam = results["family"]
    assert fam["sizes"] == dataclasses.asdict(family.QUICK) and "## 4. The arena family through the CLI" in text
    wsdm, arena = fam["tasks"]
    for t in (wsdm, arena):
        assert [(s["step"], s["exit"]) for s in t["steps"]] == [(step, 0) for step in family.KEPT_LINES], t["steps"]
        assert all(s["wall_s"] > 0 and s["printed"] for s in t["steps"]) and (work / "family" / t["id"]).is_dir()
        assert t["scores"]["rehearsal"]["max_prob_diff_vs_predict"] < 1e-4
    assert wsdm["competition"] == family.WSDM and wsdm["scores"]["predict"]["columns"] == ["id", "winner"]
    assert wsdm["scores"]["metric"] == "accuracy" and "OOF accuracy" in wsdm["steps"][1]["printed"][0]
    assert arena["scores"]["predict"]["columns"] == ["id", *THREE_WAY.label_columns]
    extra = arena["extra"]
    assert extra["rows_in"] == family.QUICK.arena_extra and extra["kept"] + extra["dropped"] == extra["rows_in"]
    assert f"({family.EXTRA_FORMAT.name}): {extra['rows_in']} rows in" in extra["line"]
    extra_ids = set(pd.read_parquet(arena["data"]["extra_file"])["question_id"])
    arena_train = data.load(work / "family" / "arena" / "train.csv")
    arena_ids = set(arena_train["id"])
    assert not set(split.prompt_keys(arena_train)) & set(split.prompt_keys(eval_df))
    assert len(extra_ids) == family.QUICK.arena_extra and not extra_ids & arena_ids
    held_ids = set(eval_df["id"]) | {i for f in work.glob("eval_*.csv") for i in data.load(f)["id"]}
    assert not (extra_ids | arena_ids) & held_ids
    assert set(data.load(work / "family" / "arena" / "test.csv")["id"]) <= set(eval_df["id"])


def test_committed_report_renders_from_its_results(tmp_path):
    results = REPO / "docs" / "benchmarks.json"
    if not results.is_file():
        pytest.skip("docs/benchmarks.json not committed yet: `make bench` writes it with docs/benchmarks.md")
    rendered = report.render_file(results, tmp_path / "benchmarks.md")
    assert rendered.read_text() == (REPO / "docs" / "benchmarks.md").read_text()


@pytest.mark.parametrize("page", ["README.md", "docs/experiments.md"])
def test_readme_benchmark_numbers_come_from_the_committed_report(page):
    # README keeps the quality table; docs/experiments.md the variants and speed ratios of the same run.
    text = (REPO / page).read_text()
    report_text = (REPO / "docs" / "benchmarks.md").read_text()
    section = text.split("## Benchmarks", 1)[1].split("\n## ", 1)[0]
    numbers = re.findall(r"\d+\.\d+", section)
    assert len(numbers) > 10
    missing = [n for n in numbers if n not in report_text]
    assert not missing, f"{page} numbers not in docs/benchmarks.md (rerun make bench, then copy): {missing}"


def test_a_run_that_kept_its_start_is_not_said_to_have_learned(tmp_path):
    """The run's model is its start: per-row differences of float noise, a standard error of 0. The page says the
    model is the start and that fine-tuning did not improve on it, whatever the sign of the noise."""
    results = fake_results()
    q = results["quality"]["held-out"]["all"]
    q["model_tta"]["log_loss"] = q["step0"]["log_loss"] - 1e-12
    results["train_summary"]["start_kept"] = True
    noise = {"mean": -1e-12, "se": 0.0, "verdict": "no measurable difference"}
    results["diagnostics"]["model_vs_step0"].update(plain=noise, tta=noise)
    text = report.render(results, tmp_path / "bench.md").read_text()
    assert "(the start itself)" in text and "Fine-tuning did not improve" in text
    assert "learns something from the text" not in text
    from benchmarks.variants import versus_default

    y = np.eye(3)[[0, 1, 2, 0]]
    same = np.full((4, 3), 1 / 3)
    assert versus_default(y, same, same + 1e-13)["verdict"] == "no measurable difference"
