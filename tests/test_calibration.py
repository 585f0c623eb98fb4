import json
import shutil

import numpy as np
import pandas as pd
import pytest

from arena import calibration, cli, data, metrics, predict
from arena.calibration import Calibration
from arena.errors import UserError
from arena.layout import CVFolder, RunFolder
from arena.task import THREE_WAY

LABEL_COLUMNS = THREE_WAY.label_columns
TRUE_COLUMNS = THREE_WAY.true_columns

STRONG = Calibration(temperature=0.5, bias=(0.8, -0.6, 0.0))  # far from the identity: applied twice differs


def _overconfident(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from softmax(z), predictions softmax(2.5 z): too sure of themselves, favouring A."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 3)) + np.array([0.0, 0.3, -0.2])
    truth = np.eye(3)[[rng.choice(3, p=p) for p in predict.softmax(z)]]
    return predict.softmax(2.5 * z + np.array([0.4, 0.0, 0.0])), truth


def _write_predictions(path, probs, truth):
    frame = predict.prediction_frame([f"r{i}" for i in range(len(probs))], probs)
    frame[TRUE_COLUMNS] = truth
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)


def _write_calibration(path, cal: Calibration):
    path.write_text(json.dumps({"temperature": cal.temperature, "bias": list(cal.bias)}))


def test_fit_recovers_the_temperature_and_the_cross_fitted_gain_is_honest():
    probs, truth = _overconfident(3000)
    cal = calibration.fit(probs, truth)
    assert cal.temperature == pytest.approx(2.5, rel=0.15)
    assert cal.bias[2] == 0.0
    crossed = calibration.cross_fit(probs, truth, folds=5)
    before, after = metrics.log_loss(truth, probs), metrics.log_loss(truth, crossed)
    in_sample = metrics.log_loss(truth, cal.apply(probs))
    assert after < before - 0.05 and in_sample <= after  # the in-sample fit is the optimistic one
    # On pure noise a fit on the same rows still "gains"; the cross-fitted estimate does not.
    rng = np.random.default_rng(1)
    noise, labels = predict.softmax(rng.normal(size=(300, 3))), np.eye(3)[rng.integers(0, 3, 300)]
    assert metrics.log_loss(labels, calibration.fit(noise, labels).apply(noise)) < \
        metrics.log_loss(labels, calibration.cross_fit(noise, labels))


def test_calibrate_a_run_writes_json_and_plot_and_never_overwrites(tmp_path, capsys):
    run = RunFolder(tmp_path / "runs" / "r-1")
    probs, truth = _overconfident(400)
    _write_predictions(run.val_predictions, probs, truth)
    result = calibration.calibrate(run_dir=run.root)
    out = capsys.readouterr().out
    assert "cross-fitted" in out and f"{result['log_loss_before']:.4f}" in out
    stored = json.loads(run.calibration.read_text())
    assert stored["log_loss_after_cross_fitted"] < stored["log_loss_before"]
    assert run.reliability.stat().st_size > 5000
    assert calibration.read(run.calibration) == Calibration(stored["temperature"], tuple(stored["bias"]))
    with pytest.raises(UserError, match="already exists"):
        calibration.calibrate(run_dir=run.root)
    assert "warning" not in out


def test_calibrate_warns_when_the_cross_fitted_log_loss_does_not_improve(tmp_path, capsys, monkeypatch):
    run = RunFolder(tmp_path / "runs" / "r-1")
    probs, truth = _overconfident(400)
    _write_predictions(run.val_predictions, probs, truth)
    # Folds that fit badly (as a few validation rows can): the cross-fitted predictions are the STRONG distortion.
    monkeypatch.setattr(calibration, "cross_fit", lambda p, t, folds, seed: STRONG.apply(p))
    result = calibration.calibrate(run_dir=run.root)
    assert result["log_loss_after_cross_fitted"] > result["log_loss_before"]
    out = capsys.readouterr().out
    assert "warning: cross-fitted, the calibration did not lower the log loss of these 400 rows" in out
    assert run.calibration.exists()  # written all the same: the user asked for it; --no-calibration skips it


