"""Soft labels: train.label_smoothing on hard labels (never on soft ones or on teachers), `arena predict
--soft-labels` writing a file that is both a teacher and training rows (two-way and three-way), and an `arena cv`
OOF file as the next round's teacher."""

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from arena import cli, config, data, train
from arena.config import ConfigError
from arena.inference import soft_labels
from arena.layout import CVFolder
from arena.task import THREE_WAY, TWO_WAY
from arena.train import PreferenceTrainer

LOGITS = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [-1.0, 1.0, 0.0]])


def test_smoothing_changes_hard_rows_only():
    labels = torch.tensor([[1.0, 0, 0], [0.5, 0.25, 0.25], [0, 0, 1.0]])
    got = train.smooth_labels(labels, 0.3)
    torch.testing.assert_close(got, torch.tensor([[0.8, 0.1, 0.1], [0.5, 0.25, 0.25], [0.1, 0.1, 0.8]]))
    torch.testing.assert_close(train.smooth_labels(torch.tensor([[0.0, 1.0]]), 0.1), torch.tensor([[0.05, 0.95]]))
    assert train.smooth_labels(labels, 0.0) is labels


def compute_loss(smoothing, training, teacher=None):
    """PreferenceTrainer's loss on LOGITS and one-hot labels, as in a training step (or an evaluation)."""
    args = SimpleNamespace(label_smoothing=smoothing, distill_weight=0.5, distill_temperature=1.0, teacher_weights=None)
    trainer = SimpleNamespace(args=args, callback_handler=SimpleNamespace(callbacks=[]))
    model = lambda **inputs: LOGITS  # noqa: E731
    model.training = training
    inputs = {"labels": torch.eye(3), "input_ids": None}
    if teacher is not None:
        inputs["teacher"], inputs["teacher_covered"] = teacher, torch.ones(3, 1)
    return PreferenceTrainer.compute_loss(trainer, model, inputs)


def test_the_training_loss_smooths_the_labels_and_leaves_evaluation_and_teachers_alone():
    smoothed = train.smooth_labels(torch.eye(3), 0.2)
    assert compute_loss(0.2, True) == pytest.approx(train.soft_cross_entropy(LOGITS, smoothed).item())
    assert compute_loss(0.2, False) == pytest.approx(train.soft_cross_entropy(LOGITS, torch.eye(3)).item())
    teacher = torch.tensor([[0.6, 0.3, 0.1]] * 3).unsqueeze(1)
    want = train.distillation_loss(LOGITS, smoothed, teacher, torch.ones(3, 1), 0.5, 1.0, None)
    assert compute_loss(0.2, True, teacher) == pytest.approx(want.item())
    # the teacher's half is the KL to the teacher as given: smoothing it too would give another loss
    twice = train.distillation_loss(LOGITS, smoothed, teacher * 0.8 + 0.2 / 3, torch.ones(3, 1), 0.5, 1.0, None)
    assert compute_loss(0.2, True, teacher) != pytest.approx(twice.item())


def test_label_smoothing_range_is_checked():
    assert config.from_dict({"train": {"label_smoothing": 0.1}}).train.label_smoothing == 0.1
    for bad in (1.0, -0.1):
        with pytest.raises(ConfigError, match="train.label_smoothing"):
            config.from_dict({"train": {"label_smoothing": bad}})


@pytest.mark.parametrize("the_task", [THREE_WAY, TWO_WAY], ids=["three-way", "two-way"])
def test_a_soft_label_file_is_a_teacher_and_training_rows_in_either_task(the_task, sample_csv, tmp_path):
    rows = data.generate_sample(12, seed=7, task=the_task).drop(columns=the_task.label_columns)
    test = tmp_path / "unlabelled.csv"
    data.write_csv(rows, test)
    probs = np.random.default_rng(0).dirichlet(np.ones(the_task.classes), size=len(rows))
    predictions = tmp_path / "submission.csv"
    prediction = pd.DataFrame(probs, columns=the_task.label_columns)
    prediction.insert(0, "id", rows["id"].astype(str))
    if the_task.submission == "winner":  # as arena predict writes it: id,winner and the probabilities beside
        prediction.to_csv(data.probabilities_path(predictions), index=False)
        prediction = the_task.submission_frame(prediction["id"], probs)
    prediction.to_csv(predictions, index=False)

    out = tmp_path / "soft.csv"
    soft_labels.write(out, test, predictions)
    written = pd.read_csv(out, dtype={"id": str})
    assert [c for c in written.columns if c.startswith("winner")] == the_task.label_columns
    teachers = data.read_teachers([str(out)], rows["id"], the_task)
    got, covered = teachers.for_rows(rows["id"])
    assert covered.all()
    np.testing.assert_allclose(got[:, 0], probs, rtol=1e-6)
    for reader in (THREE_WAY, TWO_WAY):  # data.extra, in the file's task and in the other
        extra = data.read_extras([str(out)], reader, [data.load(sample_csv)])
        kept = probs.argmax(axis=1) < reader.classes  # a two-way task drops the rows whose largest class is the tie
        assert extra["id"].tolist() == rows["id"].astype(str)[kept].tolist()
        want = np.zeros((len(rows), 3))
        want[:, :the_task.classes] = probs
        want = want[kept, :reader.classes]
        np.testing.assert_allclose(extra[reader.label_columns].to_numpy(), want / want.sum(axis=1, keepdims=True),
                                   rtol=1e-6)
    with pytest.raises(data.DataError, match="already exists"):
        soft_labels.write(out, test, predictions)


