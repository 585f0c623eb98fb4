"""Distillation (data.teacher): the loss, the teacher CSVs' checks, and training on the tiny model: weight 0 is
plain training, weight 1 moves the training rows' predictions toward the teacher's."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from arena import cli, data, predict, train
from arena.errors import UserError
from arena.layout import RunFolder
from arena.task import THREE_WAY
from tests.tiny import tiny_train_cfg

LABEL_COLUMNS = THREE_WAY.label_columns

LOGITS = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [-1.0, 1.0, 0.0]])
LABELS = torch.tensor([[1.0, 0, 0], [0, 0, 1.0], [0, 1.0, 0]])


def teacher_tensor(*rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32).unsqueeze(1)  # (n, 1 teacher, 3)


def test_weight_zero_is_the_cross_entropy_and_rows_without_teacher_keep_it():
    teacher = teacher_tensor([0.2, 0.3, 0.5], [0.6, 0.4, 0.0], [1 / 3, 1 / 3, 1 / 3])
    covered = torch.ones(3, 1)
    ce = train.soft_cross_entropy(LOGITS, LABELS)
    assert train.distillation_loss(LOGITS, LABELS, teacher, covered, 0.0, 2.0, None) == ce
    assert train.distillation_loss(LOGITS, LABELS, teacher, torch.zeros(3, 1), 1.0, 2.0, None) == ce


def test_weight_one_is_t2_times_the_kl_to_the_softened_teacher():
    teacher = teacher_tensor([0.2, 0.3, 0.5], [0.6, 0.4, 0.0], [1 / 3, 1 / 3, 1 / 3])
    t = 2.0
    loss = train.distillation_loss(LOGITS, LABELS, teacher, torch.ones(3, 1), 1.0, t, None)
    p = torch.softmax(torch.log(teacher[:, 0].clamp_min(1e-8)) / t, -1)
    expected = torch.nn.functional.kl_div(torch.log_softmax(LOGITS / t, -1), p, reduction="batchmean") * t * t
    assert torch.isfinite(loss) and loss.item() == pytest.approx(expected.item(), rel=1e-5)
    # the model's own softened probabilities as teacher: nothing to learn
    own = torch.softmax(LOGITS, -1).unsqueeze(1)
    assert train.distillation_loss(LOGITS, LABELS, own, torch.ones(3, 1), 1.0, 1.0, None).item() == pytest.approx(0, abs=1e-6)


def test_teachers_are_weighted_and_renormalised_over_the_ones_covering_a_row():
    teachers = torch.stack([torch.tensor([[0.8, 0.1, 0.1]] * 3), torch.tensor([[0.1, 0.1, 0.8]] * 3)], dim=1)
    only_first = torch.tensor([[1.0, 0.0]] * 3)
    both = torch.ones(3, 2)
    first = train.distillation_loss(LOGITS, LABELS, teachers[:, :1], torch.ones(3, 1), 1.0, 1.0, None)
    second = train.distillation_loss(LOGITS, LABELS, teachers[:, 1:], torch.ones(3, 1), 1.0, 1.0, None)
    assert train.distillation_loss(LOGITS, LABELS, teachers, only_first, 1.0, 1.0, [3.0, 1.0]) == pytest.approx(first)
    mixed = train.distillation_loss(LOGITS, LABELS, teachers, both, 1.0, 1.0, [3.0, 1.0])
    assert mixed.item() == pytest.approx(0.75 * first.item() + 0.25 * second.item(), rel=1e-5)


def write_teacher(path, ids, probs) -> str:
    frame = pd.DataFrame(np.asarray(probs, dtype=float).reshape(len(ids), 3), columns=LABEL_COLUMNS)
    frame.insert(0, "id", list(ids))
    frame.to_csv(path, index=False)
    return str(path)


def test_teacher_rows_follow_the_ids_and_the_swap(sample_csv, tmp_path):
    df = data.load(sample_csv)
    ids = list(df["id"][:5])
    probs = np.array([[0.7, 0.2, 0.1]] * 5)
    teachers = data.read_teachers([write_teacher(tmp_path / "t.csv", ids, probs)], df["id"], THREE_WAY)
    got, covered = teachers.for_rows(df["id"][:8])
    assert covered[:, 0].tolist() == [True] * 5 + [False] * 3
    np.testing.assert_allclose(got[:5, 0], probs, rtol=1e-6)
    swapped, _ = teachers.for_rows(df["id"][:8], swap=True)
    np.testing.assert_allclose(swapped[:5, 0], probs[:, [1, 0, 2]], rtol=1e-6)
    assert teachers.coverage(df["id"]) == {"rows": len(df), "per_teacher": [5], "without_teacher": len(df) - 5}


def test_a_teacher_of_rows_dedup_dropped_is_read_its_extra_ids_counted(sample_csv, tmp_path, capsys):
    """A predict output of the training file holds the ids of exact-duplicate rows the training data drops: they
    are counted and ignored (as training rows a teacher lacks are); a teacher of no training row is refused."""
    df = data.load(sample_csv)
    doubled = pd.concat([df, df[:3].assign(id=["dup-1", "dup-2", "dup-3"])])
    train_csv = tmp_path / "train.csv"
    data.write_csv(doubled, train_csv)
    cfg = tiny_train_cfg("unused", train_csv, tmp_path / "runs")
    rows = data.training_data(cfg.data, THREE_WAY)
    assert len(rows) == len(df)  # the duplicates dropped
    teacher = write_teacher(tmp_path / "t.csv", doubled["id"], [[0.5, 0.25, 0.25]] * len(doubled))
    teachers = data.read_teachers([teacher], rows["id"], THREE_WAY)
    assert teachers.coverage(rows["id"])["per_teacher"] == [len(df)]
    assert f"{teacher} (data.teacher): ids not among the training rows, ignored: 3 row(s)" in capsys.readouterr().err
    other = write_teacher(tmp_path / "other.csv", ["x1", "x2"], [[0.5, 0.25, 0.25]] * 2)
    with pytest.raises(UserError, match="other.csv \\(data.teacher\\): none of its ids is in the training data"):
        data.read_teachers([other], rows["id"], THREE_WAY)


def test_bad_teacher_csvs_are_named_before_any_model_loads_and_nothing_is_written(
        tiny_model_dir, sample_csv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    df = data.load(sample_csv)
    ids = list(df["id"][:3])
    unknown = write_teacher(tmp_path / "unknown.csv", ["no-such-row"], [[0.5, 0.25, 0.25]])
    off_sum = write_teacher(tmp_path / "sum.csv", ids, [[0.5, 0.25, 0.25], [0.9, 0.3, 0.1], [0.2, 0.2, 0.6]])
    columns = tmp_path / "columns.csv"
    pd.DataFrame({"id": ids, "winner_model_a": [1.0] * 3}).to_csv(columns, index=False)

    def fail_to_load(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr("arena.model.build_for_training", fail_to_load)
    runs = tmp_path / "runs"
    argv = ["train", "--set", f"model.path={tiny_model_dir}", "--set", "model.family=plain",
            "--set", f"data.train={sample_csv}", "--set", f"train.runs_dir={runs}",
            "--set", f"data.teacher=[{unknown}, {off_sum}, {columns}, {tmp_path / 'absent.csv'}]"]
    assert cli.main(argv) == 2
    assert not runs.exists()
    err = capsys.readouterr().err
    assert f"{unknown} (data.teacher): none of its ids is in the training data: 1 row(s) (ids: no-such-row)" in err
    assert f"{off_sum} (data.teacher): rows not summing to 1" in err and f"ids: {ids[1]}" in err
    assert f"{columns}: missing column(s) winner_model_b, winner_tie" in err
    assert "absent.csv: teacher file not found" in err


def training_predictions(run_dir, csv, tmp_path) -> pd.DataFrame:
    out = predict.predict_file(run_dir, csv, tmp_path / f"{RunFolder(run_dir).root.name}.csv", tta=False)
    return pd.read_csv(out, dtype={"id": str}).set_index("id")


@pytest.fixture(scope="module")
def distilled_runs(tiny_model_dir, sample_csv, tmp_path_factory):
    """Three short runs on the same rows: plain, with a teacher at weight 0, and with it at weight 1. The
    teacher says 'tie' (0.8) for every row, far from the sample's labels."""
    tmp = tmp_path_factory.mktemp("distill")
    df = data.load(sample_csv)
    teacher = write_teacher(tmp / "teacher.csv", df["id"], [[0.1, 0.1, 0.8]] * len(df))
    # Without the start as a candidate: a teacher this far from the labels makes the start the best on validation.
    common = ("train.max_steps=6", "train.eval_steps=6", "train.head_learning_rate=0.05", "train.eval_on_start=false")
    runs = {}
    for name, extra in (("plain", ()), ("weight0", (f"data.teacher=[{teacher}]", "train.distill_weight=0")),
                        ("weight1", (f"data.teacher=[{teacher}]", "train.distill_weight=1"))):
        cfg = tiny_train_cfg(tiny_model_dir, sample_csv, tmp / "runs", f"name={name}", *common, *extra)
        runs[name] = train.train(cfg)
    return runs, tmp


def test_weight_zero_trains_exactly_as_without_a_teacher(distilled_runs):
    from safetensors.torch import load_file

    runs, _ = distilled_runs
    plain = load_file(RunFolder(runs["plain"]).adapter / "adapter_model.safetensors")
    weight0 = load_file(RunFolder(runs["weight0"]).adapter / "adapter_model.safetensors")
    assert plain.keys() == weight0.keys()
    for name in plain:
        torch.testing.assert_close(weight0[name], plain[name], rtol=0, atol=1e-6, msg=name)
    m = json.loads(RunFolder(runs["weight0"]).metrics.read_text())
    assert m["distillation"]["without_teacher"] == 0 and m["distillation"]["per_teacher"] == [m["train_rows"]]


def test_weight_one_moves_training_predictions_toward_the_teacher(distilled_runs, sample_csv):
    runs, tmp = distilled_runs
    tie = {name: training_predictions(runs[name], sample_csv, tmp)["winner_tie"].mean() for name in ("plain", "weight1")}
    assert tie["weight1"] > tie["plain"] + 0.1, tie
