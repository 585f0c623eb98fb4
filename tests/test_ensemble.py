"""Ensembles inside one kernel: `arena package --run R1 --run R2 [--weights ...]`, `arena kernel blend`, and the
offline rehearsal of a 2-run bundle."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from arena import cli, config, data, embedded, metrics, predict
from arena.calibration import Calibration
from arena.errors import UserError
from arena.kaggle import bundle as bundle_mod
from arena.kaggle import ensemble, preflight, rehearsal
from arena.layout import Bundle, EnsembleDataset, RunFolder
from arena.task import THREE_WAY

LABEL_COLUMNS = THREE_WAY.label_columns
REAL_CACHE = str(embedded.cache_dir())  # before a fixture moves HOME: the twin is built once per machine
TRUE_COLUMNS = THREE_WAY.true_columns

# Two members on different base models as the kernel sees them (both the tiny model here, attached twice).
GEMMA = {"base_model_kernel_path": "/kaggle/input/tiny-gemma2/transformers/default/1",
         "base_model_source": "someone/tiny-gemma2/transformers/default/1"}
LLAMA = {"base_model_kernel_path": "/kaggle/input/tiny-llama/1", "base_model_dataset": "someone/tiny-llama"}
CALIBRATION = Calibration(temperature=0.5, bias=(0.8, -0.6, 0.0))  # far from the identity


def _member(tiny_run: Path, where: Path, kaggle: dict, tta: bool = True, calibrated: bool = False) -> Path:
    """A copy of the tiny trained run whose config attaches its base model on Kaggle as `kaggle` says."""
    shutil.copytree(tiny_run, where, ignore=shutil.ignore_patterns("config.yaml", "predictions", "kaggle-bundle-*"))
    raw = config.load_run(RunFolder(tiny_run)).to_dict()
    raw["kaggle"] |= kaggle
    raw["infer"]["tta"] = tta
    config.dump(config.from_dict(raw), where / "config.yaml")
    if calibrated:
        (where / "calibration.json").write_text(json.dumps({"temperature": CALIBRATION.temperature,
                                                            "bias": list(CALIBRATION.bias)}))
    return where


@pytest.fixture
def members(tiny_run, tmp_path):
    return [_member(tiny_run, tmp_path / "runs" / "gemma", GEMMA),
            _member(tiny_run, tmp_path / "runs" / "llama", LLAMA, tta=False, calibrated=True)]


@pytest.fixture
def test_csv(tmp_path):
    path = tmp_path / "input" / "test.csv"
    data.write_csv(data.generate_sample(12, seed=11).drop(columns=LABEL_COLUMNS), path)
    return path


def _val(run: Path) -> tuple[np.ndarray, np.ndarray]:
    frame = pd.read_csv(run / "val_predictions.csv", dtype={"id": str})
    return frame[LABEL_COLUMNS].to_numpy(), frame[TRUE_COLUMNS].to_numpy()


def test_ensemble_bundle_holds_every_member_and_weights_fit_on_calibrated_predictions(members, tmp_path, test_csv,
                                                                                      no_credentials, capsys):
    out = ensemble.package_ensemble(members, tmp_path / "bundle", wheels=False, test_csv=test_csv)
    printed = capsys.readouterr().out
    bundle = Bundle(out)
    runs = bundle.member_runs()
    assert [r.root.name for r in runs] == ["member-0", "member-1"]
    for run, source in zip(runs, members):
        assert (run.adapter / "adapter_model.safetensors").read_bytes() == (
            source / "adapter" / "adapter_model.safetensors").read_bytes()
        assert config.load_run(run).to_dict() == config.load_run(RunFolder(source)).to_dict()  # its own config and format
    assert not runs[0].calibration.exists()
    assert runs[1].calibration.read_text() == (members[1] / "calibration.json").read_text()

    # The weights are fit on the probabilities the kernel will blend: member 1 calibrated once, member 0 raw.
    stored = json.loads(bundle.ensemble.read_text())
    fit = stored["fit"]
    raw0, truth = _val(members[0])
    raw1, _ = _val(members[1])
    calibrated1 = CALIBRATION.apply(raw1)
    assert fit["mode"] == "oof" and fit["rows"] == len(truth)
    assert fit["member_log_loss"][0] == pytest.approx(metrics.log_loss(truth, raw0))
    assert fit["member_log_loss"][1] == pytest.approx(metrics.log_loss(truth, calibrated1))
    assert fit["member_log_loss"][1] != pytest.approx(metrics.log_loss(truth, raw1))
    weights = np.array([m["weight"] for m in stored["members"]])
    assert weights.sum() == pytest.approx(1) and (weights >= 0).all()
    assert fit["blend_log_loss"] == pytest.approx(metrics.log_loss(truth, weights[0] * raw0 + weights[1] * calibrated1))
    assert fit["blend_log_loss"] <= min(fit["member_log_loss"]) + 1e-6  # the fit can always pick one member
    assert f"blended log loss {fit['blend_log_loss']:.4f}" in printed

    # The kernel predicts with each member, with its own base model and TTA, then blends.
    script = bundle.kernel_script.read_text()
    compile(script, "kernel.py", "exec")
    assert ("MEMBERS = [['members/member-0', '/kaggle/input/tiny-gemma2/transformers/default/1', True, "
            "'member-0-predictions.csv'], ['members/member-1', '/kaggle/input/tiny-llama/1', False, "
            "'member-1-predictions.csv']]") in script
    meta = json.loads(bundle.kernel_metadata.read_text())
    assert meta["model_sources"] == [GEMMA["base_model_source"]]
    assert LLAMA["base_model_dataset"] in meta["dataset_sources"]

    # The projection sums the members, each measured with its own tokenizer and TTA.
    pf = json.loads(bundle.preflight.read_text())
    assert [m["passes"] for m in pf["members"]] == [2, 1]
    assert pf["projected_hours"] == pytest.approx(sum(m["projected_hours"] for m in pf["members"]), abs=1e-3)
    assert pf["exceeds_limit"] == (pf["projected_hours"] > pf["time_limit_hours"])
    assert f"ensemble projected wall time: {pf['projected_hours']:.2f} h" in printed
    assert "EXCEEDS" in preflight.format_preflight(pf | {"projected_hours": 10.0, "exceeds_limit": True})
    assert bundle_mod.bundle_config(bundle).kaggle.base_model_kernel_path == GEMMA["base_model_kernel_path"]


def test_weights_equal_and_given(members, tmp_path, no_credentials):
    (members[0] / "val_predictions.csv").unlink()  # not needed unless the weights are fit
    out = ensemble.package_ensemble(members, tmp_path / "b1", wheels=False, weights="3,1")
    assert [m["weight"] for m in json.loads(Bundle(out).ensemble.read_text())["members"]] == [0.75, 0.25]
    out = ensemble.package_ensemble(members, tmp_path / "b2", wheels=False, weights="equal")
    assert [m["weight"] for m in json.loads(Bundle(out).ensemble.read_text())["members"]] == [0.5, 0.5]


def test_a_fold_run_is_weighted_by_its_cv_folders_oof_with_the_calibration_the_bundle_carries(
        members, tmp_path, no_credentials):
    """A fold of `arena cv` is fit on its CV folder's out-of-fold file, calibrated with the CV folder's
    calibration: the file the bundle carries for that member and its kernel predict applies."""
    cv = tmp_path / "cv"
    fold = _member(members[0], cv / "fold-0", GEMMA)
    (cv / "cv.json").write_text("{}")
    shutil.copy2(members[0] / "val_predictions.csv", cv / "oof_predictions.csv")
    (fold / "val_predictions.csv").unlink()  # only the OOF file may be used
    (cv / "calibration.json").write_text(json.dumps({"temperature": 2.0, "bias": [0.1, 0.2, -0.3]}))
    out = ensemble.package_ensemble([fold, members[1]], tmp_path / "bundle", wheels=False)
    stored = json.loads(Bundle(out).ensemble.read_text())
    assert stored["fit"]["fit_on"][0] == "cv/oof_predictions.csv"  # uploaded: by its name; kept here: its path
    assert json.loads((Bundle(out).local / "ensemble.json").read_text())["fit"]["fit_on"][0] == str(cv / "oof_predictions.csv")
    assert Bundle(out).dataset.member(0).calibration.read_text() == (cv / "calibration.json").read_text()
    raw, truth = _val(members[0])
    expected = Calibration(temperature=2.0, bias=(0.1, 0.2, -0.3)).apply(raw)
    assert stored["fit"]["member_log_loss"][0] == pytest.approx(metrics.log_loss(truth, expected))


def _labels_changed(run: Path) -> None:
    frame = pd.read_csv(run / "val_predictions.csv", dtype={"id": str})
    frame.loc[0, TRUE_COLUMNS] = np.roll(frame.loc[0, TRUE_COLUMNS].to_numpy(dtype=float), 1)
    frame.to_csv(run / "val_predictions.csv", index=False)


def _row_dropped(run: Path) -> None:
    frame = pd.read_csv(run / "val_predictions.csv", dtype={"id": str})
    frame.iloc[1:].to_csv(run / "val_predictions.csv", index=False)


@pytest.mark.parametrize("damage, flags, needles", [
    (_labels_changed, [], ["disagree", "runs/gemma", "runs/llama", "different true labels"]),
    (_row_dropped, [], ["disagree", "runs/gemma", "runs/llama", "different rows (1 id(s) only in the first"]),
    (lambda run: shutil.rmtree(run / "adapter"), [], ["runs/llama", "not a run folder"]),
    (lambda run: (run / "adapter" / "tokenizer.json").unlink(), [], ["runs/llama", "tokenizer.json"]),
    (None, ["--weights", "0.5"], ["--weights 0.5: 1 weight(s) for 2 --run(s)"]),
    (None, ["--weights", "1,-1"], ["--weights 1,-1: weights must be finite, non-negative"]),
    (None, ["--weights", "best"], ["--weights best: expected oof, equal or one number per --run"]),
])
def test_bad_ensemble_input_exits_2_and_writes_nothing(members, tmp_path, no_credentials, capsys, damage, flags,
                                                        needles):
    if damage is not None:
        damage(members[1])
    out = tmp_path / "out" / "bundle"
    argv = ["package", "--run", str(members[0]), "--run", str(members[1]), "--no-wheels", "--out", str(out), *flags]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    for needle in needles:
        assert needle in err, (needle, err)
    assert not out.parent.exists() or not any(out.parent.iterdir())


def test_one_run_with_weights_is_refused(members, tmp_path, capsys):
    assert cli.main(["package", "--run", str(members[0]), "--weights", "equal", "--no-wheels",
                     "--out", str(tmp_path / "b")]) == 2
    assert "--run: an ensemble needs two or more runs" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_kernel_blend_averages_the_members_with_the_stored_weights(tmp_path, test_csv):
    dataset = EnsembleDataset(tmp_path / "dataset")
    dataset.root.mkdir()
    dataset.ensemble.write_text(json.dumps({"members": [{"weight": 0.8}, {"weight": 0.2}]}))
    ids = data.load(test_csv)["id"].astype(str)
    rng = np.random.default_rng(0)
    probs = [rng.dirichlet(np.ones(3), len(ids)) for _ in range(2)]
    paths = []
    for k, p in enumerate(probs):
        frame = predict.prediction_frame(ids[::-1] if k else ids, p[::-1] if k else p)  # any row order
        paths.append(tmp_path / f"m{k}.csv")
        frame.to_csv(paths[-1], index=False)
    out = ensemble.blend_members(dataset.root, paths, test_csv, tmp_path / "submission.csv")
    blended = pd.read_csv(out, dtype={"id": str})
    assert list(blended["id"]) == list(ids)
    assert np.abs(blended[LABEL_COLUMNS].to_numpy() - (0.8 * probs[0] + 0.2 * probs[1])).max() < 1e-6
    with pytest.raises(UserError, match="1 file\\(s\\) for 2 ensemble members"):
        ensemble.blend_members(dataset.root, paths[:1], test_csv, tmp_path / "other.csv")
    assert not (tmp_path / "other.csv").exists()
    paths[0].unlink()  # member 0's predict failed in the kernel: the blend is member 1 alone, reweighted to 1
    out = ensemble.blend_members(dataset.root, paths, test_csv, tmp_path / "degraded.csv", left_out=[0])
    degraded = pd.read_csv(out, dtype={"id": str}).set_index("id").loc[list(ids), LABEL_COLUMNS].to_numpy()
    assert np.abs(degraded - probs[1]).max() < 1e-6
    with pytest.raises(UserError, match="every ensemble member is left out"):
        ensemble.blend_members(dataset.root, paths, test_csv, tmp_path / "none.csv", left_out=[0, 1])
    assert not (tmp_path / "none.csv").exists()


@pytest.mark.parametrize("odd_cell", ['[42, "text"]', '["a\\u0000b"]', '["lone \\ud800 surrogate"]'])
def test_kernel_blend_reads_odd_test_rows_as_predict_does(tmp_path, test_csv, odd_cell):
    """One odd hidden-test row (predict repairs it) must not cost the ensemble kernel its submission."""
    odd = test_csv.with_name("odd.csv")
    lines = test_csv.read_text(encoding="utf-8").splitlines()
    header = lines[0].split(",")
    frame = pd.read_csv(test_csv, dtype=str, keep_default_na=False)
    frame.loc[0, "response_a"] = odd_cell
    frame.to_csv(odd, index=False)
    assert header[0] == "id"
    with pytest.raises(data.DataError):
        data.load(odd)  # the strict reader refuses it
    dataset = EnsembleDataset(tmp_path / "dataset")
    dataset.root.mkdir()
    dataset.ensemble.write_text(json.dumps({"members": [{"weight": 0.5}, {"weight": 0.5}]}))
    ids = data.load_test(odd)["id"].astype(str)
    paths = []
    for k in range(2):
        paths.append(tmp_path / f"m{k}.csv")
        predict.prediction_frame(ids, np.full((len(ids), 3), 1 / 3)).to_csv(paths[-1], index=False)
    out = ensemble.blend_members(dataset.root, paths, odd, tmp_path / "submission.csv")
    assert list(pd.read_csv(out, dtype={"id": str})["id"]) == list(ids)


@pytest.mark.e2e
def test_rehearse_a_two_run_bundle_offline(members, tiny_model_dir, tmp_path, test_csv, no_credentials, capfd):
    out = ensemble.package_ensemble(members, tmp_path / "bundle", wheels=False, test_csv=test_csv)
    work = tmp_path / "work"
    submission = rehearsal.run_local(out, test_csv.parent, work_dir=work)
    frame = pd.read_csv(submission, dtype={"id": str})
    ids = data.load(test_csv)["id"].astype(str)
    data.validate_submission(frame, ids)
    # Each member as its own `arena predict` gives it (member 1 calibrated once, without TTA), then blended.
    weights = [m["weight"] for m in json.loads(Bundle(out).ensemble.read_text())["members"]]
    expected = 0
    for k, (run, weight) in enumerate(zip(members, weights)):
        path = predict.predict_file(run, test_csv, tmp_path / f"member-{k}.csv")
        expected = expected + weight * pd.read_csv(path, dtype={"id": str})[LABEL_COLUMNS].to_numpy()
    assert np.abs(frame[LABEL_COLUMNS].to_numpy() - expected).max() < 1e-4
    log = (work / "kernel.log").read_text()
    assert "--base-model " + str(work / "kaggle/input/models/someone/tiny-gemma2/transformers/default/1") in log
    assert "--base-model " + str(work / "kaggle/input/datasets/someone/tiny-llama/1") in log
    assert log.count("calibration applied") == 1
    assert "blended 2 members" in log and "rehearsal passed" in capfd.readouterr().out


@pytest.mark.e2e
def test_a_failing_member_leaves_a_valid_blend_of_the_others(members, tmp_path, test_csv, no_credentials, capfd):
    out = ensemble.package_ensemble(members, tmp_path / "bundle", wheels=False, test_csv=test_csv,
                                    weights="0.7,0.3")
    broken = Bundle(out).dataset.member(0)  # the kernel's copy: passes every check, then fails in its `arena predict`
    raw = config.load_run(broken).to_dict()
    raw["infer"]["max_length"] = 25  # the config allows it, but with the format's scaffold predict refuses it (exit 2)
    broken.config.unlink()
    config.dump(config.from_dict(raw), broken.config)
    work = tmp_path / "work"
    submission = rehearsal.run_local(out, test_csv.parent, work_dir=work)
    only = pd.read_csv(predict.predict_file(members[1], test_csv, tmp_path / "member-1.csv"), dtype={"id": str})
    frame = pd.read_csv(submission, dtype={"id": str})
    assert np.abs(frame[LABEL_COLUMNS].to_numpy() - only[LABEL_COLUMNS].to_numpy()).max() < 1e-4
    log = (work / "kernel.log").read_text()
    assert "kernel: WARNING: ensemble member 0" in log and "FAILED: it is left out of the blend" in log
    assert "LEFT OUT of the blend: members 1 reweighted from 0.300 to 1.000" in log
    assert "blended 1 members (of 2)" in log


# ---- a second model on the hardest rows (arena.kaggle.gates) ---------------------------------------------


def test_a_gate_picks_the_least_certain_rows_of_the_members_before_it_and_the_weights_are_fit_there():
    from arena.kaggle import gates

    rng = np.random.default_rng(0)
    n = 400
    truth = np.eye(2)[rng.integers(0, 2, n)]
    sure = rng.random(n) < 0.6  # member 0 is right and confident on these rows, a coin toss elsewhere
    first = np.where(sure[:, None], 0.9 * truth + 0.05, 0.5)
    second = 0.8 * truth + 0.1  # member 1 knows every row: it helps only where member 0 is unsure
    gated = [None, gates.Gate(top=0.4)]
    scored = gates.gated_scored([first, second], [0.5, 0.5], gated)
    assert scored[0].all() and scored[1].sum() == 160 and not (scored[1] & sure).any()  # the 40 % least certain
    weights = gates.fit_gated_weights([first, second], truth, gated)
    blended = gates.blend([first, second], weights, gates.gated_scored([first, second], weights, gated))
    np.testing.assert_allclose(blended[sure], first[sure])  # rows outside the gate: the members before it
    assert metrics.log_loss(truth, blended) < metrics.log_loss(truth, first)
    assert weights[1] > 0.9  # fit on the gated rows, where member 1 is the better one
    below = gates.Gate(below=0.6).rows(np.array([[0.55, 0.45], [0.9, 0.1], [np.nan, np.nan]]))
    assert below.tolist() == [True, False, True]  # a row no member before it scored is admitted


def test_gated_weights_are_fit_on_the_held_out_rows_the_gate_admits(members, tmp_path, no_credentials, capsys):
    from arena.kaggle import gates

    out = ensemble.package_ensemble(members, tmp_path / "bundle", wheels=False, gate=["2=below:0.5"])
    stored = json.loads(Bundle(out).ensemble.read_text())
    assert [m["gate"] for m in stored["members"]] == [None, {"below": 0.5}]
    raw0, truth = _val(members[0])
    calibrated1 = CALIBRATION.apply(_val(members[1])[0])
    weights = [m["weight"] for m in stored["members"]]
    scored = gates.gated_scored([raw0, calibrated1], weights, [None, gates.Gate(below=0.5)])
    assert stored["fit"]["gated_rows"] == [len(truth), int(scored[1].sum())]
    assert 0 < scored[1].sum() < len(truth)
    blended = gates.blend([raw0, calibrated1], weights, scored)
    assert stored["fit"]["blend_log_loss"] == pytest.approx(metrics.log_loss(truth, blended))
    assert "member 2 (" in capsys.readouterr().out


@pytest.mark.parametrize("spec, said", [("1=top:35%", "member 1 is not one of --run 2 to 2"),
                                        ("2=top:135%", "K must be in (0, 100]"),
                                        ("2=top:35", "expected MEMBER=top:K%"),
                                        ("2=below:1.5", "P must be in (0, 1]")])
def test_a_bad_gate_exits_2_naming_the_flag(members, tmp_path, no_credentials, capsys, spec, said):
    code = cli.main(["package", "--run", str(members[0]), "--run", str(members[1]), "--gate", spec, "--no-wheels",
                     "--out", str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert code == 2 and f"--gate {spec}: {said}" in err
    assert not (tmp_path / "b").exists()


def test_kernel_blend_of_a_gated_member_scoring_some_rows(tmp_path, test_csv):
    dataset = EnsembleDataset(tmp_path / "dataset")
    dataset.root.mkdir()
    dataset.ensemble.write_text(json.dumps({"members": [{"weight": 0.4}, {"weight": 0.6, "gate": {"top": 0.25}}]}))
    ids = data.load(test_csv)["id"].astype(str)
    rng = np.random.default_rng(1)
    probs = [rng.dirichlet(np.ones(3), len(ids)) for _ in range(2)]
    predict.prediction_frame(ids, probs[0]).to_csv(tmp_path / "m0.csv", index=False)
    predict.prediction_frame(ids[:3], probs[1][:3]).to_csv(tmp_path / "m1.csv", index=False)  # the rows it scored
    out = ensemble.blend_members(dataset.root, [tmp_path / "m0.csv", tmp_path / "m1.csv"], test_csv,
                                 tmp_path / "submission.csv")
    blended = pd.read_csv(out, dtype={"id": str})[LABEL_COLUMNS].to_numpy()
    np.testing.assert_allclose(blended[:3], 0.4 * probs[0][:3] + 0.6 * probs[1][:3], atol=1e-6)
    np.testing.assert_allclose(blended[3:], probs[0][3:], atol=1e-6)
    with pytest.raises(UserError, match="no ensemble member scored 9 row"):  # member 0 failed: 9 rows have nothing
        ensemble.blend_members(dataset.root, [tmp_path / "m0.csv", tmp_path / "m1.csv"], test_csv,
                               tmp_path / "none.csv", left_out=[0])
    assert not (tmp_path / "none.csv").exists()


@pytest.fixture
def llama_run(tmp_path):
    """The tiny run's recipe trained on a tiny random Llama: a member of another model family."""
    from arena import train
    from tests.tiny import save_tiny_model

    model = save_tiny_model(tmp_path / "tiny-llama", "llama")
    csv = tmp_path / "train.csv"
    data.write_csv(data.generate_sample(60, seed=2), csv)  # the tiny run's rows: the same held-out rows
    cfg = config.from_dict({
        "name": "tiny-llama", "model": {"path": str(model), "family": "plain"},
        "prompt": {"max_length": 96, "min_tokens": 8}, "infer": {"max_length": 128, "max_batch_tokens": 512},
        "data": {"train": str(csv), "folds": 3}, "kaggle": LLAMA,
        "train": {"runs_dir": str(tmp_path / "runs"), "max_steps": 3, "eval_steps": 3, "per_device_batch_size": 4,
                  "grad_accum": 1, "learning_rate": 1e-3}})
    return Path(train.train(cfg))


