"""Results by segment: the tables of a hand-made predictions frame (two and three classes), language pooling, the
length bins, a file from before segment columns or damaged, the CV's OOF file, and `arena runs --segments` on the
real tiny run."""

from __future__ import annotations

import io
import shutil

import numpy as np
import pandas as pd
import pytest

from arena import calibration, cli, data, metrics, segments
from arena.errors import UserError
from arena.layout import CVFolder, RunFolder
from arena.task import THREE_WAY, TWO_WAY
from arena.train import cv as cv_mod


def _frame(task, probs, truth, **columns) -> pd.DataFrame:
    frame = pd.DataFrame({"id": [f"r{i}" for i in range(len(probs))]})
    frame[task.label_columns] = np.asarray(probs, dtype=float)
    frame[task.true_columns] = np.eye(task.classes)[truth]
    return frame.assign(**columns)


def test_three_classes_by_segment_worst_first():
    probs = [[0.8, 0.1, 0.1], [0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.2, 0.6, 0.2], [0.4, 0.3, 0.3], [0.3, 0.3, 0.4]]
    truth = [0, 0, 2, 1, 2, 0]
    frame = _frame(THREE_WAY, probs, truth, language=["en", "en", "en", "fr", "fr", "fr"], turns=[1, 1, 2, 2, 3, 5],
                   length_diff=[0, 10, 20, 30, 40, 50])
    p, y = np.asarray(probs), np.asarray(truth)
    found = segments.tables(frame, min_language_rows=1)
    assert list(found) == ["language", "turns", "length_diff"]
    lang = found["language"].set_index("segment")
    whole = metrics.log_loss(y, p)
    assert list(lang.index) == ["all", "fr", "en"]  # fr loses more: worst first, after the whole set
    assert lang.loc["all", "rows"] == 6 and lang.loc["all", "log loss"] == pytest.approx(whole)
    assert lang.loc["fr", "log loss"] == pytest.approx(metrics.log_loss(y[3:], p[3:]))
    assert lang.loc["fr", "log loss vs all"] == pytest.approx(metrics.log_loss(y[3:], p[3:]) - whole)
    assert lang.loc["en", "accuracy"] == 1.0 and lang.loc["fr", "accuracy"] == pytest.approx(1 / 3)
    assert lang.loc["en", "accuracy vs all"] == pytest.approx(1 - 4 / 6)
    assert set(found["turns"]["segment"]) == {"all", "1", "2", "3+"}
    assert found["turns"].set_index("segment").loc["3+", "rows"] == 2
    assert found["language"]["log loss"].iloc[1:].is_monotonic_decreasing


def test_two_classes_are_ranked_by_accuracy_the_two_way_metric():
    probs = [[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.6, 0.4], [0.55, 0.45], [0.2, 0.8]]
    truth = [0, 0, 1, 1, 1, 0]
    frame = _frame(TWO_WAY, probs, truth, turns=["1", "1", "1", "2", "2", "2"])  # as read from a file: text
    (table,) = segments.tables(frame).values()  # only the kinds whose column is there
    assert list(table["segment"]) == ["all", "2", "1"]
    assert list(table["accuracy"]) == pytest.approx([0.5, 0.0, 1.0])
    assert table["log loss"].iloc[1] == pytest.approx(metrics.log_loss(truth[3:], np.asarray(probs[3:])))


def test_small_languages_are_pooled_as_other_and_missing_ones_are_unknown():
    values = pd.Series(["en"] * 40 + ["zh"] * 30 + ["de"] * 29 + ["fr"] * 3 + ["", None, np.nan, " "])
    pooled = segments.languages(values)
    assert pooled.value_counts().to_dict() == {"en": 40, "zh": 30, "other": 32, "unknown": 4}
    assert segments.languages(pd.Series(["en", "en", "fr"]), min_rows=2).tolist() == ["en", "en", "other"]


def test_length_bins_are_quartiles_named_by_the_characters_they_hold():
    bins = segments.length_bins(pd.Series(range(100)))
    assert bins.value_counts().to_dict() == {"0-24": 25, "25-49": 25, "50-74": 25, "75-99": 25}
    assert bins[24] == "0-24" and bins[25] == "25-49"
    half_equal = segments.length_bins(pd.Series([0] * 50 + list(range(1, 51))))  # quantiles coincide: fewer bins
    assert half_equal.value_counts().to_dict() == {"0-25": 75, "26-50": 25}
    assert set(segments.length_bins(pd.Series([7, 7, 7]))) == {"7"}
    assert segments.length_bins(pd.Series(["12", ""])).tolist()[1] == "unknown"


def test_segment_columns_of_data_rows():
    rows = pd.DataFrame({"prompt": [["q"], ["q1", "q2"], ["a", "b", "c", "d"]],
                         "response_a": [["xxxx"], ["ab", "cd"], ["", "", "", ""]],
                         "response_b": [["x"], ["abcdef", ""], ["z", "", "", ""]],
                         "language": ["English", None, "Chinese"]})
    cols = segments.segment_columns(rows)
    assert cols.to_dict("list") == {"language": ["English", "unknown", "Chinese"], "turns": [1, 2, 4],
                                    "length_diff": [3, 2, 1]}
    assert segments.segment_columns(rows.drop(columns="language"))["language"].tolist() == ["unknown"] * 3


