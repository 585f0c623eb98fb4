from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from arena import cli, config, data, predict
from arena import model as model_mod
from arena.inference import batching
from arena.layout import RunFolder
from arena.task import THREE_WAY
from tests.tiny import tiny_cfg

LABEL_COLUMNS = THREE_WAY.label_columns


def test_sorted_batches_cover_every_row_once_within_budget():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 200, size=300).tolist()
    batches = predict.sorted_batches(lengths, max_batch_tokens=1000, max_batch_size=16)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(300))
    for b in batches:
        assert len(b) <= 16
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 1000


def test_sorted_batching_pads_far_less_than_fixed_length():
    lengths = [10, 200, 15, 190, 12, 180, 11, 205] * 10
    stats = predict.padding_stats(lengths, predict.sorted_batches(lengths, 4096, 4), fixed_length=256)
    assert stats["sorted_padding_fraction"] < 0.05 < stats["fixed_padding_fraction"]
    assert stats["padded_tokens_fixed_over_sorted"] > 10


def test_tta_swaps_back_before_averaging():
    logits = np.array([[2.0, 0.0, 0.0]])
    swapped = np.array([[0.0, 2.0, 0.0]])  # the same belief seen from the B/A order: A is still better
    for how in ("prob", "logit"):
        probs = predict.combine_tta(logits, swapped, how)
        np.testing.assert_allclose(probs, predict.softmax(logits), atol=1e-12)
    disagree = predict.combine_tta(np.array([[2.0, 0.0, 0.0]]), np.array([[2.0, 0.0, 0.0]]), "prob")
    np.testing.assert_allclose(disagree[0, 0], disagree[0, 1])


def test_write_submission_validates_before_writing(tmp_path):
    ids = pd.Series(["1", "2"])
    good = predict.prediction_frame(ids, np.array([[0.2, 0.3, 0.5], [0.6, 0.2, 0.2]]))
    path = predict.write_submission(good, ids, tmp_path / "sub.csv")
    assert list(pd.read_csv(path).columns) == ["id", *LABEL_COLUMNS]
    with pytest.raises(predict.UserError, match="already exists"):
        predict.write_submission(good, ids, path)
    bad = predict.prediction_frame(pd.Series(["1", "3"]), np.array([[0.2, 0.3, 0.5], [0.6, 0.2, 0.2]]))
    with pytest.raises(predict.UserError):
        predict.write_submission(bad, ids, tmp_path / "bad.csv")
    assert not (tmp_path / "bad.csv").exists()
    nan = predict.prediction_frame(ids, np.array([[np.nan, 0.3, 0.5], [0.6, 0.2, 0.2]]))
    with pytest.raises(predict.UserError):
        predict.write_submission(nan, ids, tmp_path / "nan.csv")
    assert not (tmp_path / "nan.csv").exists()


@pytest.fixture(scope="module")
def labelled_csv(tmp_path_factory):
    """Generated rows with labels (a clone without ../shared still runs every predict test)."""
    path = tmp_path_factory.mktemp("labelled") / "labelled.csv"
    data.write_csv(data.generate_sample(24, seed=7), path)
    return path


@pytest.fixture(scope="module")
def test_csv(labelled_csv, tmp_path_factory):
    """The same rows as the competition's test.csv: id, prompt, response_a, response_b."""
    path = tmp_path_factory.mktemp("test-csv") / "test.csv"
    data.write_csv(data.load(labelled_csv).drop(columns=LABEL_COLUMNS), path)
    return path


def test_predict_real_rows(tiny_run, shared_data, tmp_path):
    """Real, messy rows (markdown, code, non-ASCII, JSON `true` turns) go through the same path."""
    df = pd.read_csv(shared_data / "pandalm_human.csv", dtype=str, keep_default_na=False).head(40)
    path = tmp_path / "real.csv"
    df[["id", "prompt", "response_a", "response_b"]].to_csv(path, index=False)
    sub = pd.read_csv(predict.predict_file(tiny_run, path, tmp_path / "sub.csv", tta=True), dtype={"id": str})
    assert sub["id"].tolist() == df["id"].tolist()