@pytest.mark.e2e
def test_rehearse_a_gated_second_model_of_another_family(tiny_run, llama_run, tmp_path, test_csv, no_credentials,
                                                         monkeypatch):
    """Gemma-2 on every row, a Llama on the half its blend is least sure of, rehearsed in the Kaggle twin (the
    bundle's real wheelhouse on the image's versions): the kernel predicts that half with the Llama and each row
    takes the blend of the members that scored it."""
    monkeypatch.setenv("ARENA_CACHE", REAL_CACHE)  # the twin is built once per machine (make test-caches)
    gemma = _member(tiny_run, tmp_path / "runs" / "gemma", GEMMA)
    out = ensemble.package_ensemble([gemma, llama_run], tmp_path / "bundle", test_csv=test_csv,
                                    weights="0.5,0.5", gate=["2=top:50%"])  # a tiny Llama's fit weight can be 0
    assert json.loads(Bundle(out).ensemble.read_text())["members"][1]["gate"] == {"top": 0.5}
    work = tmp_path / "work"
    frame = pd.read_csv(rehearsal.run_local(out, test_csv.parent, work_dir=work), dtype={"id": str})
    ids = data.load(test_csv)["id"].astype(str)
    first = pd.read_csv(predict.predict_file(gemma, test_csv, tmp_path / "m0.csv"), dtype={"id": str})
    first = first.set_index("id").loc[list(ids), LABEL_COLUMNS].to_numpy()
    from arena.kaggle import gates

    # the gate as the kernel applied it: on member 0's plain-order predictions
    plain = pd.read_csv(predict.predict_file(gemma, test_csv, tmp_path / "p0.csv", tta=False), dtype={"id": str})
    admitted = gates.Gate(top=0.5).rows(plain.set_index("id").loc[list(ids), LABEL_COLUMNS].to_numpy())
    got = frame.set_index("id").loc[list(ids), LABEL_COLUMNS].to_numpy()
    np.testing.assert_allclose(got[~admitted], first[~admitted], atol=1e-4)  # outside the gate: member 0 alone
    assert np.abs(got[admitted] - first[admitted]).max() > 1e-4  # inside it: blended with the Llama
    log = (work / "kernel.log").read_text()
    assert "transformers==5.23.0" in log  # installed from the bundle's wheelhouse into the twin's venv
    assert f"it predicts {int(admitted.sum())} of {len(ids)} rows" in log
    assert f"scored {int(admitted.sum())} of {len(ids)} rows" in log