def test_a_file_without_segment_columns_says_it_predates_them(tmp_path):
    frame = _frame(THREE_WAY, [[0.5, 0.3, 0.2]] * 3, [0, 1, 2])
    assert segments.tables(frame) == {}
    assert "predates segment columns" in segments.render(segments.tables(frame))
    folder = RunFolder(tmp_path / "old-run")
    folder.root.mkdir()
    frame.to_csv(folder.val_predictions, index=False)
    text, notes = segments.report([("old-run", folder)])
    assert text == "" and notes == [f"old-run: {segments.predates('val_predictions.csv')}"]


def test_a_damaged_predictions_file_is_named(tmp_path):
    folder = RunFolder(tmp_path / "run")
    folder.root.mkdir()
    frame = _frame(THREE_WAY, [[0.5, 0.3, 0.2]] * 2, [0, 1], turns=[1, 1]).astype(object)
    frame.loc[1, "winner_tie"] = "abc"
    frame.to_csv(folder.val_predictions, index=False)
    with pytest.raises(UserError, match=r"val_predictions.csv: column winner_tie: not a number in 1 row\(s\) "
                                        r"\(ids: r1\)"):
        segments.report([("run", folder)], strict=True)
    text, notes = segments.report([("run", folder)])  # listing every run: named, left out, the others shown
    assert text == "" and "winner_tie" in notes[0] and notes[0].endswith("(left out)")


def test_the_cv_keeps_segment_columns_in_its_oof_file_and_prints_the_tables(tmp_path, capsys):
    cv = CVFolder(tmp_path / "cv")
    cv.root.mkdir()
    folds = []
    for fold in (0, 1):  # as cross_validate reads each fold's val_predictions.csv: text, class columns as numbers
        frame = _frame(THREE_WAY, [[0.6, 0.3, 0.1], [0.2, 0.5, 0.3]], [0, 2], fold=fold, language=["en", "de"],
                       turns=[1, 3], length_diff=[5, 900]).astype(str)
        numbers = [*THREE_WAY.label_columns, *THREE_WAY.true_columns]
        frame[numbers] = frame[numbers].astype(float)
        folds.append(frame)
    cv_mod.write_results(cv, 2, [0, 1], [{"fold": 0}, {"fold": 1}], folds, "log_loss")
    oof = pd.read_csv(cv.oof_predictions)
    assert set(segments.SEGMENT_COLUMNS) <= set(oof.columns) and len(oof) == 4
    said = capsys.readouterr().out
    assert "OOF by segment" in said and "length difference (chars)" in said and "3+" in said


def test_runs_segments_through_a_real_tiny_run(tiny_run, tmp_path, capsys):
    run = RunFolder(tiny_run)
    written = pd.read_csv(run.val_predictions)
    assert set(segments.SEGMENT_COLUMNS) <= set(written.columns)
    assert (written["turns"] >= 1).all() and (written["length_diff"] >= 0).all()
    calibration.read_predictions(run.val_predictions)  # the readers by column name take the extra columns

    runs = tiny_run.parent
    assert cli.main(["runs", "--runs-dir", str(runs), "--segments"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{tiny_run.name}: val_predictions.csv, {len(written)} rows")
    assert "language" in out and "unknown" in out and "turns" in out and "length difference (chars)" in out
    assert cli.main(["runs", "--runs-dir", str(runs), "--segments", tiny_run.name, "--format", "csv"]) == 0
    table = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert list(table.columns) == ["run", "kind", *segments.COLUMNS]
    whole = table[table["segment"] == "all"]
    assert len(whole) == 3 and whole["log loss"].iloc[0] == pytest.approx(
        metrics.log_loss(written[THREE_WAY.true_columns].to_numpy(), written[THREE_WAY.label_columns].to_numpy()))
    assert cli.main(["runs", "--runs-dir", str(runs), "--segments", "--format", "md"]) == 0
    assert "**turns**" in capsys.readouterr().out

    old = RunFolder(tmp_path / "runs" / tiny_run.name)  # the same run as an older arena wrote it
    shutil.copytree(tiny_run, old.root, ignore=shutil.ignore_patterns("checkpoints", "adapter", "predictions"))
    written.drop(columns=segments.SEGMENT_COLUMNS).to_csv(old.val_predictions, index=False)
    assert cli.main(["runs", "--runs-dir", str(old.root.parent), "--segments", tiny_run.name]) == 0
    said = capsys.readouterr()
    assert said.out == "" and "the run predates segment columns" in said.err
    assert cli.main(["runs", "--runs-dir", str(old.root.parent), "--segments", "no-such-run"]) == 2


def test_the_language_of_a_two_way_parquet_file_reaches_the_segment_columns(tmp_path):
    path = tmp_path / "train.parquet"  # the WSDM Cup's form: plain strings, winner, language
    rows = data.generate_sample(12, seed=1, task=TWO_WAY)
    data.write_csv(rows, path)
    cols = segments.segment_columns(data.load(path, task=TWO_WAY))
    assert cols["language"].tolist() == rows["language"].tolist() and set(cols["turns"]) == {1}
