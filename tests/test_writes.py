"""Writes that land whole or not at all: an interrupted file or folder build leaves nothing."""

from pathlib import Path

import pytest

from arena.errors import UserError
from arena.writes import atomic_file, atomic_folder
from tests.files import files_under


def test_an_interrupted_write_leaves_no_file(work):
    target = work / "out" / "sub.csv"
    with pytest.raises(KeyboardInterrupt), atomic_file(target) as tmp:
        tmp.write_text("id,winner_model_a\n1,")
        raise KeyboardInterrupt
    assert files_under(work) == ["out"]



def test_an_interrupted_folder_build_leaves_nothing_and_a_finished_one_lands(work):
    target = work / "bundles" / "b1"
    with pytest.raises(KeyboardInterrupt), atomic_folder(target, "bundle") as staging:
        (staging / "half.txt").write_text("x")
        raise KeyboardInterrupt
    assert files_under(work) == ["bundles"]
    with atomic_folder(target, "bundle") as staging:
        (staging / "done.txt").write_text("x")
    assert (target / "done.txt").read_text() == "x"


def test_a_folder_that_appears_during_a_build_is_not_overwritten(work):
    target = work / "merged"
    with pytest.raises(UserError, match="appeared while it was built"), atomic_folder(target, "merged model") as staging:
        (staging / "model.safetensors").write_text("new")
        target.mkdir()
        (target / "mine.txt").write_text("keep")
    assert files_under(work) == ["merged", "merged/mine.txt"]


def test_no_temporary_file_is_left_by_a_normal_run(tiny_run):
    assert not [p for p in Path(tiny_run).rglob(".*.tmp")]
