import csv
import json
import re
import warnings

import numpy as np
import pandas as pd
import pytest

from arena import data
from arena.config import DataConfig
from arena.errors import UserError
from arena.task import THREE_WAY
from tests.files import probs_csv, turns_csv

LABEL_COLUMNS = THREE_WAY.label_columns

SHARED_FILES = ["autoj_pairwise_dev.csv", "pandalm_human.csv", "pandalm_human_softvotes.csv", "hh_rlhf_harmless.csv"]
HEADER = ["id", "model_a", "model_b", "prompt", "response_a", "response_b", *LABEL_COLUMNS]


def write_rows(path, rows, header=HEADER):
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


def row(rid, prompt=("hi",), a=("hello",), b=("hey",), labels=(1, 0, 0)):
    return [rid, "m1", "m2", json.dumps(list(prompt)), json.dumps(list(a)), json.dumps(list(b)), *labels]


def corrupt_copy(shared_data, tmp_path, mutate, name="pandalm_human.csv"):
    """Copy a shared CSV into tmp_path after mutate(header, rows) edits it in place."""
    with open(shared_data / name, encoding="utf-8", newline="") as f:
        header, *rows = list(csv.reader(f))
    mutate(header, rows)
    return write_rows(tmp_path / name, rows, header)


def problems_of(path, **kwargs) -> str:
    with pytest.raises(data.DataError) as info:
        data.load(path, **kwargs)
    return str(info.value)


# ---- loading real data ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", SHARED_FILES)
def test_shared_files_validate(shared_data, name):
    summary = data.validate(shared_data / name)
    assert summary.startswith(f"{shared_data / name}: OK ")
    assert "labels A/B/tie = " in summary


def test_loaded_columns_and_types(shared_data):
    df = data.load(shared_data / "autoj_pairwise_dev.csv", require_labels=True)
    assert len(df) == 696
    assert "scenario" in df.columns  # extra columns are kept
    assert all(isinstance(v, str) for v in df["id"])
    for col in data.TEXT_COLUMNS:
        assert all(isinstance(t, list) and all(isinstance(s, str) for s in t) for t in df[col])
    assert all(df[c].dtype == np.float64 for c in LABEL_COLUMNS)
    assert np.array_equal(df["label"], data.label_matrix(df).argmax(axis=1))
    assert np.bincount(df["label"]).tolist() == [246, 260, 190]


def test_soft_votes_stay_probabilities(shared_data):
    df = data.load(shared_data / "pandalm_human_softvotes.csv")
    labels = data.label_matrix(df)
    assert np.allclose(labels.sum(axis=1), 1.0, atol=1e-3)
    assert np.isclose(labels, 1 / 3).any() and np.isclose(labels, 2 / 3).any()
    assert "(soft: yes)" in data.validate(shared_data / "pandalm_human_softvotes.csv")
    assert "(soft: no)" in data.validate(shared_data / "pandalm_human.csv")


def test_json_true_turns_become_text(shared_data):
    df = data.load(shared_data / "pandalm_human.csv")
    turns = [t for col in ("response_a", "response_b") for r in df[col] for t in r]
    assert all(isinstance(t, str) for t in turns)
    assert turns.count("true") >= 1


def test_hh_rlhf_padded_with_one_warning(shared_data):
    with pytest.warns(UserWarning, match=r"9 rows .* padded") as record:
        df = data.load(shared_data / "hh_rlhf_harmless.csv")
    assert len([w for w in record if "padded" in str(w.message)]) == 1
    assert all(len(p) == len(a) == len(b) for p, a, b in zip(df.prompt, df.response_a, df.response_b))
    assert data.validate(shared_data / "hh_rlhf_harmless.csv").endswith("padded rows: 9")


