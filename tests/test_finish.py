"""The finish after a run's last step (train/finish.py): its time is in the budget, so a finish that does not fit
stops the run with a whole checkpoint of its last step and a resume runs only the finish, reusing the evaluation's
logits kept in that checkpoint; a finish cut short (an adapter, no metrics.json) is unfinished everywhere and
`--resume` finishes it; under DDP the processes share the finish's rows."""

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from safetensors.torch import load_file
from transformers import TrainerCallback

from arena import budget, cli, data, predict, tracking, train
from arena.layout import RunFolder
from arena.task import THREE_WAY
from tests.launching import REPO, cfg_json, launch
from tests.tiny import tiny_train_cfg

LABEL_COLUMNS = THREE_WAY.label_columns


class SlowClock(TrainerCallback):
    """The budget's clock: real time plus `step_s` for every optimizer step begun and `eval_s` for every evaluation
    (its on_evaluate runs before the budget's, which so measures it)."""

    def __init__(self, monkeypatch, step_s: float, eval_s: float):
        self.step_s, self.eval_s, self.steps, self.evals = step_s, eval_s, 0, 0
        monkeypatch.setattr(budget, "now", lambda: time.time() + self.step_s * self.steps + self.eval_s * self.evals)

    def on_step_begin(self, args, state, control, **kwargs):
        self.steps += 1

    def on_evaluate(self, args, state, control, **kwargs):
        self.evals += 1


class Steps(TrainerCallback):
    trained = 0

    def on_step_end(self, args, state, control, **kwargs):
        self.trained += 1


@pytest.fixture
def plain_passes(monkeypatch) -> list[bool]:
    """For every predict_frame call of a finish: whether the plain order was given (not predicted again)."""
    seen, real = [], predict.predict_frame
    monkeypatch.setattr(predict, "predict_frame", lambda *a, plain_logits=None, **k: seen.append(
        plain_logits is not None) or real(*a, plain_logits=plain_logits, **k))
    return seen


def test_a_finish_that_does_not_fit_stops_after_the_last_step_and_a_resume_runs_only_the_finish(
        tiny_model_dir, sample_csv, tmp_path, monkeypatch, plain_passes):
    steps = ["train.max_steps=4", "train.eval_steps=2", "train.eval_on_start=false"]
    # 60 s per step, 200 s per evaluation against 760 s: after step 3 the last step, its evaluation and a save end
    # at ~640 s; after step 4's save the finish (the swapped pass, ~200 s, and two saves) would end at ~840 s
    cfg = tiny_train_cfg(tiny_model_dir, sample_csv, tmp_path / "runs", *steps, f"train.max_wall_hours={760 / 3600}")
    with pytest.raises(budget.BudgetStop) as stop:
        train.train(cfg, callbacks=[SlowClock(monkeypatch, 60, 200)])
    monkeypatch.setattr(budget, "now", time.time)
    (run_dir,) = (tmp_path / "runs").iterdir()
    run = RunFolder(run_dir)
    assert stop.value.step == 4 and "training is done, but its finish" in str(stop.value)
    assert not run.adapter.exists() and not run.metrics.exists()
    assert train.last_complete_checkpoint(run) == run.checkpoints / "checkpoint-4"
    assert (run.checkpoints / "checkpoint-4" / train.EvalLogits.FILE).is_file()
    (record,) = budget.recorded_stops(run.root)
    assert record["step"] == record["max_steps"] == 4 and record["checkpoint"] == "checkpoints/checkpoint-4"
    assert record["finish_passes"] == 1 and record["finish_seconds"] >= 200 and record["projected_seconds"] > 760
    assert record["elapsed_seconds"] < 760

    plain_passes.clear()
    steps_trained = Steps()
    train.train(tiny_train_cfg(tiny_model_dir, sample_csv, tmp_path / "runs", *steps), resume=str(run.root),
                callbacks=[steps_trained])
    summary = json.loads(run.metrics.read_text())
    assert steps_trained.trained == 0 and summary["global_step"] == 4
    assert not (run.checkpoints / "checkpoint-5").exists()
    # the plain order is the best evaluation's, read from its checkpoint: only the swapped order was predicted
    assert plain_passes == [True]
    assert summary["val_log_loss"] == pytest.approx(summary["best_eval_log_loss"], abs=1e-5)
    best, saved = load_file(Path(summary["best_checkpoint"]) / "adapter_model.safetensors"), \
        load_file(run.adapter / "adapter_model.safetensors")
    assert best.keys() == saved.keys() and all((best[k] == saved[k]).all() for k in best)


def test_a_finish_cut_short_is_unfinished_and_resume_finishes_it(tiny_model_dir, sample_csv, tmp_path, monkeypatch,
                                                                 capsys):
    cfg = tiny_train_cfg(tiny_model_dir, sample_csv, tmp_path / "runs")

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the session's end, after the adapter was saved

    with monkeypatch.context() as patched:
        patched.setattr(train.finish, "evaluate", killed)
        with pytest.raises(KeyboardInterrupt):
            train.train(cfg)
    (run_dir,) = (tmp_path / "runs").iterdir()
    run = RunFolder(run_dir)
    assert run.adapter.is_dir() and not run.metrics.exists() and not run.is_finished()
    assert tracking.run_row(run, run.root.name)["kind"] == "unfinished"
    assert train.find_resumable(cfg, "latest") == run

    capsys.readouterr()
    assert cli.main(["train", "--resume", str(run.root)]) == 0
    out = capsys.readouterr()
    assert "nothing is left to train" in out.out and "its finish was cut short" in out.err
    assert json.loads(run.metrics.read_text())["global_step"] == 4 and run.is_finished()
    assert not (run.checkpoints / "checkpoint-5").exists()
    assert (run.root / train.resume.CUT_FINISH / "adapter").is_dir()  # what the cut finish left, set aside
    assert tracking.run_row(run, run.root.name)["kind"] == "run"
    with pytest.raises(train.UserError, match="this run finished"):
        train.find_resumable(cfg, str(run.root))


def test_two_processes_share_the_finish_rows(tiny_model_dir, tmp_path):
    csv = tmp_path / "train.csv"
    data.write_csv(data.generate_sample(80, seed=1), csv)
    cfg = cfg_json(tiny_model_dir, csv, tmp_path / "runs", train={"max_steps": 2, "eval_steps": 2})
    proc = launch("tests.finish_probe", cfg, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("FINISH "))[7:])
    run = RunFolder(result["run"])
    val = pd.read_csv(run.val_predictions, dtype={"id": str})
    rank0, rank1 = result["rows"]  # the ids each rank predicted in the finish
    assert rank0 and rank1 and not set(rank0) & set(rank1)
    assert sorted(rank0 + rank1) == sorted(val["id"]) and len(val) == 20
    assert np.isfinite(val[LABEL_COLUMNS].to_numpy()).all() and run.is_finished()
    assert "finish: the 20 validation rows dealt by tokens over 2 processes" in proc.stdout
    assert not list(run.root.glob(".finish-shards-*"))  # the shares' files are gone once merged
