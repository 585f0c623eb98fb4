"""benchmarks/probe.py: linear probes of the base model's hidden states against the length regression."""

import json

import pytest
from benchmarks import probe


def test_the_probe_scores_each_kind_against_the_start_and_keeps_the_states(tiny_model_dir, tmp_path, capsys):
    work = tmp_path / "probe"
    args = ["--work", str(work), "--quick", "--set", f"model.path={tiny_model_dir}", "--set", "model.family=plain",
            "--set", "peft.layers_to_transform=null"]
    assert probe.main(args) == 0
    result = json.loads((work / "probe.json").read_text())
    assert [(p["kind"], p["components"]) for p in result["probes"]] == [("state", 2), ("difference", 2)]
    for p in result["probes"]:
        for order in ("plain", "tta"):
            assert p[order]["log_loss"] - result["start"][order] == \
                pytest.approx(p[order]["versus_start"]["mean"], abs=1e-9)
    out = capsys.readouterr().out
    assert "| difference | 2 |" in out and f"on {result['rows']['held_out']} held-out rows" in out
    stamp = (work / "states.npz").stat().st_mtime_ns
    assert probe.main(args) == 0  # the states are read back, not computed again
    assert (work / "states.npz").stat().st_mtime_ns == stamp
    (work / "eval.csv").write_text((work / "eval.csv").read_text()[:-200])  # not the split this plan makes
    with pytest.raises(SystemExit, match="holds another split \\(eval.csv differ\\)"):
        probe.main(args)


def test_a_real_data_measurement_without_the_shared_files_stops_and_says_where_it_looked(tmp_path, monkeypatch):
    """benchmarks.tta_order, head_lr and probe speak of human labels: without ../shared/data they stop before any
    model loads, where `make bench` would measure a generated sample and say so."""
    from benchmarks import head_lr, measure, tta_order

    monkeypatch.setattr(measure, "shared_data_dir", lambda: None)
    for run in (lambda: tta_order.main(["--work", str(tmp_path / "tta")]),
                lambda: head_lr.main(["--work", str(tmp_path / "head-lr")]),
                lambda: probe.main(["--work", str(tmp_path / "probe")])):
        with pytest.raises(SystemExit, match=r"no \.\./shared/data beside the repository .* needs the human-labelled"):
            run()
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_the_split_with_every_row_keeps_the_held_out_rows_and_trains_on_all_the_rest(shared_data, tmp_path, capsys):
    """`python -m benchmarks.split_config --work DIR [--all-rows]`: the benchmark's held-out rows either way; with
    --all-rows every arena-like row outside their prompts trains, uncapped; DIR/recipe.yaml trains on it."""
    from benchmarks import split_config
    from benchmarks.plan import FULL
    from benchmarks.split import prompt_keys

    from arena import config, data

    assert split_config.main(["--work", str(tmp_path / "bench")]) == 0
    assert "data.max_rows=360" in capsys.readouterr().out
    assert split_config.main(["--work", str(tmp_path / "all"), "--all-rows"]) == 0
    recipe = tmp_path / "all" / "recipe.yaml"
    assert f"arena train --config {recipe} --set name=NAME" in capsys.readouterr().out
    cfg = config.load(recipe)
    assert cfg.data.train == str(tmp_path / "all" / "train.csv") and cfg.data.max_rows is None
    assert cfg.train.runs_dir == str(tmp_path / "all" / "runs") and cfg.data.folds == FULL.folds
    assert (tmp_path / "all" / "eval.csv").read_bytes() == (tmp_path / "bench" / "eval.csv").read_bytes()
    bench, every = (data.load(tmp_path / d / "train.csv") for d in ("bench", "all"))
    held = set(prompt_keys(data.load(tmp_path / "all" / "eval.csv")))
    assert len(every) > len(bench) and not set(prompt_keys(every)) & held
    side = next(s for s in FULL.sources if not s.main_eval)  # a side source keeps the plan's sample
    assert (every["source"] == side.file.removesuffix(".csv")).sum() == side.train
