"""Leaderboard scores as Kaggle reports them and as leaderboard.json keeps them: taken at their word only when
they are numbers, and a damaged record named instead of crashing `arena runs`."""

from __future__ import annotations

import json
import shutil

import pytest

from arena import cli, tracking
from arena.kaggle import leaderboard
from arena.layout import RunFolder
from tests.fake_kaggle import fake_kaggle_fixture  # noqa: F401


@pytest.fixture
def two_runs(tiny_run, tmp_path):
    runs = tmp_path / "runs"
    for name in ("first-20260101-000000", "second-20260101-000000"):
        shutil.copytree(tiny_run, runs / name)
    return runs


def test_a_nan_score_is_recorded_as_an_error_naming_it_and_the_other_runs_get_theirs(fake_kaggle, two_runs,
                                                                                     capsys):
    first = fake_kaggle.add_submission(leaderboard.tag_message("try", "first-20260101-000000"))
    second = fake_kaggle.add_submission(leaderboard.tag_message("try", "second-20260101-000000"))
    fake_kaggle.score_submission(first.ref, public="nan")
    fake_kaggle.score_submission(second.ref, public="0.95110", private="0.94020")
    assert cli.main(["runs", "--runs-dir", str(two_runs), "--fetch-lb"]) == 0
    out = capsys.readouterr().out
    assert f"recorded ERROR for first-20260101-000000 (submission {first.ref}" in out and "nan" in out
    assert "recorded 0.94020 for second-20260101-000000" in out
    [errored] = json.loads(RunFolder(two_runs / "first-20260101-000000").leaderboard.read_text())["scores"]
    assert errored["score"] is None and errored["status"] == "error"


@pytest.mark.parametrize("content", ['{"scores": "abc"}', '{"scores": [1, 2]}', '{"scores": [{"score": "x"}]}',
                                     '{"scores": [{"score": NaN}]}', '[]', '{"scores": [{"score'])
def test_a_damaged_leaderboard_json_is_named_and_the_table_still_prints(two_runs, content, capsys):
    damaged = RunFolder(two_runs / "first-20260101-000000")
    damaged.leaderboard.write_text(content)
    assert cli.main(["runs", "--runs-dir", str(two_runs)]) == 0
    said = capsys.readouterr()
    assert f"{damaged.leaderboard}: damaged" in said.err and "second-20260101-000000" in said.out
    with pytest.raises(Exception, match="not a leaderboard record"):
        tracking.record_score(damaged, 0.9)
