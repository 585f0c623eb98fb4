"""`arena cv`: each fold once, nothing left behind by a refused CV, and `--resume` finishing a killed one."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from transformers import TrainerCallback

from arena import cli, data, train
from arena.errors import UserError
from arena.layout import CVFolder
from arena.task import THREE_WAY
from arena.train import cv as cv_mod
from tests.tiny import tiny_cfg


def _cfg(model_dir, csv, runs):
    return tiny_cfg(model_dir, prompt={"max_length": 96, "min_tokens": 8}, infer={"max_length": 96},
                    data={"train": str(csv), "folds": 3},
                    train={"runs_dir": str(runs), "max_steps": 2, "eval_steps": 2, "per_device_batch_size": 4,
                           "grad_accum": 1})


def test_a_fold_listed_twice_is_refused_before_any_work(tiny_model_dir, sample_csv, tmp_path):
    cfg = _cfg(tiny_model_dir, sample_csv, tmp_path / "runs")
    with pytest.raises(UserError, match=r"--only: fold\(s\) \[0\] listed more than once"):
        train.cross_validate(cfg, folds=3, only=[0, 0])
    assert not (tmp_path / "runs").exists()


def test_a_refused_cv_leaves_no_cv_folder(tiny_model_dir, sample_csv, tmp_path, capsys):
    runs = tmp_path / "runs"
    argv = ["cv", "--folds", "3", "--set", f"model.path={tiny_model_dir}", "--set", "model.family=plain",
            "--set", f"data.train={sample_csv}", "--set", f"train.runs_dir={runs}", "--set", "prompt.max_length=96",
            "--set", "prompt.min_tokens=8", "--set", "infer.max_length=96", "--set", "peft.target_modules=[no_such_proj]"]
    assert cli.main(argv) == 2
    assert "no_such_proj" in capsys.readouterr().err
    assert not runs.exists() or list(runs.iterdir()) == []


class KillAfterCheckpoint(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        raise KeyboardInterrupt


def test_a_killed_cv_is_finished_by_resume(tiny_model_dir, sample_csv, tmp_path, monkeypatch, capsys):
    runs = tmp_path / "runs #1: a folder name that is a YAML comment as a --set value"
    cfg = _cfg(tiny_model_dir, sample_csv, runs)
    real_train = cv_mod.train

    def killed_in_fold_1(fold_cfg, **kwargs):  # the process is killed during fold 1, after its first checkpoint
        extra = [KillAfterCheckpoint()] if fold_cfg.data.fold == 1 else []
        return real_train(fold_cfg, callbacks=extra, **kwargs)

    monkeypatch.setattr(cv_mod, "train", killed_in_fold_1)
    with pytest.raises(KeyboardInterrupt):
        train.cross_validate(cfg, folds=3)
    monkeypatch.setattr(cv_mod, "train", real_train)
    (folder,) = runs.iterdir()
    cv = CVFolder(folder)
    assert not cv.summary.exists()
    with pytest.raises(UserError, match="--folds 4: the CV .* has 3 folds"):
        train.cross_validate(cfg, folds=4, resume="latest")
    assert train.cross_validate(cfg, folds=None, resume="latest") == folder
    said = capsys.readouterr().out
    assert "fold 0: finished before, kept" in said and "resuming " in said
    result = json.loads(cv.summary.read_text())
    assert [r["fold"] for r in result["per_fold"]] == [0, 1, 2]
    assert sorted(p.name.split("-")[0] for p in folder.glob("fold*")) == ["fold0", "fold1", "fold2"]
    assert list(tmp_path.iterdir()) == [runs]  # every fold run inside the CV folder
    oof = pd.read_csv(cv.oof_predictions, dtype={"id": str})
    assert oof["id"].is_unique and set(oof["id"]) == set(data.training_data(cfg.data, THREE_WAY)["id"])
    with pytest.raises(UserError, match="this CV finished"):
        train.cross_validate(cfg, folds=None, resume=str(folder))