def test_calibrate_a_cv_folder_and_its_fold_runs_use_it(tmp_path):
    cv = CVFolder(tmp_path / "default-cv-1")
    probs, truth = _overconfident(300, seed=3)
    _write_predictions(cv.oof_predictions, probs, truth)
    assert cli.main(["calibrate", "--oof", str(cv.oof_predictions)]) == 0
    fold = RunFolder(cv.root / "fold0-1")
    fold.root.mkdir()
    assert calibration.file_for_run(fold) == cv.calibration
    assert calibration.for_predictions_file(cv.oof_predictions)[1] == cv.calibration
    _write_calibration(fold.calibration, STRONG)  # a run's own calibration comes first
    assert calibration.file_for_run(fold) == fold.calibration


def test_calibrate_refuses_bad_input_with_exit_2(tmp_path, capsys):
    assert cli.main(["calibrate", "--run", str(tmp_path)]) == 2
    assert "val_predictions.csv" in capsys.readouterr().err
    run = RunFolder(tmp_path / "r")
    probs, truth = _overconfident(40)
    _write_predictions(run.val_predictions, probs, truth)
    frame = pd.read_csv(run.val_predictions, dtype=str)
    frame.loc[3, TRUE_COLUMNS[0]] = "x"
    frame.to_csv(run.val_predictions, index=False)
    assert cli.main(["calibrate", "--run", str(run.root)]) == 2
    err = capsys.readouterr().err
    assert "labels): non-numeric values in 1 row(s) (ids: r3)" in err and not run.calibration.exists()


@pytest.fixture
def calibrated_run(tiny_run, tmp_path):
    run = RunFolder(tmp_path / "run")
    shutil.copytree(tiny_run, run.root, ignore=shutil.ignore_patterns("predictions", "checkpoints"))
    _write_calibration(run.calibration, STRONG)
    return run


def test_predict_applies_the_calibration_exactly_once(calibrated_run, tmp_path, capsys):
    csv = tmp_path / "rows.csv"
    data.write_csv(data.generate_sample(12, seed=5), csv)
    raw = pd.read_csv(predict.predict_file(calibrated_run.root, csv, tmp_path / "raw.csv", calibrate=False))
    assert "calibration applied" not in capsys.readouterr().out
    cal = pd.read_csv(predict.predict_file(calibrated_run.root, csv, tmp_path / "cal.csv"))
    assert "calibration applied: T=0.500" in capsys.readouterr().out
    once = STRONG.apply(raw[LABEL_COLUMNS].to_numpy())
    twice = STRONG.apply(once)
    got = cal[LABEL_COLUMNS].to_numpy()
    assert np.allclose(got, once, atol=1e-6) and not np.allclose(got, twice, atol=1e-3)


def test_blend_calibrates_oof_once_and_takes_predictions_as_written(calibrated_run, tmp_path, capsys):
    oof = calibrated_run.val_predictions
    preds = tmp_path / "preds.csv"  # as `arena predict` wrote them: already calibrated
    frame = pd.read_csv(oof, dtype={"id": str})
    frame[["id", *LABEL_COLUMNS]].to_csv(preds, index=False)
    out = predict.blend_files([str(oof)], [str(preds)], str(tmp_path / "blend.csv"))
    printed = capsys.readouterr().out
    truth, raw = frame[TRUE_COLUMNS].to_numpy(), frame[LABEL_COLUMNS].to_numpy()
    assert f"blended OOF log loss {metrics.log_loss(truth, STRONG.apply(raw)):.4f}" in printed
    assert np.allclose(pd.read_csv(out)[LABEL_COLUMNS].to_numpy(), raw, atol=1e-6)  # not calibrated again
    predict.blend_files([str(oof)], [str(preds)], str(tmp_path / "raw.csv"), calibrate=False)
    assert f"blended OOF log loss {metrics.log_loss(truth, raw):.4f}" in capsys.readouterr().out


def test_calibration_on_real_data_gains_when_cross_fitted(shared_data):
    """Length-feature logistic regression OOF predictions on human labels, then cross-fitted calibration."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    df = data.load(shared_data / "autoj_pairwise_dev.csv", require_labels=True)
    y = data.label_matrix(df)
    probs = cross_val_predict(make_pipeline(StandardScaler(), LogisticRegression()), data.length_features(df), y.argmax(1),
                              cv=5, method="predict_proba")
    probs = predict.softmax(3 * np.log(probs))  # a sharpened model: what an overfit fine-tune looks like
    crossed = calibration.cross_fit(probs, y)
    assert metrics.log_loss(y, crossed) < metrics.log_loss(y, probs) - 0.05
