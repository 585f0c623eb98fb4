"""benchmarks/versus_start.py: a trained run against its own start on labelled rows."""

import json

import pandas as pd
import pytest
from benchmarks import versus_start

from arena import config, data
from arena.layout import RunFolder


def test_the_start_is_the_runs_own_step_0_and_the_difference_has_a_verdict(tiny_run, tmp_path):
    run = RunFolder(tiny_run)
    metrics = json.loads(run.metrics.read_text())
    cfg_train = data.load(config.load_run(run).data.train)
    val_ids = set(pd.read_csv(run.val_predictions, dtype={"id": str})["id"])
    val = tmp_path / "val.csv"
    data.write_csv(cfg_train[cfg_train["id"].astype(str).isin(val_ids)], val)
    result = versus_start.measure(tiny_run, val)
    assert result["rows"] == len(val_ids) == metrics["val_rows"]
    # the start rebuilt from the run's training rows scores what the Trainer's step-0 evaluation scored
    assert result["plain"]["start_log_loss"] == pytest.approx(metrics["start_eval_log_loss"], abs=1e-3)
    for order in ("plain", "tta"):
        assert set(result[order]["versus_start"]) == {"mean", "se", "verdict"}
        assert result[order]["log_loss"] - result[order]["start_log_loss"] == pytest.approx(
            result[order]["versus_start"]["mean"], abs=1e-9)


def test_the_command_prints_both_orders_and_writes_nothing_into_the_run(tiny_run, tmp_path, capsys):
    held_out = tmp_path / "held-out.csv"
    data.write_csv(data.generate_sample(12, seed=11), held_out)
    before = sorted(p.name for p in RunFolder(tiny_run).root.rglob("*"))
    assert versus_start.main(["--run", str(tiny_run), "--data", str(held_out), "--out", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "plain: run " in out and "tta: run " in out and "over 12 rows" in out
    assert json.loads((tmp_path / "r.json").read_text())["rows"] == 12
    assert sorted(p.name for p in RunFolder(tiny_run).root.rglob("*")) == before
