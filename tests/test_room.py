"""The room a run needs on its disk: checked before the model loads, and named when the disk fills later."""

import json
from pathlib import Path

import pytest
from transformers import TrainerCallback

from arena import train
from arena.errors import UserError
from arena.layout import RunFolder
from tests.tiny import tiny_train_cfg


def test_a_full_disk_is_an_error_before_the_model_loads(tiny_model_dir, sample_csv, tmp_path, monkeypatch):
    from arena import model, room

    def no_load(*args, **kwargs):
        raise AssertionError("the model loaded before the room check")

    monkeypatch.setattr(room, "free_bytes", lambda path: 10 * 2**20)
    monkeypatch.setattr(model, "load_base", no_load)
    cfg = tiny_train_cfg(tiny_model_dir, sample_csv, tmp_path / "runs")
    with pytest.raises(train.UserError, match="10 MiB free on its disk; this run needs about"):
        train.train(cfg)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


class FillDiskAfterFirstSave(TrainerCallback):
    """Something else fills the disk once training is under way (the room check passed, a checkpoint is saved)."""

    def __init__(self, disk: Path):
        self.filler = disk / "filler.bin"

    def on_save(self, args, state, control, **kwargs):
        if state.global_step and not self.filler.exists():  # after a trained step's save, not the start's
            with open(self.filler, "wb") as out:
                try:
                    while True:
                        out.write(b"\0" * 2**20)
                        out.flush()
                except OSError:
                    pass


def test_a_disk_that_fills_during_a_save_says_so_and_resume_recovers(tiny_model_dir, sample_csv, small_disk, capsys):
    runs = small_disk / "runs"
    cfg = tiny_train_cfg(tiny_model_dir, sample_csv, runs, "train.max_steps=4")
    with pytest.raises(UserError) as info:
        train.train(cfg, callbacks=[FillDiskAfterFirstSave(small_disk)])
    message = str(info.value)
    assert "no space left on device while writing a checkpoint" in message, message
    assert "free some room, then `arena train --resume`" in message
    (small_disk / "filler.bin").unlink()
    (run_dir,) = runs.iterdir()
    capsys.readouterr()
    assert train.train(cfg, resume="latest") == run_dir
    assert "from " + str(run_dir / "checkpoints" / "checkpoint-2") in capsys.readouterr().out
    assert json.loads(RunFolder(run_dir).metrics.read_text())["global_step"] == 4
