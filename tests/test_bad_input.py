"""Every command's bad input: each probe stops before any work with exit 2 and a message naming what is wrong
and where (the file, row id and column, or the config key and where its value came from), and writes nothing."""

import csv
import gzip
import io
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from arena import cli, config, data, predict
from arena.layout import RunFolder
from arena.task import THREE_WAY
from tests.files import files_under, kaggle_json, probs_csv, run_copy, touch, truncate, turns_csv, write_csv_text

LABEL_COLUMNS = THREE_WAY.label_columns


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
    run.head.write_text(json.dumps({**head, "format": 99, "num_labels": 4, "feature_scaler": {"names": ["x"]}}))


RUN_DAMAGE += [
    ("head.json with three problems: every one named", head_with_three_problems,
     ["made by a newer version of arena", "num_labels is 4, expected 2 (A / B) or 3 (A / B / tie)", "feature_scaler needs names, mean and std"]),
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
