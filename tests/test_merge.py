"""`arena merge`: runs' LoRA adapters merged into the float32 base and averaged; the folder predicts like the run,
loads at every quantization, packs into a bundle the kernel rehearsal runs, and bad input exits 2 writing nothing."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file

from arena import cli, config, data, merge, predict, train
from arena.layout import RunFolder
from arena.task import THREE_WAY

LABEL_COLUMNS = THREE_WAY.label_columns

# Merged weights are W + B A * scaling computed once in float32; the adapter path computes x W + (x A) B * scaling
# at every call: the two orders of the same float32 arithmetic differ by rounding only.
LOGIT_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def second_run(tiny_run, tmp_path_factory):
    """Another run of the tiny run's recipe, from another seed: a second 'fold model'."""
    cfg = config.load(RunFolder(tiny_run).config, ["seed=7", f"train.runs_dir={tmp_path_factory.mktemp('runs2')}",
                                                   "train.learning_rate=0.01"])
    return train.train(cfg)


@pytest.fixture(scope="module")
def merged(tiny_run, second_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("merged")
    return {"one": merge.merge_runs([tiny_run], out / "one"),
            "copies": merge.merge_runs([tiny_run, tiny_run], out / "copies"),
            "second": merge.merge_runs([second_run], out / "second"),
            "both": merge.merge_runs([tiny_run, second_run], out / "both")}


def probabilities(run_dir, csv, out, quantization="none") -> np.ndarray:
    path = predict.predict_file(run_dir, csv, out, tta=False, overrides=[f"infer.quantization={quantization}"])
    return pd.read_csv(path, dtype={"id": str})[LABEL_COLUMNS].to_numpy()


def test_one_merged_run_predicts_as_its_adapter_in_float32(tiny_run, merged, test_csv, tmp_path):
    adapter = probabilities(tiny_run, test_csv, tmp_path / "adapter.csv")
    one = probabilities(merged["one"], test_csv, tmp_path / "one.csv")
    copies = probabilities(merged["copies"], test_csv, tmp_path / "copies.csv")
    logit = np.log(adapter)
    assert np.abs(np.log(one) - logit - (np.log(one) - logit).mean(1, keepdims=True)).max() < LOGIT_TOLERANCE
    np.testing.assert_allclose(copies, one, atol=1e-5)  # two copies of a run average to that run


def test_merging_two_runs_averages_their_deltas_and_heads(merged, tiny_run, second_run):
    weights = {name: load_file(RunFolder(folder).adapter / "model.safetensors") for name, folder in merged.items()}
    changed = [k for k in weights["one"] if not torch.equal(weights["one"][k], weights["second"][k])]
    assert changed and all("proj" in k for k in changed)  # only the LoRA-targeted projections moved
    for key in changed:
        torch.testing.assert_close(weights["both"][key], (weights["one"][key] + weights["second"][key]) / 2,
                                   rtol=0, atol=1e-6)
    heads = {name: load_file(RunFolder(folder).merged_head) for name, folder in merged.items()}
    torch.testing.assert_close(heads["both"]["proj.weight"], (heads["one"]["proj.weight"] + heads["second"]["proj.weight"]) / 2)


def test_heads_on_different_feature_scalings_average_their_logits():
    rng = np.random.default_rng(0)
    heads, scalers = [], []
    for _ in range(2):
        heads.append({"proj.weight": torch.randn(3, 4), "proj.bias": torch.randn(3), "features.weight": torch.randn(3, 2)})
        scalers.append({"names": ["a", "b"], "mean": rng.normal(size=2).tolist(), "std": rng.uniform(0.5, 2, 2).tolist()})
    head, scaler = merge.average_heads(heads, scalers)
    x = torch.tensor(rng.normal(size=(5, 2)), dtype=torch.float32)

    def logits(h, s):
        z = (x - torch.tensor(s["mean"], dtype=torch.float32)) / torch.tensor(s["std"], dtype=torch.float32)
        return z @ h["features.weight"].T + h["proj.bias"]

    torch.testing.assert_close(logits(head, scaler), (logits(heads[0], scalers[0]) + logits(heads[1], scalers[1])) / 2,
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("quantization", ["nf4", "int8"])
def test_a_merged_folder_loads_quantized_and_predicts(merged, test_csv, tmp_path, quantization):
    probs = probabilities(merged["both"], test_csv, tmp_path / "q.csv", quantization)
    full = probabilities(merged["both"], test_csv, tmp_path / "full.csv")
    assert np.allclose(probs.sum(1), 1, atol=1e-3) and np.abs(probs - full).max() < 0.2


def run_copy(run, tmp_path, name, **changes) -> str:
    target = tmp_path / name
    shutil.copytree(run, target)
    cfg = yaml.safe_load((target / "config.yaml").read_text())
    for key, value in changes.items():
        section, field = key.split("__")
        cfg[section][field] = value
    (target / "config.yaml").write_text(yaml.safe_dump(cfg))
    return str(target)


def test_bad_merges_exit_2_naming_the_run_and_write_nothing(tiny_run, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("arena.model.load_base", lambda *a, **k: pytest.fail("a model was loaded"))
    tuned = run_copy(tiny_run, tmp_path, "tuned", peft__method="prompt_tuning")
    other = run_copy(tiny_run, tmp_path, "other", model__path=str(tmp_path / "another-base"))
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("")
    cases = [([tuned], "only LoRA adapters merge"), ([str(tiny_run), other], "merged runs share one base model"),
             ([str(tmp_path / "missing")], "not a run folder")]
    for runs, needle in cases:
        out = tmp_path / "out"
        argv = ["merge", *sum((["--run", r] for r in runs), []), "--out", str(out)]
        assert cli.main(argv) == 2
        assert needle in capsys.readouterr().err and not out.exists()
    assert cli.main(["merge", "--run", str(tiny_run), "--out", str(tmp_path / "taken")]) == 2
    assert "taken" in capsys.readouterr().err and sorted(p.name for p in (tmp_path / "taken").iterdir()) == ["x"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def without_head_bias(run, tmp_path, name) -> str:
    """A copy of a run whose head was trained without a bias (model.head_init zero): head.json and weights agree."""
    from safetensors.torch import save_file

    target = Path(run_copy(run, tmp_path, name, model__head_init="zero"))
    weights = target / "adapter" / "adapter_model.safetensors"
    save_file({k: v for k, v in load_file(weights).items() if not k.endswith(".score.proj.bias")}, weights)
    head = json.loads((target / "adapter" / "head.json").read_text())
    (target / "adapter" / "head.json").write_text(json.dumps({**head, "bias": False}))
    return str(target)


def test_runs_whose_heads_differ_are_refused_either_way_round(tiny_run, tmp_path, capsys, monkeypatch):
    """A KeyError one way (the first head has a bias, the second none), a silently dropped bias the other."""
    monkeypatch.setattr("arena.model.load_base", lambda *a, **k: pytest.fail("a model was loaded"))
    unbiased = without_head_bias(tiny_run, tmp_path, "unbiased")
    for runs in ([str(tiny_run), unbiased], [unbiased, str(tiny_run)]):
        argv = ["merge", *sum((["--run", r] for r in runs), []), "--out", str(tmp_path / "out")]
        assert cli.main(argv) == 2
        assert "the head's bias" in capsys.readouterr().err and not (tmp_path / "out").exists()


@pytest.mark.e2e
def test_a_merged_folder_passes_the_kernel_rehearsal(merged, test_csv, tmp_path, no_credentials, capfd):
    from arena.kaggle import bundle, rehearsal

    test = tmp_path / "input" / "test.csv"
    test.parent.mkdir()
    shutil.copyfile(test_csv, test)
    out = bundle.package(merged["both"], tmp_path / "bundle", wheels=False, test_csv=test)
    submission = rehearsal.run_local(out, test.parent, work_dir=tmp_path / "work")
    frame = pd.read_csv(submission, dtype={"id": str})
    data.validate_submission(frame, data.load(test)["id"].astype(str))
    log = (tmp_path / "work" / "kernel.log").read_text()
    assert "--base-model" not in log and "rehearsal passed" in capfd.readouterr().out
