import math

import numpy as np
import pandas as pd
import pytest
import sklearn.metrics

from arena import cli, data, metrics
from arena.cli import main
from arena.errors import UserError
from arena.task import THREE_WAY
from tests.files import probs_csv

LABEL_COLUMNS = THREE_WAY.label_columns

LABELS = ["id", *LABEL_COLUMNS]


def random_probs(rng, n):
    p = rng.random((n, 3)) ** 3
    return p / p.sum(axis=1, keepdims=True)


def test_log_loss_equals_sklearn_on_hard_labels():
    rng = np.random.default_rng(0)
    for n in (1, 7, 500):
        y = rng.integers(0, 3, n)
        p = random_probs(rng, n)
        p[0] = [1.0, 0.0, 0.0]  # exercises clipping
        want = sklearn.metrics.log_loss(y, p, labels=[0, 1, 2])
        assert metrics.log_loss(y, p) == pytest.approx(want, rel=1e-12)
        onehot = np.eye(3)[y]
        assert metrics.log_loss(onehot, p) == pytest.approx(want, rel=1e-12)


def test_log_loss_soft_labels():
    y = np.array([[0.5, 0.5, 0.0], [1 / 3, 1 / 3, 1 / 3]])
    p = np.array([[0.25, 0.25, 0.5], [0.2, 0.3, 0.5]])
    want = -(0.5 * math.log(0.25) * 2 + (math.log(0.2) + math.log(0.3) + math.log(0.5)) / 3) / 2
    assert metrics.log_loss(y, p) == pytest.approx(want)
    assert metrics.log_loss(y, np.full((2, 3), 1 / 3)) == pytest.approx(math.log(3))


def test_log_loss_renormalises_rows():
    y = np.array([0, 2])
    p = np.array([[2.0, 1.0, 1.0], [0.1, 0.1, 0.3]])
    assert metrics.log_loss(y, p) == pytest.approx(-(math.log(0.5) + math.log(0.6)) / 2)


def test_log_loss_clips_zero_probabilities():
    y = np.array([1, 1])
    for dtype in (np.float64, np.float32):
        p = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=dtype)
        loss = metrics.log_loss(y, p)
        assert math.isfinite(loss)
        assert loss == pytest.approx(-math.log(np.finfo(dtype).eps) / 2, rel=1e-5)


def test_log_loss_rejects_bad_shapes():
    assert metrics.log_loss([0, 1], np.full((2, 2), 0.5)) == pytest.approx(math.log(2))  # a two-way task
    with pytest.raises(ValueError):
        metrics.log_loss([0, 1], np.full((2, 4), 0.25))
    with pytest.raises(ValueError):
        metrics.log_loss([0, 2], np.full((2, 2), 0.5))  # a tie in a two-way task
    with pytest.raises(ValueError):
        metrics.log_loss(np.eye(3)[[0, 1]], np.full((2, 2), 0.5))
    with pytest.raises(ValueError):
        metrics.log_loss([0, 3], np.full((2, 3), 1 / 3))
    with pytest.raises(ValueError):
        metrics.log_loss([0], np.full((2, 3), 1 / 3))


def test_the_class_prior_keeps_a_class_the_rows_never_show():
    """A training fold without a tie (small data, three ties among 120 rows) gave the tie a prior of zero: the
    head started at log(1e-4) for it and the baseline's log loss on a validation tie was unbounded."""
    labels = np.eye(3)[[0, 0, 1, 1]]
    prior = metrics.class_prior(labels)
    assert np.allclose(prior, [3 / 7, 3 / 7, 1 / 7]) and prior.sum() == pytest.approx(1)
    assert metrics.log_loss(np.eye(3)[[2]], prior[None]) == pytest.approx(math.log(7))
    many = np.eye(2)[np.arange(10_000) % 2]
    assert np.allclose(metrics.class_prior(many), [0.5, 0.5])


def test_accuracy_counts_calibration():
    y = np.array([0, 1, 2, 2])
    p = np.array([[0.6, 0.2, 0.2], [0.2, 0.6, 0.2], [0.6, 0.2, 0.2], [0.1, 0.1, 0.8]])
    assert metrics.accuracy(y, p) == 0.75
    assert metrics.accuracy(np.eye(3)[y] * 0.8 + 0.2 / 3, p) == 0.75
    assert metrics.class_counts(y) == {"winner_model_a": 1, "winner_model_b": 1, "winner_tie": 2}
    assert metrics.class_counts(p) == {"winner_model_a": 2, "winner_model_b": 1, "winner_tie": 1}
    cal = metrics.calibration(y, p, bins=5)
    assert set(cal["ece"]) == set(LABEL_COLUMNS)
    assert sum(row["count"] for row in cal["table"] if row["class"] == "winner_tie") == 4
    # Class a: bin [0.0, 0.2) holds 0.1 (true 0); [0.2, 0.4) holds 0.2 (true 0); [0.6, 0.8) two 0.6 (true 1 and 0).
    assert cal["ece"]["winner_model_a"] == pytest.approx((0.1 + 0.2 + 2 * 0.1) / 4)
    perfect = metrics.calibration(np.eye(3)[y], np.eye(3)[y])
    assert perfect["mean_ece"] == pytest.approx(0, abs=1e-12)


@pytest.fixture()
def truth_path(shared_data):
    return shared_data / "autoj_pairwise_dev.csv"


@pytest.fixture()
def uniform(truth_path):
    ids = pd.read_csv(truth_path, usecols=["id"], dtype={"id": str})["id"]
    return pd.DataFrame({"id": ids, **{c: 1 / 3 for c in LABEL_COLUMNS}})


