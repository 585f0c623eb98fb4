"""End-to-end on the real path at small size: the embedded Gemma-3 270M (nf4 + LoRA) on real human data."""

import json

import pandas as pd
import pytest

from arena import data
from arena.cli import main

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def embedded_run(shared_data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    small = tmp / "pandalm_small.csv"
    data.write_csv(data.load(shared_data / "pandalm_human.csv").head(120), small)
    code = main(["train", "--set", f"data.train={small}", "--set", f"train.runs_dir={tmp / 'runs'}",
                 "--set", "train.max_steps=4", "--set", "train.eval_steps=2", "--set", "train.max_eval_rows=16",
                 "--set", "prompt.max_length=128", "--set", "infer.max_length=128"])
    assert code == 0
    (run_dir,) = (tmp / "runs").iterdir()
    return run_dir


def test_arena_train_on_real_data_with_the_embedded_model(embedded_run, capsys):
    m = json.loads((embedded_run / "metrics.json").read_text())
    assert m["global_step"] == 4 and m["val_rows"] == 16
    assert m["device"] == "cpu"
    for key in ("val_log_loss", "val_log_loss_tta", "prior_log_loss", "train_wall_seconds"):
        assert m[key] > 0
    # a prior-initialised head cannot start worse than uniform, and 4 small steps cannot wreck it
    assert m["val_log_loss"] < 1.25
    assert (embedded_run / "loss_curve.png").stat().st_size > 1000


def test_predict_with_tta_then_score(embedded_run, shared_data, tmp_path, capsys):
    full = pd.read_csv(shared_data / "autoj_pairwise_dev.csv", dtype=str, keep_default_na=False).head(12)
    test_csv = tmp_path / "test.csv"
    full[["id", "prompt", "response_a", "response_b"]].to_csv(test_csv, index=False)
    truth = tmp_path / "truth.csv"
    full.to_csv(truth, index=False)
    sub = tmp_path / "submission.csv"
    assert main(["predict", "--run", str(embedded_run), "--data", str(test_csv), "--out", str(sub), "--tta"]) == 0
    assert pd.read_csv(sub, dtype={"id": str})["id"].tolist() == full["id"].tolist()
    capsys.readouterr()
    assert main(["score", "--pred", str(sub), "--truth", str(truth)]) == 0
    assert "log_loss" in capsys.readouterr().out
