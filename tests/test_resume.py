"""`arena train --resume`: it states what it continues and refuses what it cannot honour (a --set or recipe value
the run was not trained with, an edited recipe, a changed training file) unless --accept-changes; 'latest' takes
only runs of exactly this config name; a checkpoint cut short is set aside and the run resumes from the last whole
one."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml
from transformers import TrainerCallback

from arena import cli, config, data, train
from arena.layout import RunFolder
from tests.files import truncate
from tests.tiny import StopAfterCheckpoint, tiny_train_cfg


class KillAfterCheckpoint(TrainerCallback):
    """Kills the run after its first trained step's checkpoint (after the start's checkpoint-0, which holds no
    optimizer, scheduler or RNG state yet)."""

    def on_save(self, args, state, control, **kwargs):
        if state.global_step > 0:
            raise KeyboardInterrupt


@pytest.fixture
def killed(tiny_model_dir, tmp_path):
    """(recipe file, training CSV, a run of it killed after its first checkpoint, as `arena train` leaves it)."""
    csv = tmp_path / "train.csv"
    data.write_csv(data.generate_sample(60, seed=1), csv)
    recipe = tmp_path / "exp.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "exp", "model": {"path": str(tiny_model_dir), "family": "plain"},
        "prompt": {"max_length": 96, "min_tokens": 8}, "infer": {"max_length": 96},
        "data": {"train": str(csv), "folds": 3},
        "train": {"runs_dir": str(tmp_path / "runs"), "max_steps": 4, "eval_steps": 2, "per_device_batch_size": 4,
                  "grad_accum": 1}}))
    with pytest.raises(KeyboardInterrupt):
        train.train(config.load(recipe), callbacks=[KillAfterCheckpoint()], origin=config.origin(recipe, []))
    (run,) = (tmp_path / "runs").iterdir()
    return recipe, csv, run


def _resume(run, *args) -> int:
    return cli.main(["train", "--resume", str(run), *args])


def test_a_set_the_run_was_not_trained_with_is_refused_naming_it(killed, capsys):
    recipe, _, run = killed
    assert _resume(run, "--config", str(recipe), "--set", "peft.r=4", "--set", "train.max_steps=4") == 2
    err = capsys.readouterr().err
    assert "--set peft.r=4, but the run has peft.r=16" in err and "max_steps" not in err.split("--accept")[0]
    assert not RunFolder(run).metrics.exists()


def test_a_recipe_edited_since_the_run_started_is_refused(killed, capsys):
    recipe, _, run = killed
    values = yaml.safe_load(recipe.read_text())
    values["train"]["learning_rate"] = 1e-5
    recipe.write_text(yaml.safe_dump(values))
    assert _resume(run) == 2
    assert f"its recipe {recipe} changed since the run started (train.learning_rate)" in capsys.readouterr().err
    assert _resume(run, "--config", str(recipe)) == 2
    assert "the recipe asks train.learning_rate=1e-05, but the run has train.learning_rate=0.0002" in \
        capsys.readouterr().err


def test_a_changed_training_file_is_refused_unless_accepted(killed, capsys):
    recipe, csv, run = killed
    frame = data.load(csv)
    data.write_csv(frame.iloc[::-1].reset_index(drop=True), csv.with_name("reordered.csv"))
    shutil.move(csv.with_name("reordered.csv"), csv)
    assert _resume(run) == 2
    assert f"data.train: {csv} is not the content the run started with" in capsys.readouterr().err
    truncate(RunFolder(run).data_hashes)  # what the data was can no longer be compared: refused as well
    assert _resume(run) == 2
    assert f"{RunFolder(run).data_hashes}: not valid JSON" in capsys.readouterr().err
    assert _resume(run, "--accept-changes") == 0
    said = capsys.readouterr()
    assert "--accept-changes: continuing" in said.err and json.loads(RunFolder(run).metrics.read_text())["global_step"] == 4


def test_resume_latest_takes_only_runs_of_exactly_this_name(killed, tmp_path):
    recipe, _, run = killed
    shutil.copytree(run, run.with_name(run.name.replace("exp-", "exp-big-")))
    shutil.rmtree(run)
    cfg = config.load(recipe)
    with pytest.raises(train.UserError, match="no unfinished run of 'exp'"):
        train.find_resumable(cfg, "latest")


def test_a_checkpoint_cut_short_is_skipped_on_resume(tiny_model_dir, sample_csv, tmp_path, capsys):
    # Without the start's checkpoint-0, which the rotation would keep in place of checkpoint-2 when it is the best.
    cfg = tiny_train_cfg(tiny_model_dir, sample_csv, tmp_path / "runs", "train.max_steps=6", "train.eval_on_start=false")
    with pytest.raises(KeyboardInterrupt):
        train.train(cfg, callbacks=[StopAfterCheckpoint(4)])
    (run_dir,) = (tmp_path / "runs").iterdir()
    run = RunFolder(run_dir)
    truncate(run.checkpoints / "checkpoint-4" / "trainer_state.json")  # killed while saving it
    assert train.find_resumable(cfg, "latest") == run
    capsys.readouterr()
    first_step = FirstStep()
    train.train(cfg, resume="latest", callbacks=[first_step])
    assert "checkpoint-4 is incomplete" in capsys.readouterr().err
    assert (run.checkpoints / "incomplete-checkpoint-4").is_dir()
    assert first_step.step == 2  # resumed from checkpoint-2, the last whole one
    assert json.loads(run.metrics.read_text())["global_step"] == 6


class FirstStep(TrainerCallback):
    step = None

    def on_step_begin(self, args, state, control, **kwargs):
        if self.step is None:
            self.step = state.global_step


def test_data_that_moved_is_honoured_when_its_content_is_the_same(killed, tmp_path, capsys):
    """A training kernel's next version mounts the data anew: the path given is used, the content checked."""
    recipe, csv, run = killed
    moved = shutil.move(csv, tmp_path / "mounted-again.csv")  # the path the run started with is gone
    assert _resume(run, "--config", str(recipe), "--set", f"data.train={moved}", "--set",
                   "kaggle.session_hours=3") == 0
    assert json.loads(RunFolder(run).metrics.read_text())["global_step"] == 4