def test_predict_file_writes_a_valid_submission_in_input_order(tiny_run, test_csv, tmp_path, capsys):
    out = predict.predict_file(tiny_run, test_csv, tmp_path / "sub.csv", tta=True)
    sub = pd.read_csv(out, dtype={"id": str})
    assert sub["id"].tolist() == pd.read_csv(test_csv, dtype={"id": str})["id"].tolist()
    data.validate_submission(sub, sub["id"])
    assert "swap TTA on" in capsys.readouterr().out


def test_tta_is_the_average_of_both_orders_and_sorting_does_not_change_results(tiny_run, test_csv, tmp_path):
    from arena import model as model_mod

    run = RunFolder(tiny_run)
    cfg = config.load_run(run)
    model, tokenizer, rt = model_mod.load_trained(cfg, run)
    df = data.load(test_csv)
    scaler = model_mod.read_head(run)["feature_scaler"]
    assert scaler is not None
    res = predict.predict_frame(model, tokenizer, df, cfg, rt, tta=True, max_length=cfg.infer.max_length,
                                feature_scaler=scaler)
    np.testing.assert_allclose(res["probs"], (res["probs_plain"] + res["probs_swapped"]) / 2, atol=1e-6)
    # batch of one row at a time (no sorting, no padding) gives the same logits as sorted dynamic batches
    one_by_one = config.from_dict(cfg.to_dict(), ["infer.max_batch_size=1"])
    single = predict.predict_frame(model, tokenizer, df, one_by_one, rt, tta=False, max_length=cfg.infer.max_length,
                                   feature_scaler=scaler)
    np.testing.assert_allclose(single["logits"], res["logits"], atol=1e-4)
    plain = predict.predict_file(tiny_run, test_csv, tmp_path / "plain.csv", tta=False)
    np.testing.assert_allclose(pd.read_csv(plain)[LABEL_COLUMNS].to_numpy(), res["probs_plain"], atol=1e-5)


def test_predict_default_output_goes_inside_the_run_and_never_overwrites(tiny_run, test_csv):
    first = predict.predict_file(tiny_run, test_csv, tta=False)
    assert first.parent == tiny_run / "predictions"
    with pytest.raises(predict.UserError, match="already exists"):
        predict.predict_file(tiny_run, test_csv, first, tta=False)


def test_blend_weights_prefer_the_better_model(tmp_path):
    rng = np.random.default_rng(0)
    n = 400
    y = rng.integers(0, 3, n)
    truth = np.eye(3)[y]
    good = 0.7 * truth + 0.3 * rng.dirichlet([1, 1, 1], n)
    bad = rng.dirichlet([1, 1, 1], n)
    paths = []
    for name, probs in (("good", good), ("bad", bad)):
        oof = predict.prediction_frame([str(i) for i in range(n)], probs)
        for j, col in enumerate(LABEL_COLUMNS):
            oof[f"true_{col}"] = truth[:, j]
        oof.to_csv(tmp_path / f"{name}_oof.csv", index=False)
        predict.prediction_frame(["a", "b"], probs[:2]).to_csv(tmp_path / f"{name}_test.csv", index=False)
        paths.append(name)
    weights = predict.fit_blend_weights([good, bad], truth)
    assert weights[0] > 0.8 and weights.sum() == pytest.approx(1)
    out = predict.blend_files([str(tmp_path / f"{p}_oof.csv") for p in paths],
                              [str(tmp_path / f"{p}_test.csv") for p in paths], str(tmp_path / "blend.csv"))
    assert pd.read_csv(out, dtype={"id": str})["id"].tolist() == ["a", "b"]