def test_null_turns_booleans_and_raw_newlines(tmp_path):
    rows = [
        ["1", "m1", "m2", '["q", null]', '[null, "x"]', '["y", null]', 0, 0, 1],
        ["2", "m1", "m2", '["just a string"]', "[true]", "[]", 0, 1, 0],
        ["3", "m1", "m2", '["raw\nnewline"]', '["a"]', '["b"]', 0, 1, 0],  # a raw newline inside a JSON string
    ]
    df = data.load(write_rows(tmp_path / "t.csv", rows))
    assert df.loc[0, "response_a"] == ["", "x"]
    assert df.loc[0, "response_b"] == ["y", ""]
    assert df.loc[0, "prompt"] == ["q", ""]
    assert df.loc[1, "prompt"] == ["just a string"]
    assert df.loc[1, "response_a"] == ["true"]
    assert df.loc[1, "response_b"] == [""]
    assert df.loc[2, "prompt"] == ["raw\nnewline"]
    # row 3 spans lines 4-5, so the next row starts on line 6
    bad = write_rows(tmp_path / "bad.csv", [*rows, ["4", "m1", "m2", '["q"]', '["a"]', "[oops", 0, 1, 0]])
    assert "row id=4 (line 6): column response_b: invalid JSON" in problems_of(bad)


@pytest.mark.parametrize("raw,problem", [
    ('"just a string"', "expected a JSON list of strings, got a JSON string"),
    ("null", "expected a JSON list of strings, got a JSON null"),
    ('{"turn": "a"}', "expected a JSON list of strings, got a JSON object"),
    ('["y", 1.5]', "turn 2 is a JSON number, expected a string (or null)"),
    ('[["a"]]', "turn 1 is a JSON list, expected a string (or null)"),
])
def test_turns_that_are_not_strings_are_refused(tmp_path, raw, problem):
    path = write_rows(tmp_path / "t.csv", [row("1"), ["2", "m1", "m2", '["q"]', raw, '["b"]', 0, 1, 0]])
    assert f"row id=2 (line 3): column response_a: {problem}" in problems_of(path)


def test_mismatched_turns_padded_with_warning(tmp_path):
    path = write_rows(tmp_path / "t.csv", [
        row("1", prompt=["a", "b", "c"], a=["x"], b=["y", "z"]),
        row("2", prompt=["a"], a=["x", "extra"], b=["y"]),
        row("3"),
        row("4", prompt=[], a=[], b=[]),
    ])
    with pytest.warns(UserWarning, match=r"t\.csv: 2 rows"):
        df = data.load(path)
    assert df.loc[0, "response_a"] == ["x", "", ""]
    assert df.loc[0, "response_b"] == ["y", "z", ""]
    assert df.loc[1, "prompt"] == ["a", ""]
    assert df.loc[3, "prompt"] == [""]


def test_test_csv_without_labels(tmp_path):
    path = write_rows(tmp_path / "test.csv", [["7", '["q"]', '["a"]', '["b"]']],
                      header=["id", "prompt", "response_a", "response_b"])
    df = data.load(path)
    assert data.label_matrix(df) is None and "label" not in df.columns
    assert data.validate(path).startswith(f"{path}: OK 1 rows; labels: none;")
    assert "missing label columns" in problems_of(path, require_labels=True)


# ---- rejecting bad data -----------------------------------------------------------------------------

def test_invalid_json_names_file_row_and_column(shared_data, tmp_path):
    def mutate(header, rows):
        rows[4][header.index("response_a")] = '["unterminated'

    path = corrupt_copy(shared_data, tmp_path, mutate)
    msg = problems_of(path)
    assert re.search(rf"^{re.escape(str(path))}: row id=pandalm_4 \(line \d+\): column response_a: invalid JSON",
                     msg, re.M)


def test_missing_column(shared_data, tmp_path):
    def mutate(header, rows):
        i = header.index("response_b")
        del header[i]
        for r in rows:
            del r[i]

    path = corrupt_copy(shared_data, tmp_path, mutate)
    msg = problems_of(path)
    assert msg.startswith(f"{path}: missing required column(s) response_b")


def test_labels_summing_to_two(shared_data, tmp_path):
    def mutate(header, rows):
        rows[10][header.index("winner_model_a")] = "1"
        rows[10][header.index("winner_model_b")] = "1"
        rows[10][header.index("winner_tie")] = "0"

    path = corrupt_copy(shared_data, tmp_path, mutate)
    msg = problems_of(path)
    assert re.search(rf"{re.escape(str(path))}: row id=pandalm_10 \(line \d+\): column winner_model_a\S*: "
                     r"labels sum to 2", msg)


