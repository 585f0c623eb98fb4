"""`arena runs`, leaderboard scores and `arena sweep`, on runs trained through the CLI at tiny size; a damaged record is
named, not taken for an unfinished run."""

import io
import json
import shutil
import subprocess

import pandas as pd
import pytest
import yaml

from arena import cli, data, sweep, tracking, train
from arena.errors import UserError
from arena.kaggle import leaderboard
from arena.layout import CVFolder, RunFolder
from tests.files import files_under, truncate


@pytest.fixture(scope="module")
def recipe(tiny_model_dir, tmp_path_factory):
    """A recipe file on the tiny model, its runs under its own runs folder."""
    tmp = tmp_path_factory.mktemp("tracking")
    csv = tmp / "train.csv"
    data.write_csv(data.generate_sample(60, seed=4), csv)
    path = tmp / "tiny.yaml"
    path.write_text(yaml.safe_dump({
        "name": "tiny", "model": {"path": str(tiny_model_dir), "family": "plain", "quantization": "none"},
        "prompt": {"max_length": 96, "min_tokens": 8}, "infer": {"max_length": 96, "max_batch_tokens": 512},
        "data": {"train": str(csv), "folds": 3},
        "train": {"runs_dir": str(tmp / "runs"), "max_steps": 2, "eval_steps": 2, "per_device_batch_size": 4,
                  "grad_accum": 1, "learning_rate": 1e-3},
    }))
    return path


@pytest.fixture(scope="module")
def runs_dir(recipe):
    """A run (with an override), a 2-fold CV and a 2-point sweep, all through the CLI."""
    assert cli.main(["train", "--config", str(recipe), "--set", "train.learning_rate=5e-4"]) == 0
    assert cli.main(["cv", "--config", str(recipe), "--folds", "3", "--only", "0,1"]) == 0
    assert cli.main(["sweep", "--config", str(recipe), "--grid", "peft.r=4,8", "--name", "rsweep"]) == 0
    return recipe.parent / "runs"


def _rows(runs_dir, **kwargs):
    return {r["run"]: r for r in tracking.collect(runs_dir, **kwargs)}


def test_runs_lists_every_run_cv_folder_and_sweep_point(runs_dir, capsys):
    rows = _rows(runs_dir)
    folders = sorted(p.name for p in runs_dir.iterdir() if p.is_dir() and p.name != "sweeps")
    assert sorted(r for r in rows if "/" not in r) == folders  # nothing under runs/ is left out
    run = next(r for r in rows.values() if r["kind"] == "run" and r["sweep"] is None and "/" not in r["run"])
    assert run["changes"] == "train.learning_rate=0.0005"
    metrics = json.loads(RunFolder(run["path"]).metrics.read_text())
    assert run["val ll"] == metrics["val_log_loss"] and run["val ll tta"] == metrics["val_log_loss_tta"]
    assert run["steps"] == 2 and run["global batch"] == 4 and run["train rows"] == metrics["train_rows"]
    cv = next(r for r in rows.values() if r["kind"] == "cv 2/3")
    summary = json.loads(CVFolder(cv["path"]).summary.read_text())
    assert cv["val ll tta"] == summary["oof_log_loss"] and cv["changes"] == "" and cv["steps"] == 4
    assert len([r for r in rows if r.startswith(cv["run"] + "/fold")]) == 2
    assert sorted(r["changes"] for r in rows.values() if r["sweep"] == "rsweep") == ["peft.r=4", "peft.r=8"]

    assert cli.main(["runs", "--runs-dir", str(runs_dir), "--format", "csv", "--sort", "val"]) == 0
    table = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert list(table.columns) == tracking.COLUMNS and len(table) == len(rows)
    assert table["val ll tta"].dropna().is_monotonic_increasing
    assert cli.main(["runs", "--runs-dir", str(runs_dir), "--format", "md", "--no-folds"]) == 0
    md = capsys.readouterr().out
    assert md.startswith("| run | kind | base model | changes |") and md.count("\n") == 2 + len(folders)


def test_an_unfinished_run_is_listed_too(runs_dir, tmp_path):
    killed = RunFolder(tmp_path / "runs" / "tiny-20260101-000000")
    killed.root.mkdir(parents=True)
    done = next(p for p in runs_dir.iterdir() if RunFolder(p).metrics.is_file())
    killed.config.write_text(RunFolder(done).config.read_text())
    assert tracking.collect(tmp_path / "runs")[0]["kind"] == "unfinished"


