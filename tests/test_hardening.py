"""Hostile but realistic inputs. Each probe stops before any work with exit 2 and a message naming what is
wrong and where (the file, row id and column, or the config key and where its value came from), and writes
nothing. Interrupts exit 130/143 without a partial file; training survives a kill during a checkpoint save."""

import csv
import gzip
import io
import json
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from transformers import TrainerCallback

from arena import cli, config, data, predict, train
from arena.errors import UserError
from arena.kaggle import rehearsal
from arena.labels import LABEL_COLUMNS
from arena.layout import RunFolder
from arena.writes import atomic_file, atomic_folder
from tests.tiny import StopAfterCheckpoint, tiny_train_cfg


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture
def work(tmp_path, monkeypatch):
    """An empty working folder (the current directory), with no Kaggle credentials anywhere."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "home" / "kaggle"))
    for var in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def write_csv_text(path: Path, header: list[str], rows: list[list]) -> Path:
    frame = pd.DataFrame(rows, columns=header)
    frame.to_csv(path, index=False)
    return path


def turns_csv(path: Path, bad_response_a: str, long_first_row: bool = False) -> Path:
    """One good row and one row whose response_a is `bad_response_a` (raw JSON text); with `long_first_row` the
    good row is 100 KiB long, so that the bad row lies past the first 64 KiB of the file."""
    header = ["id", "prompt", "response_a", "response_b", *LABEL_COLUMNS]
    first = json.dumps(["x" * 100_000 if long_first_row else "a"])
    return write_csv_text(path, header, [["r1", '["hi"]', first, '["b"]', 1, 0, 0],
                                         ["r2", '["hi"]', bad_response_a, '["b"]', 0, 1, 0]])


def text_argv(work: Path, command: str, raw: str) -> list[str]:
    """`arena data validate` of a two-row CSV whose row r2 has `raw` as response_a, or `arena train` on the
    generated sample with that row inserted as its second line."""
    if command == "validate":
        return ["data", "validate", str(turns_csv(work / "t.csv", raw))]
    good = labelled_csv(work)
    header, first, rest = good.read_text(encoding="utf-8").split("\n", 2)
    bad = dict.fromkeys(header.split(","), "")
    bad.update({"id": "r2", "prompt": '["hi"]', "response_a": raw, "response_b": '["b"]',
                "winner_model_a": "1", "winner_model_b": "0", "winner_tie": "0"})
    line = io.StringIO()
    csv.writer(line, lineterminator="\n").writerow(bad.values())
    good.write_text(f"{header}\n{first}\n{line.getvalue()}{rest}", encoding="utf-8")
    return ["train", "--set", f"data.train={good}", "--set", f"train.runs_dir={work / 'out' / 'runs'}"]


def utf16(work: Path) -> Path:
    path = work / "test.csv"
    path.write_bytes("id,prompt,response_a,response_b\n1,[],[],[]\n".encode("utf-16"))
    return path


def labels_spelled(work: Path, label: str) -> Path:
    header = ["id", "prompt", "response_a", "response_b", *LABEL_COLUMNS]
    return write_csv_text(work / "truth.csv", header, [["r1", '["hi"]', '["a"]', '["b"]', 1, 0, 0],
                                                       ["r2", '["hi"]', '["a"]', '["b"]', label, 0, 0]])


def bytes_csv(path: Path, raw: bytes) -> Path:
    path.write_bytes(raw)
    return path


def make_test_csv(work: Path) -> Path:
    path = work / "inputs" / "test.csv"
    data.write_csv(data.generate_sample(8, seed=5).drop(columns=LABEL_COLUMNS), path)
    return path


def run_copy(work: Path, tiny_run: Path, damage=lambda run: None) -> Path:
    """A copy of the tiny run, packable (its config says where the kernel finds the base model), then damaged."""
    run = RunFolder(work / "inputs" / "run")
    shutil.copytree(tiny_run, run.root, ignore=shutil.ignore_patterns("checkpoints", "predictions", "config.yaml"))
    config.dump(config.load(RunFolder(tiny_run).config, ["kaggle.base_model_kernel_path=/kaggle/input/tiny/1",
                                                         "kaggle.base_model_source=someone/tiny/1"]), run.config)
    damage(run)
    return run.root


def truncate(path: Path, keep: int | None = None) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2 if keep is None else keep])


# ---- the probe table --------------------------------------------------------------------------------
# Each probe: (id, setup(work, tiny_run) -> argv, what the error names). Every probe exits 2 and writes nothing.

CONFIG_PROBES = [
    ("negative learning rate", lambda w, r: ["train", "--set", "train.learning_rate=-1"],
     ["--set: train.learning_rate: -1.0 must be above 0"]),
    ("epochs 0", lambda w, r: ["train", "--set", "train.epochs=0"], ["train.epochs: 0.0 must be above 0"]),
    ("max_steps 0", lambda w, r: ["train", "--set", "train.max_steps=0"], ["--set: train.max_steps: 0 trains nothing"]),
    ("epochs nan", lambda w, r: ["train", "--set", "train.epochs=.nan"], ["train.epochs: nan is not a finite number"]),
    ("max_length 0", lambda w, r: ["train", "--set", "prompt.max_length=0"], ["prompt.max_length: 0 must be at least 1"]),
    ("max_length 10", lambda w, r: ["train", "--set", "prompt.max_length=10"],
     ["prompt.max_length: 10 cannot hold 3 parts", "needs at least 48"]),
    ("batch size 0, r 0, dropout 2, share 1.5, name ../x: every problem at once",
     lambda w, r: ["train", "--set", "train.per_device_batch_size=0", "--set", "peft.r=0", "--set", "peft.dropout=2",
                   "--set", "prompt.prompt_share=1.5", "--set", "name=../x"],
     ["train.per_device_batch_size: 0 must be at least 1", "peft.r: 0 must be at least 1",
      "peft.dropout: 2.0 must be below 1", "prompt.prompt_share: 1.5 must be at most 1", "name: '../x' is not a folder"]),
    ("a --set error is blamed on --set, not the file",
     lambda w, r: ["train", "--config", str(config.DEFAULT_CONFIG), "--set", "peft.r=0"], ["--set: peft.r"]),
    ("a YAML error is blamed on the file",
     lambda w, r: ["train", "--config", str(write_yaml(w, "peft:\n  r: 0\n"))], ["bad.yaml: peft.r: 0 must be at least 1"]),
    ("config file with invalid bytes",
     lambda w, r: ["train", "--config", str(write_yaml(w, b"name: caf\xe9\n"))], ["bad.yaml: not valid UTF-8 (byte 0xe9"]),
    ("unknown optimizer", lambda w, r: ["train", "--set", "train.optim=adam_fast", "--set", f"data.train={make_test_csv(w)}"],
     ["train.optim: 'adam_fast' is not an optimizer"]),
    ("runs folder under a file",
     lambda w, r: ["train", "--set", f"train.runs_dir={touch(w / 'inputs' / 'afile')}/runs", "--set",
                   f"data.train={labelled_csv(w)}"], ["afile is a file, not a folder"]),
    ("layers the base model does not have", lambda w, r: ["train", "--set", f"model.path={tiny_base(r)}", "--set",
                                                         f"data.train={labelled_csv(w)}"],
     ["peft.layers_to_transform: layer(s) [9, 10, 11, 12, 13, 14, 15, 16, 17] do not exist", "has 2 layers (0-1)"]),
    ("a target module the base model does not have",
     lambda w, r: ["train", "--set", f"model.path={tiny_base(r)}", "--set", "peft.layers_to_transform=null", "--set",
                   "peft.target_modules=[q_proj, qkv_proj]", "--set", f"data.train={labelled_csv(w)}"],
     ["peft.target_modules: ['qkv_proj'] are not linear layers of"]),
    ("an empty recipe", lambda w, r: ["train", "--config", str(write_yaml(w, "# nothing yet\n"))],
     ["bad.yaml: an empty recipe (no keys)"]),
    ("a recipe of an empty mapping", lambda w, r: ["plan", "--config", str(write_yaml(w, "{}\n"))],
     ["bad.yaml: an empty recipe (no keys)"]),
    ("a bare on/off is read as the choice, not as YAML's true/false",
     lambda w, r: ["train", "--set", "model.gradient_checkpointing=on", "--set", "train.epochs=0"],
     ["train.epochs: 0.0 must be above 0"]),
    ("a --set typo gets the nearest key", lambda w, r: ["train", "--set", "train.lerning_rate=1e-4"],
     ["--set: unknown key 'train.lerning_rate' (did you mean train.learning_rate"]),
    ("a --set typo in a section", lambda w, r: ["train", "--set", "promt.max_length=512"],
     ["unknown key 'promt' (did you mean prompt.max_length"]),
    ("a YAML typo gets the nearest key too", lambda w, r: ["train", "--config", str(write_yaml(w, "peft:\n  rr: 8\n"))],
     ["bad.yaml: unknown key 'peft.rr' (did you mean peft.r?)"]),
    ("prompt.max_length beyond the model's positions (read from its config.json)",
     lambda w, r: ["train", "--set", f"model.path={tiny_base(r)}", "--set", "prompt.max_length=1000000000",
                   "--set", f"data.train={labelled_csv(w)}"],
     ["--set: prompt.max_length: 1000000000 is more than the 2048 positions the base model has",
      "max_position_embeddings in", "config.json"]),
    ("predict --set infer.max_length beyond the model's positions",
     lambda w, r: predict_argv(w, r, "--set", "infer.max_length=1000000000"),
     ["--set: infer.max_length: 1000000000 is more than the 2048 positions"]),
    ("plan: prompt.max_length beyond a published model's positions",
     lambda w, r: ["plan", "--config", str(config.CONFIG_DIR / "gemma2-9b-qlora-t4x2.yaml"), "--set",
                   "prompt.max_length=1000000000"], ["prompt.max_length: 1000000000 is more than the 8192 positions"]),
    ("plan --gpus -3", lambda w, r: ["plan", "--gpus", "-3"], ["argument --gpus: -3 must be at least 1"]),
    ("plan --gpus 0 (was silently 2)", lambda w, r: ["plan", "--gpus", "0"], ["argument --gpus: 0 must be at least 1"]),
    ("cv --folds 1", lambda w, r: ["cv", "--folds", "1"], ["argument --folds: 1 must be at least 2"]),
    ("data sample --rows 0", lambda w, r: ["data", "sample", "--rows", "0", "--out", str(w / "s.csv")],
     ["argument --rows: 0 must be at least 1"]),
    ("sweep --cv x", lambda w, r: ["sweep", "--cv", "x"], ["argument --cv: 'x' is not a whole number"]),
    ("runs folder that is a file",
     lambda w, r: ["train", "--set", f"train.runs_dir={touch(w / 'inputs' / 'afile')}", "--set",
                   f"data.train={labelled_csv(w)}"], ["afile: a file, not a folder (runs folder)"]),
]


def damage_val_predictions(run: RunFolder) -> None:
    """Three problems in three rows: a probability above 1, a probability that is text, a missing true label."""
    text = run.val_predictions.read_text().splitlines()
    header = text[0].split(",")
    rows = [line.split(",") for line in text[1:]]
    rows[0][header.index("winner_model_a")] = "1.5"
    rows[1][header.index("winner_model_b")] = "\u0661"
    rows[2][header.index("true_winner_tie")] = ""
    run.val_predictions.write_text("\n".join(",".join(r) for r in [header, *rows]) + "\n", encoding="utf-8")


def bad_calibration(run: RunFolder) -> None:
    run.calibration.write_text(json.dumps({"temperature": -1, "bias": [0, "x", 0]}))


def tiny_base(tiny_run: Path) -> str:
    return config.load(RunFolder(tiny_run).config).model.path


def labelled_csv(work: Path) -> Path:
    path = work / "inputs" / "train.csv"
    data.write_csv(data.generate_sample(40, seed=5), path)
    return path


def write_yaml(work: Path, content) -> Path:
    path = work / "inputs" / "bad.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
    return path


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("x")
    return path


def predict_argv(work: Path, run: Path, *extra: str) -> list[str]:
    return ["predict", "--run", str(run), "--data", str(make_test_csv(work)), "--out", str(work / "out" / "sub.csv"), *extra]


RUN_DAMAGE = [
    ("adapter missing", lambda run: shutil.rmtree(run.adapter), "not a run folder from `arena train`"),
    ("adapter empty", lambda run: [p.unlink() for p in run.adapter.iterdir()], "no trained adapter here"),
    ("tokenizer truncated", lambda run: truncate(run.adapter / "tokenizer.json"), "tokenizer.json: not valid JSON"),
    ("head.json corrupt", lambda run: run.head.write_text("{bias: tru"), "head.json: not valid JSON"),
    ("head.json from a newer version", lambda run: run.head.write_text(json.dumps(
        {**json.loads(run.head.read_text()), "format": 99})), "made by a newer version of arena"),
    ("weights truncated", lambda run: truncate(run.adapter / "adapter_model.safetensors"),
     "adapter_model.safetensors: not a whole safetensors file"),
    ("adapter_config.json missing", lambda run: (run.adapter / "adapter_config.json").unlink(),
     "adapter_config.json: missing"),
    ("adapter_config.json corrupt", lambda run: (run.adapter / "adapter_config.json").write_text("[1,"),
     "adapter_config.json: not valid JSON"),
    ("rank differs from adapter_config.json", lambda run: (run.adapter / "adapter_config.json").write_text(json.dumps(
        {**json.loads((run.adapter / "adapter_config.json").read_text()), "r": 7})), "adapter_config.json says r=7"),
]

def needles(needle: str | list[str]) -> list[str]:
    return [needle] if isinstance(needle, str) else needle


def head_with_three_problems(run: RunFolder) -> None:
    head = json.loads(run.head.read_text())
    run.head.write_text(json.dumps({**head, "format": 99, "num_labels": 2, "feature_scaler": {"names": ["x"]}}))


RUN_DAMAGE += [
    ("head.json with three problems: every one named", head_with_three_problems,
     ["made by a newer version of arena", "num_labels is 2, expected 3", "feature_scaler needs names, mean and std"]),
]

RUN_PROBES = [
    (f"predict: {name}", lambda w, r, d=damage: predict_argv(w, run_copy(w, r, d)), needles(needle))
    for name, damage, needle in RUN_DAMAGE
] + [
    (f"package: {name}", lambda w, r, d=damage: ["package", "--run", str(run_copy(w, r, d)), "--no-wheels", "--out",
                                                 str(w / "out" / "bundle")], needles(needle))
    for name, damage, needle in RUN_DAMAGE
] + [
    ("calibrate: every problem of its predictions, the labels' too",
     lambda w, r: ["calibrate", "--run", str(run_copy(w, r, damage_val_predictions))],
     ["val_predictions.csv: values outside [0, 1] in 1 row(s)", "non-numeric values in 1 row(s)",
      "(its true_winner_model_a, true_winner_model_b, true_winner_tie labels): missing (NaN) values in 1 row(s)"]),
    ("calibrate: every problem of calibration.json", lambda w, r: predict_argv(w, run_copy(w, r, bad_calibration)),
     ["calibration.json: temperature -1 is not a positive finite number", "calibration.json: bias[1] 'x' is not a finite"]),
    ("predict --set infer.max_length=0", lambda w, r: predict_argv(w, r, "--set", "infer.max_length=0"),
     ["--set: infer.max_length: 0 must be at least 1"]),
    ("predict --set infer.max_length=10", lambda w, r: predict_argv(w, r, "--set", "infer.max_length=10"),
     ["--set: infer.max_length: 10 cannot hold 3 parts"]),
    ("predict --set infer.max_length=30: the scaffold does not fit",
     lambda w, r: predict_argv(w, r, "--set", "infer.max_length=30"),
     ["infer.max_length: 30 cannot hold the 'plain' format with this tokenizer: its scaffold takes"]),
    ("predict --out under a file", lambda w, r: ["predict", "--run", str(r), "--data", str(make_test_csv(w)), "--out",
                                                  str(touch(w / "out" / "afile") / "sub.csv")],
     ["afile is a file, not a folder"]),
    ("predict --out an existing file", lambda w, r: ["predict", "--run", str(r), "--data", str(make_test_csv(w)), "--out",
                                                      str(touch(w / "out" / "sub.csv"))], ["sub.csv: already exists"]),
    ("predict --base-model that is not a model", lambda w, r: predict_argv(w, r, "--base-model", str(w)),
     ["--base-model", "not a model folder"]),
    ("package --test-csv missing", lambda w, r: ["package", "--run", str(run_copy(w, r)), "--no-wheels", "--test-csv",
                                                  str(w / "nope.csv"), "--out", str(w / "out" / "bundle")],
     ["--test-csv", "nope.csv: file not found"]),
]

DATA_PROBES = [
    (f"validate: a turn that is {what}", lambda w, r, raw=raw: ["data", "validate", str(turns_csv(w / "t.csv", raw))],
     ["row id=r2 (line 3): column response_a", needle])
    for what, raw, needle in [
        ("a JSON object", '{"text": "a"}', "got a JSON object"),
        ("a number", "5", "got a JSON number"),
        ("a bare string", '"a"', "got a JSON string"),
        ("a nested list", '[["a"]]', "turn 1 is a JSON list"),
        ("a list of numbers", "[1, 2]", "turn 1 is a JSON number"),
    ]
] + [
] + [
    (f"{command}: text that is not Unicode: {what}", lambda w, r, raw=raw, c=command: text_argv(w, c, raw),
     ["row id=r2 (line 3): column response_a", needle])
    for command in ("validate", "train")
    for what, raw, needle in [
        ("a lone surrogate (half an emoji)", '["ok \\ud83d"]', "turn 1 holds a lone surrogate \\ud83d"),
        ("a low surrogate alone", '["\\udc80"]', "turn 1 holds a lone surrogate \\udc80"),
        ("a NUL escape", '["a\\u0000b"]', "turn 1 holds a NUL character"),
        ("a raw NUL byte", '["a\x00b"]', "holds a NUL byte (on line 3)"),
    ]
] + [
    ("validate: a NUL byte past the first 64 KiB is named as one early is",
     lambda w, r: ["data", "validate", str(turns_csv(w / "t.csv", '["a\x00b"]', long_first_row=True))],
     ["row id=r2 (line 3): column response_a: holds a NUL byte (on line 3)"]),
    ("validate: a NUL byte in another column", lambda w, r: ["data", "validate", str(write_csv_text(
        w / "t.csv", ["id", "model_a", "prompt", "response_a", "response_b"], [["r1", "m\x00", '["a"]', '["b"]', '["c"]']]))],
     ["row id=r1 (line 2): column model_a: holds a NUL byte"]),
    ("validate: a UTF-16 file", lambda w, r: ["data", "validate", str(utf16(w))], ["UTF-16 text", "not a UTF-8 CSV"]),
    ("validate: a label spelled with other digits (float() reads it, score does not)",
     lambda w, r: ["data", "validate", str(labels_spelled(w, "\u0661"))], ["column winner_model_a: label '\u0661' is not a number"]),
    ("validate: a label with an underscore", lambda w, r: ["data", "validate", str(labels_spelled(w, "0_1"))],
     ["label '0_1' is not a number"]),
    ("score: the same label is refused there too", lambda w, r: ["score", "--pred", str(probs_csv(
        w / "pred.csv", ["r1", "r2"], [[0.5, 0.2, 0.3]] * 2)), "--truth", str(labels_spelled(w, "\u0661"))],
     ["truth.csv: non-numeric values in 1 row(s) (ids: r2)"]),
    ("score: a prediction with a lone surrogate byte", lambda w, r: ["score", "--pred", str(bytes_csv(
        w / "pred.csv", b"id,winner_model_a,winner_model_b,winner_tie\nr1,0.5,0.2,0.3\nr2\xed\xa0\xbd,0.5,0.2,0.3\n")),
        "--truth", str(labels_csv(w))], ["pred.csv: row id=r2\\xed\\xa0\\xbd (line 3): column id: not valid UTF-8 (byte 0xed"]),
    ("validate: every bad file, not just the first",
     lambda w, r: ["data", "validate", str(turns_csv(w / "one.csv", "5")), str(turns_csv(w / "two.csv", "{}"))],
     ["one.csv: row id=r2", "two.csv: row id=r2"]),
    ("validate: a zip file", lambda w, r: ["data", "validate", str(zipped(w))], ["a zip archive, not a CSV"]),
    ("validate: a gzip file", lambda w, r: ["data", "validate", str(gzipped(w))], ["a gzip file, not a CSV"]),
    ("score: negative probabilities", lambda w, r: ["score", "--pred", str(probs_csv(
        w / "pred.csv", ["a", "b"], [[0.5, 0.2, 0.3], [-0.2, 0.6, 0.6]])), "--truth", str(labels_csv(w))],
     ["pred.csv: negative values in 1 row(s) (ids: b)"]),
    ("score: a missing id", lambda w, r: ["score", "--pred", str(probs_csv(w / "pred.csv", ["a"], [[0.2, 0.3, 0.5]])),
                                          "--truth", str(labels_csv(w))], ["pred.csv: ids missing: 1 row(s) (ids: b)"]),
    ("blend: files that do not exist", lambda w, r: ["blend", "--oof", str(w / "oof1.csv"), "--preds", str(w / "p1.csv"),
                                                     "--out", str(w / "blend.csv")],
     ["oof1.csv: OOF file not found", "p1.csv: prediction file not found"]),
    ("blend: runs with different ids", lambda w, r: blend_argv(w), ["oof2.csv: ids missing", "unexpected ids"]),
    ("blend: one --oof per --preds", lambda w, r: ["blend", "--oof", str(oof_csv(w / "oof1.csv", ["a"])), "--preds",
                                                   str(w / "p1.csv"), str(w / "p2.csv"), "--out", str(w / "b.csv")],
     ["one --oof file per --preds file"]),
    ("push: kaggle.json that is a JSON list", lambda w, r: ["push", "--run", str(r), "--dry-run"] if kaggle_json(w, "[]")
     else [], ["kaggle.json: not a Kaggle API token"]),
    ("data sample --out under a file", lambda w, r: ["data", "sample", "--rows", "5", "--out",
                                                     str(touch(w / "afile") / "s.csv")], ["afile is a file"]),
]


def zipped(work: Path) -> Path:
    path = work / "train.csv"
    with zipfile.ZipFile(work / "archive.zip", "w") as zf:
        zf.writestr("train.csv", "id,prompt\n1,[]\n")
    (work / "archive.zip").rename(path)  # the name hides what it is
    return path


def gzipped(work: Path) -> Path:
    path = work / "test.csv"
    path.write_bytes(gzip.compress(b"id,prompt\n1,[]\n"))
    return path


def probs_csv(path: Path, ids: list[str], probs) -> Path:
    return write_csv_text(path, ["id", *LABEL_COLUMNS], [[i, *p] for i, p in zip(ids, probs)])


def labels_csv(work: Path) -> Path:
    return probs_csv(work / "truth.csv", ["a", "b"], [[1, 0, 0], [0, 0, 1]])


def oof_csv(path: Path, ids: list[str]) -> Path:
    frame = predict.prediction_frame(ids, np.full((len(ids), 3), 1 / 3))
    frame[[f"true_{c}" for c in LABEL_COLUMNS]] = np.eye(3)[[i % 3 for i in range(len(ids))]]
    frame.to_csv(path, index=False)
    return path


def blend_argv(work: Path) -> list[str]:
    paths = [oof_csv(work / "oof1.csv", ["a", "b"]), oof_csv(work / "oof2.csv", ["a", "c"])]
    preds = [probs_csv(work / f"p{i}.csv", ["x"], [[0.2, 0.3, 0.5]]) for i in (1, 2)]
    return ["blend", "--oof", *map(str, paths), "--preds", *map(str, preds), "--out", str(work / "blend.csv")]


def kaggle_json(work: Path, text: str) -> bool:
    folder = work / "home" / "kaggle"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "kaggle.json").write_text(text)
    return True


@pytest.mark.parametrize("setup,needles", [pytest.param(s, n, id=i) for i, s, n in CONFIG_PROBES + RUN_PROBES + DATA_PROBES])
def test_bad_input_exits_2_naming_it_and_writes_nothing(setup, needles, work, tiny_run, capsys):
    argv = setup(work, tiny_run)
    before = files_under(work)
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, (needle, err)
    assert files_under(work) == before


# ---- inputs that used to be refused, and now work ------------------------------------------------------

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


def test_real_data_turns_still_load(shared_data):
    """pandalm holds `[true]` turns (a model answered "True"); the competition holds `null` turns."""
    df = data.load(shared_data / "pandalm_human.csv")
    assert any(turns == ["true"] for turns in df["response_a"])


def test_null_turns_are_empty_turns(work):
    df = data.load(turns_csv(work / "t.csv", '[null, "b"]'))
    assert df.loc[1, "response_a"] == ["", "b"]


def test_package_does_not_need_a_readable_kaggle_json(work, tiny_run, capsys):
    kaggle_json(work, "{not json")
    assert cli.main(["package", "--run", str(run_copy(work, tiny_run)), "--no-wheels", "--out", str(work / "bundle")]) == 0
    assert "the bundle uses the placeholder user" in capsys.readouterr().err


def test_rehearsal_input_may_be_the_file_its_folder_or_a_kaggle_input_root(work):
    csv = touch(work / "input" / "lmsys-chatbot-arena" / "test.csv")
    for given in (work / "input", csv.parent, csv):
        assert rehearsal.find_test_csv(given, "lmsys-chatbot-arena") == csv
    assert rehearsal.find_test_csv(work, "lmsys-chatbot-arena") is None


# ---- interrupts ---------------------------------------------------------------------------------------

def test_an_interrupted_write_leaves_no_file(work):
    target = work / "out" / "sub.csv"
    with pytest.raises(KeyboardInterrupt), atomic_file(target) as tmp:
        tmp.write_text("id,winner_model_a\n1,")
        raise KeyboardInterrupt
    assert files_under(work) == ["out"]



def test_an_interrupted_folder_build_leaves_nothing_and_a_finished_one_lands(work):
    target = work / "bundles" / "b1"
    with pytest.raises(KeyboardInterrupt), atomic_folder(target, "bundle") as staging:
        (staging / "half.txt").write_text("x")
        raise KeyboardInterrupt
    assert files_under(work) == ["bundles"]
    with atomic_folder(target, "bundle") as staging:
        (staging / "done.txt").write_text("x")
    assert (target / "done.txt").read_text() == "x"


def test_a_folder_that_appears_during_a_build_is_not_overwritten(work):
    target = work / "merged"
    with pytest.raises(UserError, match="appeared while it was built"), atomic_folder(target, "merged model") as staging:
        (staging / "model.safetensors").write_text("new")
        target.mkdir()
        (target / "mine.txt").write_text("keep")
    assert files_under(work) == ["merged", "merged/mine.txt"]

@pytest.mark.parametrize("interrupt,code", [(KeyboardInterrupt, 130), (cli.Terminated, 143)])
def test_an_interrupt_prints_one_line_and_exits_130_or_143(interrupt, code, work, monkeypatch, capsys):
    def interrupted(args):
        raise interrupt

    monkeypatch.setattr(cli, "cmd_score", interrupted)
    assert cli.main(["score", "--pred", "p.csv", "--truth", "t.csv"]) == code
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_arena_cleanly(sig, code, work):
    proc = subprocess.Popen([sys.executable, "-m", "arena.cli", "data", "sample", "--rows", "1000000", "--out",
                             str(work / "big.csv")], stderr=subprocess.PIPE, text=True, cwd=work)
    time.sleep(6)  # well into generating the rows
    proc.send_signal(sig)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == code, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert files_under(work) == []


# ---- training faults ----------------------------------------------------------------------------------

def test_a_checkpoint_cut_short_is_skipped_on_resume(tiny_model_dir, sample_csv, tmp_path, capsys):
    cfg = tiny_train_cfg(tiny_model_dir, sample_csv, tmp_path / "runs", "train.max_steps=6")
    with pytest.raises(KeyboardInterrupt):
        train.train(cfg, callbacks=[StopAfterCheckpoint(4)])
    (run_dir,) = (tmp_path / "runs").iterdir()
    run = RunFolder(run_dir)
    truncate(run.checkpoints / "checkpoint-4" / "trainer_state.json")  # killed while saving it
    assert train.find_resumable(cfg, "latest") == run
    capsys.readouterr()
    first_step = FirstStep()
    train.train(cfg, resume="latest", callbacks=[first_step])
    assert "checkpoint-4 is incomplete" in capsys.readouterr().err
    assert (run.checkpoints / "incomplete-checkpoint-4").is_dir()
    assert first_step.step == 2  # resumed from checkpoint-2, the last whole one
    assert json.loads(run.metrics.read_text())["global_step"] == 6


class FirstStep(TrainerCallback):
    step = None

    def on_step_begin(self, args, state, control, **kwargs):
        if self.step is None:
            self.step = state.global_step


def test_a_full_disk_is_an_error_before_the_model_loads(tiny_model_dir, sample_csv, tmp_path, monkeypatch):
    from arena import model, room

    def no_load(*args, **kwargs):
        raise AssertionError("the model loaded before the room check")

    monkeypatch.setattr(room, "free_bytes", lambda path: 10 * 2**20)
    monkeypatch.setattr(model, "load_base", no_load)
    cfg = tiny_train_cfg(tiny_model_dir, sample_csv, tmp_path / "runs")
    with pytest.raises(train.UserError, match="10 MiB free on its disk; this run needs about"):
        train.train(cfg)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


class FillDiskAfterFirstSave(TrainerCallback):
    """Something else fills the disk once training is under way (the room check passed, a checkpoint is saved)."""

    def __init__(self, disk: Path):
        self.filler = disk / "filler.bin"

    def on_save(self, args, state, control, **kwargs):
        if not self.filler.exists():
            with open(self.filler, "wb") as out:
                try:
                    while True:
                        out.write(b"\0" * 2**20)
                        out.flush()
                except OSError:
                    pass


def test_a_disk_that_fills_during_a_save_says_so_and_resume_recovers(tiny_model_dir, sample_csv, small_disk, capsys):
    runs = small_disk / "runs"
    cfg = tiny_train_cfg(tiny_model_dir, sample_csv, runs, "train.max_steps=4")
    with pytest.raises(UserError) as info:
        train.train(cfg, callbacks=[FillDiskAfterFirstSave(small_disk)])
    message = str(info.value)
    assert "no space left on device while writing a checkpoint" in message, message
    assert "free some room, then `arena train --resume`" in message
    (small_disk / "filler.bin").unlink()
    (run_dir,) = runs.iterdir()
    capsys.readouterr()
    assert train.train(cfg, resume="latest") == run_dir
    assert "from " + str(run_dir / "checkpoints" / "checkpoint-2") in capsys.readouterr().out
    assert json.loads(RunFolder(run_dir).metrics.read_text())["global_step"] == 4


def test_every_recipe_passes_the_range_checks():
    for path in sorted(Path(config.CONFIG_DIR).glob("*.yaml")):
        config.load(path)


def test_scheduler_choices_are_transformers_own():
    import typing

    from transformers import SchedulerType

    assert set(typing.get_args(config.Scheduler)) == {s.value for s in SchedulerType}


def test_no_temporary_file_is_left_by_a_normal_run(tiny_run):
    assert not [p for p in Path(tiny_run).rglob(".*.tmp")]



# ---- a hidden test set is read leniently; training data stays strict -------------------------------------

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


def test_every_reader_keeps_an_id_spelled_like_na(work):
    """The rehearsal's check of the kernel's submission, score, calibrate and the teachers share one reader."""

    ids = ["NA", "null", "nan", "N/A", "None"]
    sub = probs_csv(work / "sub.csv", ids, [[0.2, 0.3, 0.5]] * len(ids))
    frame = data.read_columns(sub, "submission")
    assert list(frame["id"]) == ids
    data.validate_submission(frame, ids)


# ---- damaged records ------------------------------------------------------------------------------------

def test_runs_names_a_damaged_metrics_json_instead_of_calling_the_run_unfinished(work, tiny_run, capsys):
    run = RunFolder(work / "runs" / "tiny-1")
    shutil.copytree(tiny_run, run.root, ignore=shutil.ignore_patterns("checkpoints"))
    truncate(run.metrics)
    before = files_under(work)
    assert cli.main(["runs", "--runs-dir", str(work / "runs")]) == 0
    out, err = capsys.readouterr()
    assert "tiny-1" in out and "damaged" in out and "unfinished" not in out
    assert f"warning: {run.metrics}: damaged, left out of the table (JSONDecodeError" in err
    assert files_under(work) == before


# ---- push --bundle checks what package checks ---------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_bundle(tiny_run, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hardening-bundle")
    run = run_copy(root, tiny_run)
    out = root / "bundle"
    assert cli.main(["package", "--run", str(run), "--no-wheels", "--out", str(out)]) == 0
    return out


def test_push_bundle_makes_every_package_check_before_any_kaggle_call(work, tiny_bundle, capsys, monkeypatch):
    from arena.kaggle import push

    def no_kaggle(*args, **kwargs):
        raise AssertionError("a kaggle call")

    monkeypatch.setattr(push, "run_kaggle", no_kaggle)
    bundle = work / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    truncate(bundle / "adapter-dataset" / "adapter" / "adapter_model.safetensors")
    (bundle / "preflight.json").unlink()
    before = files_under(work)
    capsys.readouterr()
    for extra in ([], ["--dry-run"]):
        assert cli.main(["push", "--run", str(bundle / "adapter-dataset"), "--bundle", str(bundle), *extra]) == 2
        err = capsys.readouterr().err
        assert "adapter_model.safetensors: not a whole safetensors file" in err, err
        assert "preflight.json: missing (the pre-flight projection)" in err
        assert "Traceback" not in err
    assert files_under(work) == before


def test_a_staging_folder_left_by_a_killed_package_is_no_bundle_and_is_cleaned_up(work, tiny_bundle, capsys):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    staging = work / f".bundle.{int(dead.stdout)}.k1lled"
    shutil.copytree(tiny_bundle, staging)
    assert cli.main(["push", "--run", str(staging / "adapter-dataset"), "--bundle", str(staging), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "the staging folder of an interrupted `arena package`, not a bundle (removed it)" in err
    assert not staging.exists()
    shutil.copytree(tiny_bundle, staging)  # and the next build beside it removes it too
    with atomic_folder(work / "bundle", "bundle") as build:
        (build / "x").write_text("x")
    assert files_under(work) == ["bundle", "bundle/x"]


# ---- a quiet console ------------------------------------------------------------------------------------------

def test_checkpointing_uses_transformers_current_api_without_warnings(tiny_model_dir):
    """transformers 5 renamed gradient_checkpointing_enable/disable to activation_checkpointing_*: training and the
    planner use the current names, so they print no FutureWarning."""
    import warnings

    import torch
    from transformers import AutoConfig

    from arena import model, planner

    cfg = config.from_dict({"model": {"path": str(tiny_model_dir), "family": "plain"},
                            "prompt": {"max_length": 96, "min_tokens": 8}, "infer": {"max_length": 96}})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        base = model.meta_preference_model(cfg, AutoConfig.from_pretrained(tiny_model_dir), torch.float32)
        runtime = model.Runtime(device="cpu", dtype=torch.float32, gradient_checkpointing=True, sharded=False)
        model.prepare_for_training(base, cfg, runtime)
        planner._set_checkpointing(base, False)
        planner._set_checkpointing(base, True)
    assert base.model.is_activation_checkpointing
    assert [str(w.message) for w in caught if "checkpointing" in str(w.message)] == []


def test_bitsandbytes_kernels_noise_is_dropped_at_its_logger_and_nothing_else_is():
    import logging

    from arena import quiet

    quiet.quiet_libraries()
    name, start = quiet.BNB_KERNELS_NOISE
    logger = logging.getLogger(name)

    def record(message: str) -> logging.LogRecord:
        return logger.makeRecord(logger.name, logging.WARNING, __file__, 1, message, (), None)

    assert not logger.filter(record(start + ": No module named 'kernels'. Please make sure ..."))
    assert logger.filter(record("Register pytorch bitsandbytes kernels because no native library was found"))
    assert logging.getLogger("bitsandbytes").filter(record(start))  # no blanket filter


def test_a_bare_on_or_off_is_the_choice_of_that_name():
    assert config.load(None, ["model.gradient_checkpointing=on"]).model.gradient_checkpointing == "on"
    assert config.load(None, ["model.gradient_checkpointing=off"]).model.gradient_checkpointing == "off"