def test_bad_label_values(tmp_path):
    path = write_rows(tmp_path / "t.csv", [row("1", labels=(2, -1, 0)), row("2", labels=("", 0, 1)),
                                           row("3", labels=("nan", 0, 1)), row("4", labels=("yes", 0, 1))])
    msg = problems_of(path)
    assert "row id=1 (line 2): column winner_model_a: label 2 is not in 0..1" in msg
    assert "row id=1 (line 2): column winner_model_b: label -1 is not in 0..1" in msg
    assert "row id=2 (line 3): column winner_model_a: missing label" in msg
    assert "row id=3 (line 4): column winner_model_a: label 'nan' is not a number" in msg
    assert "row id=4 (line 5): column winner_model_a: label 'yes' is not a number" in msg


def test_duplicate_and_missing_ids(shared_data, tmp_path):
    def mutate(header, rows):
        rows[7][0] = rows[3][0]
        rows[8][0] = ""

    path = corrupt_copy(shared_data, tmp_path, mutate)
    msg = problems_of(path)
    assert re.search(rf"{re.escape(str(path))}: row id=pandalm_3 \(line \d+\): column id: duplicate id", msg)
    assert re.search(rf"{re.escape(str(path))}: row id=\? \(line \d+\): column id: missing id", msg)


def test_non_utf8_byte_names_row_column_and_line(tmp_path):
    path = write_rows(tmp_path / "t.csv", [
        [*row("1"), ""], [*row("2", a=["caf@BAD@"]), ""], [*row("3", b=["@BAD@"]), "x\ny\nz @BAD@"],
    ], header=[*HEADER, "note"])
    path.write_bytes(path.read_bytes().replace(b"@BAD@", b"\xe9"))
    msg = problems_of(path)
    assert f"{path}: row id=2 (line 3): column response_a: not valid UTF-8 (byte 0xe9 on line 3)" in msg
    assert f"{path}: row id=3 (line 4): column response_b: not valid UTF-8 (byte 0xe9 on line 4)" in msg
    # the multi-line note starts on line 4; its bad byte sits two lines further down
    assert f"{path}: row id=3 (line 4): column note: not valid UTF-8 (byte 0xe9 on line 6)" in msg