def test_a_bad_soft_label_path_is_refused_before_any_model_loads(test_csv, tmp_path, monkeypatch, capsys):
    def fail(*args, **kwargs):
        raise AssertionError("predicted")

    monkeypatch.setattr("arena.predict.predict_file", fail)
    tiny_run = tmp_path / "run"  # never read: the soft-label file is checked first
    taken = tmp_path / "taken.csv"
    taken.write_text("x")
    for out, said in ((taken, "already exists"), (tmp_path / "soft.parquet", "a .csv file")):
        assert cli.main(["predict", "--run", str(tiny_run), "--data", str(test_csv), "--soft-labels", str(out)]) == 2
        assert said in capsys.readouterr().err
    same = tmp_path / "same.csv"
    assert cli.main(["predict", "--run", str(tiny_run), "--data", str(test_csv), "--out", str(same),
                     "--soft-labels", str(same)]) == 2
    assert "the same file as --out" in capsys.readouterr().err and not same.exists()


def tiny_sets(model_dir, csv, runs, *more) -> list[str]:
    sets = [f"model.path={model_dir}", "model.family=plain", f"data.train={csv}", f"train.runs_dir={runs}",
            "prompt.max_length=96", "prompt.min_tokens=8", "infer.max_length=96", "train.max_steps=2",
            "train.eval_steps=2", "train.per_device_batch_size=4", "train.grad_accum=1", "infer.tta=false",
            "peft.layers_to_transform=null", *more]
    return [arg for s in sets for arg in ("--set", s)]


@pytest.mark.e2e
def test_a_cv_oof_file_and_predicted_soft_labels_teach_the_next_round(tiny_model_dir, test_csv, tmp_path, capsys):
    runs, train_csv = tmp_path / "runs", tmp_path / "train.csv"
    data.write_csv(data.generate_sample(40, seed=3), train_csv)
    assert cli.main(["cv", "--folds", "2", "--only", "0", *tiny_sets(tiny_model_dir, train_csv, runs)]) == 0
    (cv,) = (CVFolder(p) for p in runs.iterdir())
    oof = cv.oof_predictions
    fold_run = next(p for p in cv.root.glob("fold0-*") if p.is_dir())
    soft = tmp_path / "soft.csv"
    assert cli.main(["predict", "--run", str(fold_run), "--data", str(test_csv), "--out", str(tmp_path / "sub.csv"),
                     "--soft-labels", str(soft)]) == 0
    predicted = pd.read_csv(soft, dtype={"id": str}).set_index("id")[THREE_WAY.label_columns]
    capsys.readouterr()
    more = [f"data.teacher=[{oof}]", f"data.extra=[{soft}]", "train.label_smoothing=0.1", "name=round2"]
    assert cli.main(["train", *tiny_sets(tiny_model_dir, train_csv, tmp_path / "round2", *more)]) == 0
    out = capsys.readouterr().out
    (run,) = (tmp_path / "round2").glob("round2-*")
    summary = json.loads((run / "metrics.json").read_text())
    cfg = config.load(run / "config.yaml")
    rows = data.training_data(cfg.data, THREE_WAY)
    from_test = rows["id"].isin(predicted.index)
    # the test rows train on their soft labels (the unlabelled pairs' pseudo-labels) ...
    assert from_test.sum() > 0
    np.testing.assert_allclose(rows.loc[from_test, THREE_WAY.label_columns].to_numpy(),
                               predicted.loc[rows.loc[from_test, "id"]].to_numpy(), rtol=1e-6)
    # ... and the OOF file teaches the training rows it covers (fold 0 of the CV: rows its model never saw)
    teach = summary["distillation"]
    assert teach["teachers"] == [str(oof)] and teach["rows"] == summary["train_rows"]
    assert teach["per_teacher"][0] > 0 and teach["per_teacher"][0] + teach["without_teacher"] == teach["rows"]
    assert (f"distillation: teacher rows among the {teach['rows']} training rows: {teach['per_teacher'][0]} from "
            f"{oof}; {teach['without_teacher']} without a teacher") in out
    val = pd.read_csv(run / "val_predictions.csv", dtype={"id": str})
    taught = set(pd.read_csv(oof, dtype={"id": str})["id"]) - set(val["id"])  # the OOF rows this run trains on
    assert teach["per_teacher"][0] == len(taught)