def test_cli_predict_and_score_round_trip(tiny_run, labelled_csv, test_csv, tmp_path, capsys):
    from arena.cli import main

    out = tmp_path / "cli.csv"
    assert main(["predict", "--run", str(tiny_run), "--data", str(test_csv), "--out", str(out), "--no-tta"]) == 0
    assert main(["score", "--pred", str(out), "--truth", str(labelled_csv)]) == 0
    assert "log_loss" in capsys.readouterr().out
    assert main(["predict", "--run", str(tmp_path), "--data", str(test_csv)]) == 2


def odd_test_csv(work: Path) -> Path:
    """A test CSV (no labels) whose rows hold what the hidden test may: a number and an object as turns, a bare
    string, a lone surrogate, a NUL escape and bytes that are not UTF-8."""
    rows = [b'id,prompt,response_a,response_b',
            b'1,"[""hi""]","[5]","[""b""]"',
            b'2,"[""hi""]","[{""text"": ""a""}]","7"',
            b'3,"[""cut \\ud83d""]","[""a\\u0000""]","[""b""]"',
            b'4,"[""caf\xe9""]","[""a""]","[""b\xff""]"']
    path = work / "inputs" / "odd.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\n".join(rows) + b"\n")
    return path


def test_predict_repairs_odd_test_rows_counts_them_and_writes_a_valid_submission(work, tiny_run, capsys):

    test_csv = odd_test_csv(work)
    with pytest.raises(data.DataError):  # strict for training and validation data
        data.load(test_csv)
    out = work / "out" / "sub.csv"
    assert cli.main(["predict", "--run", str(tiny_run), "--data", str(test_csv), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert (f"{test_csv}: repaired for prediction: 1 NUL characters dropped, 1 cells that are not a JSON list read "
            f"as one turn, 1 lone surrogates replaced by U+FFFD, 3 turns that are not strings taken as their text, "
            f"2 undecodable bytes replaced by U+FFFD") in err
    data.validate_submission(data.read_columns(out, "submission"), ["1", "2", "3", "4"])
    repaired = data.load_test(test_csv)
    assert repaired.loc[0, "response_a"] == ["5"] and repaired.loc[1, "response_a"] == ['{"text": "a"}']
    assert repaired.loc[2, "prompt"] == ["cut \ufffd"] and repaired.loc[3, "prompt"] == ["caf\ufffd"]


def test_every_inference_forward_runs_in_the_autocast_of_the_compute_dtype(tiny_model_dir, monkeypatch):
    cfg = tiny_cfg(tiny_model_dir, model={"quantization": "none", "length_features": False, "device": "cpu",
                                          "compute_dtype": "bfloat16"})
    model = model_mod.load_base(cfg, model_mod.runtime_for(cfg), None, 0).eval()
    entered, real = [], model_mod.autocast

    def recording(device, dtype):
        entered.append((device, dtype))
        return real(device, dtype)

    monkeypatch.setattr(batching, "autocast", recording)  # where the forward looks it up
    ids = [[5, 6, 7], [8, 9, 10, 11]]
    predict.logits_for_batches(model, ids, 0, "cpu", [[0, 1]])
    assert entered == [("cpu", torch.bfloat16)]


def test_rows_with_non_finite_logits_are_named(tiny_model_dir, capsys):
    cfg = tiny_cfg(tiny_model_dir, model={"quantization": "none", "length_features": False, "device": "cpu"})
    model = model_mod.load_base(cfg, model_mod.runtime_for(cfg), None, 0).eval()
    with torch.no_grad():
        model.model.get_input_embeddings().weight[7].fill_(float("nan"))  # token 7 overflows, as fp16 would
    out = predict.logits_for_batches(model, [[5, 6], [5, 7], [8, 9], [7]], 0, "cpu", [[0], [1], [2], [3]])
    assert np.isfinite(out[[0, 2]]).all() and not np.isfinite(out[[1, 3]]).all()
    err = capsys.readouterr().err
    assert "2 of 4 rows have non-finite logits (rows 1, 3)" in err and "model.compute_dtype=float32" in err