def test_empty_file_and_header_only(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert problems_of(empty) == f"{empty}: empty file"
    header_only = write_rows(tmp_path / "header.csv", [])
    assert problems_of(header_only) == f"{header_only}: no rows (only a header)"
    assert problems_of(tmp_path / "nope.csv") == f"{tmp_path / 'nope.csv'}: file not found"


def test_every_problem_is_listed(tmp_path):
    path = write_rows(tmp_path / "t.csv", [
        row("1"), ["2", "m1", "m2", "[oops", '["a"]', '["b"]', 1, 0, 0], row("1"), row("4", labels=(1, 1, 0)),
        ["5", "m1", "m2", '["q"]'],
    ])
    with pytest.raises(data.DataError) as info:
        data.load(path)
    lines = info.value.problems
    assert len(lines) == 4
    assert str(info.value) == "\n".join(lines)
    assert any("row id=2 (line 3): column prompt: invalid JSON" in line for line in lines)
    assert any("row id=1 (line 4): column id: duplicate id (first on line 2)" in line for line in lines)
    assert any("row id=4 (line 5)" in line and "sum to 2" in line for line in lines)
    assert any("row id=5 (line 6): has 4 fields, the header has 9" in line for line in lines)


def test_partial_label_columns_rejected(tmp_path):
    path = write_rows(tmp_path / "t.csv", [["1", '["q"]', '["a"]', '["b"]', 1]],
                      header=["id", "prompt", "response_a", "response_b", "winner_model_a"])
    assert "has label column(s) winner_model_a but not winner_model_b, winner_tie" in problems_of(path)


# ---- folds ------------------------------------------------------------------------------------------

def test_folds_group_stratify_and_determinism(shared_data):
    df = data.load(shared_data / "autoj_pairwise_dev.csv")
    folds = data.make_folds(df, 5, seed=7)
    assert folds.shape == (len(df),) and set(folds) == set(range(5))
    prompts = df["prompt"].map(json.dumps)
    assert (pd.DataFrame({"p": prompts, "f": folds}).groupby("p")["f"].nunique() == 1).all()
    for k in range(5):
        assert set(df["label"][folds == k]) == {0, 1, 2}
    assert np.array_equal(folds, data.make_folds(df, 5, seed=7))
    assert not np.array_equal(folds, data.make_folds(df, 5, seed=8))


def test_folds_with_soft_labels_and_errors(shared_data):
    df = data.load(shared_data / "pandalm_human_softvotes.csv")
    folds = data.make_folds(df, 4, seed=0)
    assert set(folds) == {0, 1, 2, 3}
    with pytest.raises(data.DataError, match="at least 2"):
        data.make_folds(df, 1, seed=0)
    with pytest.raises(data.DataError, match="3 distinct prompts"):
        data.make_folds(df[df["prompt"].map(json.dumps).isin(df["prompt"].map(json.dumps).unique()[:3])], 5, 0)


# ---- transforms -------------------------------------------------------------------------------------

def test_swap_ab(shared_data):
    df = data.load(shared_data / "pandalm_human_softvotes.csv")
    swapped = data.swap_ab(df)
    pd.testing.assert_frame_equal(data.swap_ab(swapped), df)
    assert swapped["response_a"].tolist() == df["response_b"].tolist()
    assert swapped["model_b"].tolist() == df["model_a"].tolist()
    assert np.array_equal(data.label_matrix(swapped), data.label_matrix(df)[:, [1, 0, 2]])
    assert np.array_equal(swapped["label"], np.array([1, 0, 2])[df["label"]])
    assert swapped["id"].tolist() == df["id"].tolist()


def test_dedup_and_merge():
    main = data.generate_sample(30, seed=1)
    extra = data.generate_sample(20, seed=2)
    doubled = pd.concat([main, main.iloc[:5]], ignore_index=True)
    assert len(data.dedup(doubled)) == 30
    pd.testing.assert_frame_equal(data.dedup(doubled), main)

    other = extra.copy()
    other["id"] = list(main["id"][:10]) + list(extra["id"][10:])  # ids colliding with main
    other["source"] = "x"  # a column not in main: dropped
    repeats = main.iloc[:3].copy()  # rows already in main: dropped
    repeats["id"] = ["r1", "r2", "r3"]
    merged = data.merge(main, [other, repeats, other.iloc[:2]])
    assert len(merged) == 50
    assert merged["id"].is_unique
    assert "source" not in merged.columns
    assert merged["id"][30] == f"{main['id'][0]}_extra1"
    pd.testing.assert_frame_equal(merged.iloc[:30], main)

    with pytest.raises(data.DataError, match="extra dataset #1: missing column"):
        data.merge(main, [extra.drop(columns=LABEL_COLUMNS)])


# ---- generated sample -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sample():
    return data.generate_sample(3000, seed=0)


def test_sample_shape_and_determinism(sample):
    small = data.generate_sample(200, seed=0)
    pd.testing.assert_frame_equal(small, data.generate_sample(200, seed=0))
    assert not small["response_a"].equals(data.generate_sample(200, seed=1)["response_a"])
    assert list(sample.columns) == ["id", "model_a", "model_b", "prompt", "response_a", "response_b",
                                    *LABEL_COLUMNS, "label"]
    assert len(sample) == 3000 and sample["id"].is_unique and len(data.dedup(sample)) == 3000
    assert (sample["model_a"] != sample["model_b"]).all()
    assert all(len(p) == len(a) == len(b) for p, a, b in zip(sample.prompt, sample.response_a, sample.response_b))


def test_sample_label_balance_and_turns(sample):
    share = np.bincount(sample["label"], minlength=3) / len(sample)
    assert abs(share[2] - 0.31) < 0.06
    assert abs(share[0] - share[1]) < 0.05
    multi = (sample["prompt"].map(len) > 1).mean()
    assert 0.12 < multi < 0.28 and sample["prompt"].map(len).max() == 3
    texts = [t for r in sample["response_a"] for t in r]
    assert any("```" in t for t in texts) and any("I'm sorry" in t for t in texts)


REFUSAL = re.compile(r"I'm sorry|I cannot|not able to|As an AI", re.I)


def simple_features(df):
    rows = []
    for prompt, a, b in zip(df["prompt"], df["response_a"], df["response_b"]):
        prompt_words = {w.lower().strip("?.,!:") for w in " ".join(prompt).split() if len(w) > 3}
        side = []
        for response in (a, b):
            text = " ".join(response)
            words = [w.lower().strip("?.,!:") for w in text.split()]
            overlap = sum(w in prompt_words for w in words) / max(len(words), 1)
            side.append([bool(REFUSAL.search(text)), overlap, "```" in text,
                         bool(re.search(r"^(- |\d\. )", text, re.M)), (np.log1p(len(words)) - np.log(110)) ** 2])
        fa, fb = np.array(side, dtype=float)
        rows.append(np.concatenate([fa, fb, fa - fb, np.abs(fa - fb)]))
    return np.array(rows)


def test_sample_is_learnable(sample):
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.hstack([data.length_features(sample), simple_features(sample)])
    y = sample["label"].to_numpy()
    train, held_out = slice(0, 2000), slice(2000, None)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(x[train], y[train])
    loss = log_loss(y[held_out], model.predict_proba(x[held_out]), labels=[0, 1, 2])
    prior = np.bincount(y[train], minlength=3) / 2000
    prior_loss = log_loss(y[held_out], np.tile(prior, (len(y[held_out]), 1)), labels=[0, 1, 2])
    assert prior_loss > 1.05
    assert loss < prior_loss - 0.25, (loss, prior_loss)


def test_length_features():
    df = pd.DataFrame({"prompt": [["hi there"]], "response_a": [["one two\nthree", "four"]],
                       "response_b": [[""]]})
    x = data.length_features(df)
    assert x.shape == (1, len(data.LENGTH_FEATURE_NAMES)) and x.dtype == np.float64
    f = dict(zip(data.LENGTH_FEATURE_NAMES, x[0]))
    assert (f["a_chars"], f["a_words"], f["a_lines"], f["a_turns"]) == (17, 4, 3, 2)
    assert (f["b_chars"], f["b_words"], f["b_lines"], f["b_turns"]) == (0, 0, 0, 0)
    assert f["diff_words"] == 4 and f["logratio_words"] == pytest.approx(np.log(5))
    assert f["abs_logratio_words"] == pytest.approx(np.log(5)) and f["prompt_chars"] == 8


# ---- writing ----------------------------------------------------------------------------------------

def test_write_csv_round_trip_and_no_overwrite(tmp_path, sample):
    path = tmp_path / "nested" / "train.csv"
    data.write_csv(sample.iloc[:300], path)
    pd.testing.assert_frame_equal(data.load(path), sample.iloc[:300])
    with open(path, encoding="utf-8") as f:
        assert next(csv.reader(f)) == HEADER
    before = path.read_bytes()
    with pytest.raises(data.DataError, match="already exists"):
        data.write_csv(sample.iloc[:10], path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["train.csv"]


def test_write_csv_round_trip_soft_labels(shared_data, tmp_path):
    df = data.load(shared_data / "pandalm_human_softvotes.csv")
    data.write_csv(df, tmp_path / "soft.csv")
    pd.testing.assert_frame_equal(data.load(tmp_path / "soft.csv"), df)


def test_training_data_is_the_generated_sample_when_the_config_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert DataConfig().train == "sample"
    df = data.training_data(DataConfig(sample_rows=40), THREE_WAY)
    sample_path = tmp_path / "data" / "sample" / "train-40.csv"
    assert sample_path.is_file() and len(df) == 40
    assert "generated sample" in capsys.readouterr().err
    mtime = sample_path.stat().st_mtime_ns
    extra = tmp_path / "extra.csv"
    data.write_csv(data.generate_sample(30, seed=9), extra)
    merged = data.training_data(DataConfig(sample_rows=40, extra=[str(extra)]), THREE_WAY)
    assert sample_path.stat().st_mtime_ns == mtime  # reused, not rewritten
    assert merged["id"].head(40).tolist() == df["id"].tolist() and 40 < len(merged) <= 70


def test_the_sample_of_a_read_only_checkout_goes_to_the_cache(read_only, tmp_path, monkeypatch, capsys):
    """`make train` from a read-only checkout (CI's shared/, a read-only image) died with an EROFS traceback writing
    data/sample/; the sample goes to the cache, and where neither can be written, one line says so."""
    from arena.train.resume import data_hashes
    from tests.tiny import tiny_train_cfg

    monkeypatch.chdir(read_only)
    monkeypatch.setenv("ARENA_CACHE", str(tmp_path / "cache"))
    df = data.training_data(DataConfig(sample_rows=40), THREE_WAY)
    sample = tmp_path / "cache" / "sample" / "train-40.csv"
    assert sample.is_file() and len(df) == 40 and str(sample) in capsys.readouterr().err
    cfg = tiny_train_cfg("m", "sample", "runs", "data.sample_rows=40")
    assert list(data_hashes(cfg)) == [f"data.train {sample}"]  # what a resume checks is the file trained from
    monkeypatch.setenv("ARENA_CACHE", str(read_only / "cache"))
    with pytest.raises(UserError, match=r"^data.train=sample: the generated sample is "
                       r"written once to data/sample/, or to .*read-only/cache/sample/ in the cache, and neither can "
                       r"be written here: set ARENA_CACHE to a folder that can, or data.train to a training file$"):
        data.training_data(DataConfig(sample_rows=40), THREE_WAY)
    assert list(read_only.iterdir()) == []


def test_training_data_never_falls_back_silently_and_lists_every_bad_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(data.DataError, match="data/train.csv: file not found"):
        data.training_data(DataConfig(train="data/train.csv"), THREE_WAY)
    assert not (tmp_path / "data").exists()
    with pytest.raises(data.DataError) as info:
        data.training_data(DataConfig(train="other.csv", extra=["missing.csv"]), THREE_WAY)
    assert [p.split(":")[0] for p in info.value.problems] == ["other.csv", "missing.csv"]


def test_extra_real_data_is_deduplicated_against_the_main_file(shared_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        merged = data.training_data(DataConfig(sample_rows=40, extra=[str(shared_data / "pandalm_human.csv")]), THREE_WAY)
    assert len(merged) == 40 + 900  # pandalm_human.csv repeats 99 (prompt, response_a, response_b) triples


# ---- CLI --------------------------------------------------------------------------------------------

def test_cli_validate(shared_data, tmp_path, capsys):
    from arena.cli import main

    good = str(shared_data / "pandalm_human.csv")
    assert main(["data", "validate", good]) == 0
    assert f"{good}: OK 999 rows" in capsys.readouterr().out

    def mutate(header, rows):
        rows[2][header.index("prompt")] = "not json"

    bad = corrupt_copy(shared_data, tmp_path, mutate)
    before = sorted(tmp_path.rglob("*"))
    assert main(["data", "validate", good, str(bad)]) == 2
    err = capsys.readouterr().err
    assert "row id=pandalm_2" in err and "column prompt: invalid JSON" in err
    assert sorted(tmp_path.rglob("*")) == before


def test_cli_sample(tmp_path, capsys):
    from arena.cli import main

    out = tmp_path / "sample" / "train.csv"
    assert main(["data", "sample", "--rows", "25", "--seed", "3", "--out", str(out)]) == 0
    pd.testing.assert_frame_equal(data.load(out), data.generate_sample(25, seed=3))
    assert main(["data", "sample", "--rows", "25", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_long_problem_lists_are_shortened(tmp_path):
    path = write_rows(tmp_path / "t.csv", [row(str(i), labels=(1, 1, 0)) for i in range(250)])
    with pytest.raises(data.DataError) as info:
        data.load(path)
    assert len(info.value.problems) == 250
    assert str(info.value).splitlines()[-1] == "... and 50 more problems"
    assert data.DataError("one problem").problems == ["one problem"]


def test_real_data_turns_still_load(shared_data):
    """pandalm holds `[true]` turns (a model answered "True"); the competition holds `null` turns."""
    df = data.load(shared_data / "pandalm_human.csv")
    assert any(turns == ["true"] for turns in df["response_a"])


def test_null_turns_are_empty_turns(work):
    df = data.load(turns_csv(work / "t.csv", '[null, "b"]'))
    assert df.loc[1, "response_a"] == ["", "b"]


def test_every_reader_keeps_an_id_spelled_like_na(work):
    """The rehearsal's check of the kernel's submission, score, calibrate and the teachers share one reader."""

    ids = ["NA", "null", "nan", "N/A", "None"]
    sub = probs_csv(work / "sub.csv", ids, [[0.2, 0.3, 0.5]] * len(ids))
    frame = data.read_columns(sub, "submission")
    assert list(frame["id"]) == ids
    data.validate_submission(frame, ids)