HOLDER = """
import sys
from transformers import TrainerCallback
from arena import cli
from arena.train import run as run_mod

class Wait(TrainerCallback):
    def on_train_begin(self, args, state, control, **kwargs):
        print("training", flush=True)
        sys.stdin.read()  # until the test kills this process

callbacks = run_mod.run_callbacks
run_mod.run_callbacks = lambda *a: [*callbacks(*a), Wait()]
sys.exit(cli.main(["train", "--resume", sys.argv[1]]))
"""


def test_a_run_folder_is_trained_by_one_process_at_a_time(killed, capsys):
    """Two `--resume` of one killed run at once: the second is refused naming the first (pid, host, since when),
    before it touches the folder; once the first is killed, its hold is gone and the run resumes."""
    import os
    import signal
    import socket
    import subprocess
    import sys

    _, _, run = killed
    first = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert "training\n" in iter(first.stdout.readline, "")  # the first resume holds the run and trains
        before = sorted((p.name, p.stat().st_mtime_ns) for p in run.rglob("*") if p.name != ".arena-lock")
        capsys.readouterr()
        assert _resume(run) == 2
        err = capsys.readouterr().err
        assert f"{run}: in use by process {first.pid} on {socket.gethostname()}, since " in err and "Traceback" not in err
        assert sorted((p.name, p.stat().st_mtime_ns) for p in run.rglob("*") if p.name != ".arena-lock") == before
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    assert _resume(run) == 0  # a killed holder leaves no hold behind
    assert json.loads(RunFolder(run).metrics.read_text())["global_step"] == 4


class RunsCode:
    """A pickle that runs a command when loaded without weights_only."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def test_a_checkpoint_pickle_that_asks_for_code_is_named_before_the_model_loads(killed, tmp_path, capsys):
    """optimizer.pt, scheduler.pt, rng_state.pth: each is loaded weights-only before the model loads; one that asks
    for code is refused naming the file, never suggesting the unsafe load, and nothing runs or changes."""
    import torch

    _, _, run = killed
    checkpoint = RunFolder(run).checkpoints / "checkpoint-2"
    marker = tmp_path / "ran"
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth"):
        original = (checkpoint / name).read_bytes()
        torch.save({"state": RunsCode(marker)}, checkpoint / name)
        before = sorted((str(p), p.stat().st_mtime_ns) for p in run.rglob("*") if p.name != ".arena-lock")
        capsys.readouterr()
        assert _resume(run) == 2
        out, err = capsys.readouterr()
        assert f"{checkpoint / name}: not only weights: it asks to run posix.system when loaded" in err, err
        assert "weights_only" not in err and "Traceback" not in err and "resuming" not in out  # no model loaded
        assert not marker.exists()
        assert sorted((str(p), p.stat().st_mtime_ns) for p in run.rglob("*") if p.name != ".arena-lock") == before
        (checkpoint / name).write_bytes(original)