def run_score(pred: pd.DataFrame, truth_path, tmp_path, capsys):
    path = tmp_path / "pred.csv"
    pred.to_csv(path, index=False)
    code = main(["score", "--pred", str(path), "--truth", str(truth_path)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_score_uniform(uniform, truth_path, tmp_path, capsys):
    code, out, _ = run_score(uniform, truth_path, tmp_path, capsys)
    assert code == 0
    assert "log_loss 1.0986" in out and "rows 696" in out and "uniform 1.0986" in out
    result = data.score_files(tmp_path / "pred.csv", truth_path)
    assert result["true_counts"] == {"winner_model_a": 246, "winner_model_b": 260, "winner_tie": 190}
    prior = np.array([246, 260, 190]) / 696
    assert result["prior_log_loss"] == pytest.approx(-(prior * np.log(prior)).sum())
    assert result["accuracy"] == pytest.approx(246 / 696)


def test_score_soft_truth_and_shuffled_rows(shared_data, tmp_path, capsys):
    truth = shared_data / "pandalm_human_softvotes.csv"
    y = pd.read_csv(truth, usecols=LABELS, dtype={"id": str})
    pred = y.sample(frac=1, random_state=0)  # perfect prediction, rows in another order
    code, out, _ = run_score(pred, truth, tmp_path, capsys)
    assert code == 0
    labels = y[LABEL_COLUMNS].to_numpy()
    entropy = -np.mean(np.sum(labels * np.log(np.clip(labels, 1e-300, None)), axis=1))
    assert f"log_loss {entropy:.4f}" in out


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda df: df.assign(id=df["id"].where(df.index != 3, "nope")), "ids missing"),
        (lambda df: df.iloc[:-2], "ids missing"),
        (lambda df: pd.concat([df, df.iloc[[0]]]), "duplicated ids"),
        (lambda df: df.assign(winner_tie=df["winner_tie"].where(df.index != 5, np.nan)), "NaN"),
        (lambda df: df.assign(winner_tie=df["winner_tie"].astype(object).where(df.index != 5, "abc")), "non-numeric"),
        # rows not summing to 1 are rescaled, as Kaggle does (test_score_rescales_rows_...); negatives never are
        (lambda df: df.assign(winner_model_a=1.5, winner_model_b=-0.25, winner_tie=-0.25), "negative values"),
        (lambda df: df.assign(winner_model_a=0.0, winner_model_b=0.0, winner_tie=0.0), "rows summing to 0"),
        (lambda df: df.drop(columns=["winner_tie"]), "missing column(s) winner_tie"),
    ],
)
def test_score_rejects_bad_predictions(uniform, truth_path, tmp_path, capsys, mutate, message):
    code, _, err = run_score(mutate(uniform), truth_path, tmp_path, capsys)
    assert code == 2
    assert message in err
    assert "pred.csv" in err
    if message not in ("missing column(s) winner_tie", "duplicated ids"):
        assert "ids:" in err


def test_score_names_first_ids_and_count(uniform, truth_path, tmp_path, capsys):
    code, _, err = run_score(uniform.iloc[10:], truth_path, tmp_path, capsys)
    assert code == 2
    assert "10 row(s) (ids: autoj_test_0, " in err and ", ...)" in err


def test_score_missing_files(tmp_path, capsys):
    code = main(["score", "--pred", str(tmp_path / "nope.csv"), "--truth", str(tmp_path / "nope2.csv")])
    assert code == 2
    assert "nope2.csv" in capsys.readouterr().err


def test_validate_submission():
    df = pd.DataFrame({"id": [1, 2, 3], "winner_model_a": [0.2, 0.5, 1.0], "winner_model_b": [0.3, 0.5, 0.0],
                       "winner_tie": [0.5, 0.0, 0.0]})
    data.validate_submission(df, ["1", "2", "3"])
    data.validate_submission(df, [1, 2, 3])
    bad = df.assign(winner_tie=[0.5, np.nan, 0.0])
    with pytest.raises(UserError) as exc:
        data.validate_submission(bad, [1, 2, 3, 4])
    assert exc.value.problems == [
        "submission: ids missing: 1 row(s) (ids: 4)",
        "submission: missing (NaN) values in 1 row(s) (ids: 2)",
    ]


def test_score_rescales_rows_as_kaggle_does_and_keeps_an_id_spelled_na(work, capsys):
    truth = probs_csv(work / "truth.csv", ["NA", "b"], [[1, 0, 0], [0, 0, 1]])
    thirds = probs_csv(work / "thirds.csv", ["NA", "b"], [[0.333, 0.333, 0.333]] * 2)
    assert cli.main(["score", "--pred", str(thirds), "--truth", str(truth)]) == 0
    out = capsys.readouterr().out
    assert "rows 2" in out and "log_loss 1.0986" in out and "note:" not in out
    doubled = probs_csv(work / "doubled.csv", ["NA", "b"], [[1.0, 0.4, 0.6], [0.4, 0.4, 1.2]])
    halved = probs_csv(work / "halved.csv", ["NA", "b"], [[0.5, 0.2, 0.3], [0.2, 0.2, 0.6]])
    assert cli.main(["score", "--pred", str(doubled), "--truth", str(truth)]) == 0
    rescaled = capsys.readouterr().out
    assert "note: 2 prediction row(s) did not sum to 1; each row was divided by its sum" in rescaled
    assert cli.main(["score", "--pred", str(halved), "--truth", str(truth)]) == 0
    assert rescaled.split()[1] == capsys.readouterr().out.split()[1]  # the same log loss