def test_leaderboard_scores_are_kept(runs_dir, capsys):
    name = next(r["run"] for r in tracking.collect(runs_dir) if r["kind"] == "run" and "/" not in r["run"])
    assert cli.main(["runs", "--runs-dir", str(runs_dir), "--lb", name, "0.9312"]) == 0
    assert cli.main(["runs", "--runs-dir", str(runs_dir), "--lb", name, "0.9287"]) == 0
    out = capsys.readouterr().out
    assert "0.9287" in out
    board = json.loads(RunFolder(runs_dir / name).leaderboard.read_text())
    assert [s["score"] for s in board["scores"]] == [0.9312, 0.9287]  # the earlier score survives
    assert _rows(runs_dir)[name]["LB"] == 0.9287
    assert cli.main(["runs", "--runs-dir", str(runs_dir), "--lb", name, "abc"]) == 2
    assert cli.main(["runs", "--runs-dir", str(runs_dir), "--lb", "no-such-run", "0.9"]) == 2
    assert len(json.loads(RunFolder(runs_dir / name).leaderboard.read_text())["scores"]) == 2


def test_fetch_lb_without_credentials_exits_2_before_any_network_call(runs_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "kaggle"))
    for var in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("a subprocess was started"))
    assert cli.main(["runs", "--runs-dir", str(runs_dir), "--fetch-lb"]) == 2
    assert "no Kaggle credentials" in capsys.readouterr().err


def test_fetch_lb_matches_submissions_to_runs_by_the_push_message(runs_dir, monkeypatch, capsys):
    monkeypatch.setenv("KAGGLE_USERNAME", "alice")
    monkeypatch.setenv("KAGGLE_KEY", "k")
    cv = next(r["run"] for r in tracking.collect(runs_dir) if r["kind"].startswith("cv"))
    message = leaderboard.tag_message("first try", cv)
    assert leaderboard.run_in_message(message) == cv
    output = ("Warning: a newer version of kaggle is available\n"
              "ref,fileName,date,description,status,publicScore,privateScore\n"
              f"101,submission.csv,2026-11-20 10:00:00,{message},SubmissionStatus.COMPLETE,0.93411,\n"
              "102,submission.csv,2026-11-21 10:00:00,by hand,SubmissionStatus.COMPLETE,0.95,\n"
              f"103,submission.csv,2026-11-22 10:00:00,{message},SubmissionStatus.PENDING,,\n")
    calls = []

    def fake_kaggle(args, check=True):
        calls.append(args)
        return subprocess.CompletedProcess(args, 0, output)

    monkeypatch.setattr(leaderboard, "run_kaggle", fake_kaggle)
    for _ in range(2):  # fetching again records nothing twice
        assert cli.main(["runs", "--runs-dir", str(runs_dir), "--fetch-lb"]) == 0
    assert calls[0][:3] == ["competitions", "submissions", "llm-classification-finetuning"]  # the default recipe's
    board = json.loads(CVFolder(runs_dir / cv).leaderboard.read_text())
    assert [(s["score"], s["ref"], s["source"]) for s in board["scores"]] == [(0.93411, "101", "kaggle")]
    assert "recorded 0.93411 for " + cv in capsys.readouterr().out


def test_push_tags_the_submission_message_with_the_run():
    assert leaderboard.run_in_message(leaderboard.tag_message("arena submission", "default-20261124-010203")) \
        == "default-20261124-010203"
    assert leaderboard.run_in_message("a message without a tag") is None


def test_sweep_is_resumable_and_does_not_rerun_finished_points(recipe, runs_dir, monkeypatch, capsys):
    monkeypatch.setattr(train, "train", lambda *a, **k: pytest.fail("a finished point was trained again"))
    text = sweep.run_sweep([str(recipe)], ["peft.r=4,8"], name="rsweep")
    out = capsys.readouterr().out
    assert out.count("finished earlier") == 2
    lines = text.splitlines()
    assert len(lines) == 3 and "peft.r=" in lines[1]
    with pytest.raises(UserError, match="a different sweep"):
        sweep.run_sweep([str(recipe)], ["peft.r=4,16"], name="rsweep")