def test_a_gated_members_rows_are_written_even_from_a_test_file_with_undecodable_bytes(tmp_path):
    from arena.kaggle.kernel_predict import gate_file

    test = tmp_path / "test.csv"
    data.write_csv(data.generate_sample(4, seed=3).drop(columns=["winner_model_a", "winner_model_b", "winner_tie"]),
                   test)
    raw = test.read_bytes()
    test.write_bytes(raw.replace(b'"]', b'\xff"]', 1))  # one byte no UTF-8 reader decodes, in the first text cell
    ids = data.load_test(test)["id"].astype(str).tolist()
    written = gate_file(test, ids[1:3], tmp_path / "member-rows")
    assert written.suffix == ".csv" and data.load_test(written)["id"].astype(str).tolist() == ids[1:3]


def test_a_gated_member_without_kept_logits_blends_every_row_it_wrote(tmp_path, capsys):
    from arena.kaggle.kernel_predict import scored

    written = tmp_path / "member.csv"
    predict.prediction_frame(["a", "b"], np.array([[0.5, 0.3, 0.2], [0.2, 0.3, 0.5]])).to_csv(written, index=False)
    assert scored(written, tmp_path / "member.csv", True) == written  # no member.npz beside it
    assert "no kept logits" in capsys.readouterr().out
