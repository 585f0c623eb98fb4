"""The WSDM Cup's two-way task end to end on CPU: its parquet files as they come, a two-class head, `id,winner`
submissions, accuracy as the metric; and the refusals that belong to a task without ties."""

import json

import numpy as np
import pandas as pd
import pytest

from arena import cli, data
from arena.layout import RunFolder
from arena.task import THREE_WAY, TWO_WAY

WSDM = "kaggle.competition=wsdm-cup-multilingual-chatbot-arena"


def tiny_args(model_dir, train, runs) -> list[str]:
    sets = [f"model.path={model_dir}", "model.family=plain", f"data.train={train}", f"train.runs_dir={runs}",
            "prompt.max_length=96", "prompt.min_tokens=8", "infer.max_length=96", "train.max_steps=4",
            "train.eval_steps=2", "train.per_device_batch_size=4", "train.grad_accum=1", "train.learning_rate=1e-3",
            "data.folds=4", "peft.layers_to_transform=null", WSDM]
    return [arg for s in sets for arg in ("--set", s)]


@pytest.fixture(scope="module")
def wsdm_files(tmp_path_factory):
    """train.parquet and test.parquet in the WSDM Cup's form (plain strings, `winner`, `language`), written by
    `arena data sample`, and the test file's labels kept apart for scoring."""
    folder = tmp_path_factory.mktemp("wsdm")
    assert cli.main(["data", "sample", "--rows", "80", "--out", str(folder / "train.parquet"), "--set", WSDM]) == 0
    labelled = data.generate_sample(16, seed=5, task=TWO_WAY)
    data.write_csv(labelled, folder / "labelled.parquet")
    data.write_csv(labelled.drop(columns=TWO_WAY.label_columns), folder / "test.parquet")
    return folder


def test_the_sample_has_the_wsdm_form(wsdm_files):
    raw = pd.read_parquet(wsdm_files / "train.parquet")
    assert {"id", "prompt", "response_a", "response_b", "winner", "language", "model_a", "model_b"} <= set(raw.columns)
    assert raw["prompt"].map(type).eq(str).all() and set(raw["winner"]) == {"model_a", "model_b"}
    assert raw["language"].nunique() >= 3 and raw["language"].isin(["Chinese", "Russian", "Arabic"]).any()
    df = data.load(wsdm_files / "train.parquet", require_labels=True, task=TWO_WAY)
    assert df[TWO_WAY.label_columns].sum(axis=1).eq(1).all() and "winner_tie" not in df.columns
    assert df["prompt"].map(len).eq(1).all() and df["label"].isin([0, 1]).all()


def test_train_predict_and_score_a_two_way_task(tiny_model_dir, wsdm_files, tmp_path, capsys):
    runs = tmp_path / "runs"
    assert cli.main(["train", *tiny_args(tiny_model_dir, wsdm_files / "train.parquet", runs)]) == 0
    out = capsys.readouterr().out
    assert "uniform log loss 0.6931" in out and "scored by accuracy" in out
    (run,) = (RunFolder(p) for p in runs.iterdir())
    assert json.loads(run.head.read_text())["num_labels"] == 2
    assert json.loads(run.metrics.read_text())["metric"] == "accuracy"
    val = pd.read_csv(run.val_predictions)
    assert [c for c in val.columns if c.startswith("winner") or c.startswith("true_")] == [
        *TWO_WAY.label_columns, *TWO_WAY.true_columns]

    sub = tmp_path / "submission.csv"
    assert cli.main(["predict", "--run", str(run.root), "--data", str(wsdm_files / "test.parquet"),
                     "--out", str(sub)]) == 0
    written = pd.read_csv(sub, dtype=str)
    assert written.columns.tolist() == ["id", "winner"] and set(written["winner"]) <= {"model_a", "model_b"}
    probs = pd.read_csv(data.probabilities_path(sub), dtype={"id": str})
    assert probs.columns.tolist() == TWO_WAY.prediction_columns
    assert np.allclose(probs[TWO_WAY.label_columns].sum(axis=1), 1)
    assert written["id"].tolist() == probs["id"].tolist()
    picked = np.where(probs["winner_model_a"] >= probs["winner_model_b"], "model_a", "model_b")
    assert written["winner"].tolist() == picked.tolist()

    capsys.readouterr()
    assert cli.main(["score", "--pred", str(sub), "--truth", str(wsdm_files / "labelled.parquet")]) == 0
    assert "accuracy" in capsys.readouterr().out


def test_cv_of_a_two_way_task_reports_accuracy_first(tiny_model_dir, wsdm_files, tmp_path, capsys):
    runs = tmp_path / "runs"
    assert cli.main(["cv", "--folds", "2", *tiny_args(tiny_model_dir, wsdm_files / "train.parquet", runs)]) == 0
    out = capsys.readouterr().out
    assert "OOF accuracy" in out and "(the task's metric; swap TTA), log loss" in out and "two-way" in out
    (cv,) = runs.iterdir()
    assert json.loads((cv / "cv.json").read_text())["metric"] == "accuracy"


def test_a_tie_in_a_two_way_training_file_is_named(tmp_path):
    three_way = data.generate_sample(30, seed=1)
    path = tmp_path / "train.csv"
    data.write_csv(three_way, path)
    tie = three_way["id"][three_way["label"] == 2].iloc[0]
    with pytest.raises(data.DataError) as err:
        data.load(path, require_labels=True, task=TWO_WAY)
    assert f"row id={tie}" in str(err.value) and "a two-way task has no tie" in str(err.value)
    assert "data.extra" in str(err.value)
    winners = three_way.drop(columns=THREE_WAY.label_columns).assign(
        winner=np.array(["model_a", "model_b", "tie"])[three_way["label"]])
    data.write_csv(winners, tmp_path / "winners.parquet")
    with pytest.raises(data.DataError, match=f"row id={tie} .*winner 'tie': a tie, and a two-way task has none"):
        data.load(tmp_path / "winners.parquet", require_labels=True, task=TWO_WAY)
    assert data.load(tmp_path / "winners.parquet", require_labels=True)["label"].tolist() == three_way["label"].tolist()