def test_sweep_resumes_a_killed_point_from_its_checkpoint(recipe, tmp_path, monkeypatch):
    """A point whose run stopped after a checkpoint continues that run instead of starting another."""
    runs = tmp_path / "runs"
    calls = []
    real = train.train

    def first_killed(cfg, resume=None, callbacks=(), origin=None):
        calls.append(resume)
        if len(calls) == 1:
            from transformers import TrainerCallback

            class Kill(TrainerCallback):
                def on_save(self, args, state, control, **kwargs):
                    raise KeyboardInterrupt

            return real(cfg, resume, [Kill()], origin)
        return real(cfg, resume, callbacks, origin)

    monkeypatch.setattr(train, "train", first_killed)
    overrides = [f"train.runs_dir={runs}", "train.eval_steps=1"]
    with pytest.raises(KeyboardInterrupt):
        sweep.run_sweep([str(recipe)], ["train.learning_rate=1e-3"], overrides, name="killed")
    sweep.run_sweep([str(recipe)], ["train.learning_rate=1e-3"], overrides, name="killed")
    assert calls[0] is None and calls[1] is not None and calls[1].startswith(str(runs / "killed-p0-"))
    assert [r["kind"] for r in tracking.sweep_rows(runs, "killed")] == ["run"]


def test_sweep_reports_every_bad_point_before_training(recipe, monkeypatch, capsys):
    monkeypatch.setattr(train, "train", lambda *a, **k: pytest.fail("trained despite a bad point"))
    assert cli.main(["sweep", "--config", str(recipe), "--grid", "peft.r=8,0", "--grid", "peft.dropout=0.1,2"]) == 2
    err = capsys.readouterr().err
    assert "point 1 (peft.r=8 peft.dropout=2)" in err and "point 2 (peft.r=0 peft.dropout=0.1)" in err
    assert cli.main(["sweep", "--config", str(recipe), "--grid", "peft.r"]) == 2
    assert "expected key=value1,value2" in capsys.readouterr().err


def test_a_grid_value_given_twice_is_refused_before_training(recipe, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(train, "train", lambda *a, **k: pytest.fail("trained a point twice"))
    runs = tmp_path / "runs"
    assert cli.main(["sweep", "--config", str(recipe), "--grid", "train.learning_rate=1e-4,2e-4,0.0001",
                     "--set", f"train.runs_dir={runs}"]) == 2
    err = capsys.readouterr().err
    assert "point 2 (train.learning_rate=0.0001) is point 0 (train.learning_rate=1e-4) again" in err
    assert not runs.exists()


def test_a_cv_sweep_point_is_a_tagged_cv_folder_and_is_not_rerun(recipe, tmp_path, monkeypatch, capsys):
    runs = tmp_path / "runs"
    args = [[str(recipe)], ["train.learning_rate=5e-4"], [f"train.runs_dir={runs}"]]
    sweep.run_sweep(*args, cv=3, only=[0], name="cvs")
    [row] = tracking.sweep_rows(runs, "cvs")
    assert row["kind"] == "cv 1/3" and row["changes"] == "train.learning_rate=0.0005"
    monkeypatch.setattr(train, "cross_validate", lambda *a, **k: pytest.fail("a finished CV point ran again"))
    sweep.run_sweep(*args, cv=3, only=[0], name="cvs")
    assert "finished earlier" in capsys.readouterr().out
    with pytest.raises(UserError, match="give --cv too"):
        sweep.run_sweep(*args, only=[0], name="cvs2")


def test_runs_names_a_damaged_metrics_json_instead_of_calling_the_run_unfinished(work, tiny_run, capsys):
    run = RunFolder(work / "runs" / "tiny-1")
    shutil.copytree(tiny_run, run.root, ignore=shutil.ignore_patterns("checkpoints"))
    truncate(run.metrics)
    before = files_under(work)
    assert cli.main(["runs", "--runs-dir", str(work / "runs")]) == 0
    out, err = capsys.readouterr()
    assert "tiny-1" in out and "damaged" in out and "unfinished" not in out
    assert f"warning: {run.metrics}: damaged, left out of the table (not valid JSON (JSONDecodeError" in err
    assert files_under(work) == before
