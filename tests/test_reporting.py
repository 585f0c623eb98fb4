"""train.report_to: checked before any model loads, tensorboard event files in the run folder, wandb offline."""

import importlib.util
import os

import pytest

from arena import cli, config, data, reporting, train
from arena.config import ConfigError
from arena.layout import RunFolder


def test_report_to_is_a_checked_choice_defaulting_to_none():
    assert config.load().train.report_to == "none"
    with pytest.raises(ConfigError, match="train.report_to: 'mlflow' is not one of none, tensorboard, wandb"):
        config.from_dict({}, ["train.report_to=mlflow"])


def test_wandb_not_installed_is_a_config_error_before_any_model_loads(tmp_path, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    monkeypatch.setattr(train.run, "build", lambda *a, **k: pytest.fail("the model was built"))
    csv = tmp_path / "train.csv"
    data.write_csv(data.generate_sample(30, seed=1), csv)
    code = cli.main(["train", "--set", "train.report_to=wandb", "--set", f"data.train={csv}",
                     "--set", f"train.runs_dir={tmp_path / 'runs'}"])
    assert code == 2
    assert "train.report_to: wandb is not installed here: pip install wandb" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_wandb_logs_offline_into_the_run_without_an_api_key(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_DIR", "NETRC"):
        monkeypatch.delenv(var, raising=False)
    run = RunFolder(tmp_path / "run")
    cfg = config.from_dict({}, ["train.report_to=wandb"])
    with reporting.environment(cfg, run):
        assert os.environ["WANDB_MODE"] == "offline" and os.environ["WANDB_DIR"] == str(run.logs)
    assert "WANDB_MODE" not in os.environ and "WANDB_DIR" not in os.environ
    monkeypatch.setenv("WANDB_API_KEY", "k")
    with reporting.environment(cfg, run):
        assert "WANDB_MODE" not in os.environ


def test_tensorboard_writes_event_files_into_the_run(tiny_model_dir, tmp_path):
    if importlib.util.find_spec("tensorboard") is None:
        pytest.skip("tensorboard is not installed in this environment (requirements.txt pins it; CI has it)")
    sample_csv = tmp_path / "train.csv"
    data.write_csv(data.generate_sample(60, seed=2), sample_csv)
    cfg = config.from_dict({
        "name": "tb", "model": {"path": str(tiny_model_dir), "family": "plain", "quantization": "none"},
        "prompt": {"max_length": 96, "min_tokens": 8}, "infer": {"max_length": 96},
        "data": {"train": str(sample_csv), "folds": 3},
        "train": {"runs_dir": str(tmp_path / "runs"), "max_steps": 2, "eval_steps": 2, "logging_steps": 1,
                  "report_to": "tensorboard"},
    })
    run = RunFolder(train.train(cfg))
    assert list(run.logs.glob("events.out.tfevents.*"))
    assert not list(run.checkpoints.rglob("events.out.tfevents.*"))
