import math
import re

import numpy as np
import pandas as pd
import pytest

from arena import bench, config, data, metrics, predict


def test_split_by_prompt_holds_out_whole_prompts_only():
    df = data.generate_sample(200, seed=3)
    # several rows per prompt, as in PandaLM (~6 response pairs per prompt)
    df["prompt"] = [[f"prompt {i % 30}"] for i in range(len(df))]
    rest, held = bench.split_by_prompt(df, held_out_rows=50, seed=0)
    assert len(rest) + len(held) == len(df)
    assert 50 <= len(held) < 50 + 10
    assert not set(bench.prompt_keys(rest)) & set(bench.prompt_keys(held))
    again_rest, again_held = bench.split_by_prompt(df, held_out_rows=50, seed=0)
    assert again_held["id"].tolist() == held["id"].tolist()


def test_build_split_keeps_side_sources_out_and_drops_prompts_shared_across_files():
    a = data.generate_sample(120, seed=1)
    b = data.generate_sample(60, seed=2)
    b["id"] = [f"b{i}" for i in range(len(b))]
    b["prompt"] = list(a["prompt"].iloc[:60])  # every prompt of b also appears in a
    plan = bench.Plan([bench.SourcePlan("a.csv", held_out=40, train=None),
                       bench.SourcePlan("b.csv", held_out=10, train=30, main_eval=False)],
                      folds=5, max_rows=100, speed_rows=4, repeats=1)
    split = bench.build_split({"a.csv": a, "b.csv": b}, plan, seed=0)
    held = set(bench.prompt_keys(split.main_eval)) | set(bench.prompt_keys(split.side_eval["b"]))
    assert not set(bench.prompt_keys(split.train)) & held
    assert set(split.main_eval["source"]) == {"a"} and list(split.side_eval) == ["b"]
    assert split.dropped_for_leaks > 0
    assert (split.train["source"] == "b").sum() <= 30


def test_length_baseline_beats_uniform_on_a_generated_sample():
    df = data.generate_sample(600, seed=0)
    rest, held = bench.split_by_prompt(df, held_out_rows=200, seed=0)
    lr = bench.fit_length_baseline(rest)
    probs = bench.predict_length_baseline(lr, held)
    assert metrics.log_loss(held["label"].to_numpy(), probs) < math.log(3) - 0.05
    cal_lr, params = bench.fit_calibrated_length_baseline(rest)
    cal = bench.calibrate(bench.predict_length_baseline(cal_lr, held), params)
    np.testing.assert_allclose(cal.sum(axis=1), 1)
    assert metrics.log_loss(held["label"].to_numpy(), cal) < math.log(3) - 0.05


def test_calibration_fixes_an_overconfident_forecast():
    rng = np.random.default_rng(0)
    guess = rng.integers(0, 3, 2000)
    honest = np.full((2000, 3), 0.2)
    honest[np.arange(2000), guess] = 0.6  # right 60% of the time, each other class 20%
    y = np.array([rng.choice(3, p=row) for row in honest])
    overconfident = predict.softmax(3 * np.log(honest))
    params = bench.fit_calibration(overconfident, y)
    assert math.exp(params[0]) == pytest.approx(3, rel=0.05)
    assert metrics.log_loss(y, bench.calibrate(overconfident, params)) < metrics.log_loss(y, overconfident) - 0.1


def test_left_pad_pads_every_row_to_max_length():
    ids, mask = predict.left_pad([[5, 6, 7], [8], []], pad_token_id=0, length=6)
    assert ids.shape == mask.shape == (3, 6)
    assert ids.tolist() == [[0, 0, 0, 5, 6, 7], [0, 0, 0, 0, 0, 8], [0] * 6]
    assert mask.sum(dim=1).tolist() == [3, 1, 0]
    with pytest.raises(ValueError, match="longer than 2"):
        predict.left_pad([[1, 2, 3]], 0, 2)
    assert bench.fixed_batches(5, 2) == [[0, 1], [2, 3], [4]]


def test_fixed_padding_gives_the_logits_of_sorted_batching(tiny_model_dir, tmp_path):
    from arena import model as model_mod

    cfg = config.from_dict({"model": {"path": str(tiny_model_dir), "family": "plain", "quantization": "none",
                                      "length_features": True},
                            "prompt": {"max_length": 96, "min_tokens": 8},
                            "infer": {"max_length": 96, "max_batch_tokens": 384, "max_batch_size": 4}})
    rt = model_mod.runtime_for(cfg)
    model, tokenizer = model_mod.load_base(cfg, rt, bias=[0.0, 0.0, 0.0], num_features=len(data.HEAD_FEATURE_NAMES))
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
    fixed = bench.fixed_padding_logits(model, ids, tokenizer.pad_token_id, 96, 4, "cpu", feats)
    dynamic = predict.logits_for(model, ids, tokenizer.pad_token_id, cfg, "cpu", feats)
    np.testing.assert_allclose(fixed, dynamic, atol=1e-4)
    assert np.abs(fixed).max() > 1e-3


def test_md_table_formats_numbers_and_escapes_pipes():
    table = bench.md_table(["a", "b"], [["x|y", 0.123456], [None, float("nan")]])
    assert table.splitlines() == ["| a | b |", "|---|---|", "| x\\|y | 0.1235 |", "| - | - |"]


def test_bench_refuses_to_reuse_a_work_folder(tmp_path, capsys):
    from arena import cli

    work = tmp_path / "work"
    work.mkdir()
    (work / "results.json").write_text("{}")
    assert cli.main(["bench", "--quick", "--work", str(work), "--out", str(tmp_path / "b.md")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (work / "results.json").read_text() == "{}" and not (tmp_path / "b.md").exists()


@pytest.mark.e2e
def test_quick_bench_writes_the_report_with_its_tables(tmp_path):
    out = tmp_path / "docs" / "bench.md"
    path = bench.run(out=out, quick=True, work_dir=tmp_path / "work")
    assert path == out
    text = out.read_text()
    for needle in ("# Benchmarks", "--quick", "| method | log loss | accuracy", "| uniform | 1.0986",
                   "length LR", "default model + swap TTA", "Sorted dynamic batching vs fixed padding",
                   "Cost of swap TTA", "Quantization at inference", "| nf4 |", "| int8 |", "| none |",
                   "full-size GPU path: not measured", "at max_length 192", "torch ", "transformers ", "peft ", "bitsandbytes "):
        assert needle in text, needle
    for png in ("bench-quality.png", "bench-speed.png"):
        assert (out.parent / png).stat().st_size > 5000
    assert (tmp_path / "work" / "results.json").is_file()
    train_df = data.load(tmp_path / "work" / "train.csv")
    eval_df = data.load(tmp_path / "work" / "eval.csv")
    assert not set(bench.prompt_keys(train_df)) & set(bench.prompt_keys(eval_df))
    assert isinstance(pd.read_csv(tmp_path / "work" / "predictions_held-out.csv"), pd.DataFrame)


def test_readme_benchmark_numbers_come_from_the_committed_report():
    readme = (bench.REPO / "README.md").read_text()
    report = (bench.REPO / "docs" / "benchmarks.md").read_text()
    section = readme.split("## Benchmarks", 1)[1].split("\n## ", 1)[0]
    numbers = re.findall(r"\d+\.\d+", section)
    assert len(numbers) > 10
    missing = [n for n in numbers if n not in report]
    assert not missing, f"README numbers not in docs/benchmarks.md (rerun make bench, then copy): {missing}"
