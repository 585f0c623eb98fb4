"""data.extra: the public arena datasets (parquet, JSON, JSONL, competition CSV) as extra training rows, in the
task's labels, with every dropped row counted by reason in one line per file."""

import json

import numpy as np
import pandas as pd
import pytest

from arena import data
from arena.data.extra import read_extras
from arena.task import THREE_WAY, TWO_WAY


def chat(*turns, b=None):
    """OpenAI messages: user / assistant turns alternating; `b`: the assistant turns of side B instead."""
    messages = []
    for i, text in enumerate(turns):
        role = "user" if i % 2 == 0 else "assistant"
        messages.append({"role": role, "content": text if b is None or role == "user" else b[i // 2]})
    return messages


def parts(text):
    """The 140k's typed content: a list of parts."""
    return [{"type": "text", "text": text, "image": None, "mimeType": None}]


def lmsys_33k(path):
    rows = [  # question_id, winner, conversation_a, conversation_b
        ("q1", "model_a", chat("hi", "hello"), chat("hi", "hey")),
        ("q2", "tie (bothbad)", chat("2+2?", "4", "and 3+3?", "6"), chat("2+2?", "four", "and 3+3?", "six")),
        ("q3", "model_b", chat("x", "a"), chat("y", "b")),  # user turns differ
        ("q4", "tie", [{"role": "user", "content": "no answer"}], chat("no answer", "b")),
        ("q5", "bad-vote", chat("p", "a"), chat("p", "b")),
        ("q6", "model_b", chat("nul", "a\x00b"), chat("nul", "b")),  # breaks the text rule
    ]
    pd.DataFrame({"question_id": [r[0] for r in rows], "model_a": "ma", "model_b": "mb",
                  "winner": [r[1] for r in rows], "judge": "arena_user", "conversation_a": [r[2] for r in rows],
                  "conversation_b": [r[3] for r in rows], "turn": 1, "anony": True, "language": "English",
                  "tstamp": 1.0, "toxic_chat_tag": None}).to_parquet(path)
    return path


def arena_140k(path):
    rows = [
        {"id": "v1", "winner": "both_bad", "a": [parts("q"), parts("ans a")], "b": [parts("q"), parts("ans b")]},
        {"id": "v2", "winner": "model_a", "b": [parts("look"), parts("it is a cat")],
         "a": [[{"type": "text", "text": "look", "image": None, "mimeType": None},
                {"type": "image", "text": None, "image": "https://x/cat.png", "mimeType": "image/png"}],
               parts("a cat")]},  # an image part: dropped
        {"id": "v3", "winner": "model_b", "a": [parts("two"), [{"type": "text", "text": "one"},
                                                                 {"type": "text", "text": "part"}]],
         "b": [parts("two"), parts("b\u2028c")]},  # a line separator, written raw below
    ]
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            conv = {side: [{"role": role, "content": c} for role, c in zip(("user", "assistant"), r[side])]
                    for side in "ab"}
            f.write(json.dumps({"id": r["id"], "model_a": "ma", "model_b": "mb", "winner": r["winner"],
                                "evaluation_order": 1, "conversation_a": conv["a"], "conversation_b": conv["b"],
                                "full_conversation": [], "language": "en"}, ensure_ascii=False) + "\n")
    return path


def arena_100k(path):
    records = [
        {"question_id": "h1", "model_a": "ma", "model_b": "mb", "winner": "model_b", "judge_hash": "j",
         "conversation_a": chat("hola", "buenas"), "conversation_b": chat("hola", "que tal"), "language": "Spanish"},
        {"question_id": "h2", "model_a": "ma", "model_b": "mb", "winner": "model_a", "judge_hash": "j",
         "conversation_a": json.dumps(chat("as text", "a")), "conversation_b": json.dumps(chat("as text", "b")),
         "language": "English"},  # the conversations as JSON text
        {"question_id": "h3", "model_a": "ma", "model_b": "mb", "winner": "model_a", "judge_hash": "j",
         "conversation_a": chat("half \ud83d", "a"), "conversation_b": chat("half \ud83d", "b"),
         "language": "English"},  # a lone surrogate (a JSON "\ud83d" escape)
    ]
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


def ppe(path):
    pd.DataFrame({"question_id": ["p1", "p2", "p3"], "model_a": "ma", "model_b": "mb",
                  "winner": ["model_a", "tie", "model_b"], "prompt": ["what?", "why?", "who?"],
                  "response_1": ["this", "because", None], "response_2": ["that", "so", "me"],
                  "language": "English"}).to_parquet(path)
    return path


def wsdm(path, train):
    """One row equal to a training row, one to a training row with A and B swapped, one repeating the 33k's q1
    as it is, one whose id is the 33k's q1, and one new row."""
    train = train[train["prompt"].map(len) == 1].reset_index(drop=True)  # one turn, as the WSDM's rows
    rows = [
        (train["id"][0], train["prompt"][0][0], train["response_a"][0][0], train["response_b"][0][0], "model_a"),
        ("w2", train["prompt"][1][0], train["response_b"][1][0], train["response_a"][1][0], "model_b"),
        ("w3", "hi", "hello", "hey", "model_a"),  # the 33k's q1 again
        ("q1", "new", "one", "two", "model_b"),
        ("w5", "new", "three", "four", "model_a"),
    ]
    pd.DataFrame(rows, columns=["id", "prompt", "response_a", "response_b", "winner"]).assign(
        model_a="ma", model_b="mb", language="Russian").to_parquet(path)
    return path


@pytest.fixture
def train():
    sample = data.generate_sample(12, seed=0)
    assert (sample["prompt"].map(len) == 1).sum() >= 2
    return sample


@pytest.fixture
def files(tmp_path, train):
    return [str(f(tmp_path / name)) for f, name in ((lmsys_33k, "33k.parquet"), (arena_140k, "140k.jsonl"),
                                                    (arena_100k, "100k.json"), (ppe, "ppe.parquet"))] + \
        [str(wsdm(tmp_path / "wsdm.parquet", train))]


def by_id(df):
    return {r["id"]: r for r in df.to_dict("records")}


def test_each_format_in_three_classes_with_every_drop_reported(files, train, capsys):
    df = read_extras(files, THREE_WAY, [train])
    rows = by_id(df)
    assert list(rows) == ["q1", "q2", "v1", "v3", "h1", "h2", "p1", "p2", "p3", "wsdm-q1", "w5"]
    assert rows["q2"]["prompt"] == ["2+2?", "and 3+3?"] and rows["q2"]["response_b"] == ["four", "six"]
    assert rows["v1"]["response_a"] == ["ans a"] and rows["v3"]["response_a"] == ["one\npart"]
    assert rows["v3"]["response_b"] == ["b\u2028c"]
    assert rows["h2"]["prompt"] == ["as text"] and rows["p3"]["response_a"] == [""]
    assert [rows[i]["label"] for i in ("q1", "q2", "v1", "h1", "p2", "w5")] == [0, 2, 2, 1, 2, 0]
    assert [rows[i]["language"] for i in ("q1", "v1", "h1", "p1", "w5")] == ["English", "en", "Spanish", "English",
                                                                          "Russian"]
    assert df.columns.tolist() == ["id", "model_a", "model_b", "prompt", "response_a", "response_b", "language",
                                   *THREE_WAY.label_columns, "label"]
    labels = df[THREE_WAY.label_columns].to_numpy()
    assert labels.dtype == np.float64 and (labels == np.eye(3)[df["label"]]).all() and df["label"].dtype == np.int64
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        f"extra data {files[0]} (arena-33k): 6 rows in, 2 kept; dropped 1 user turns differ between the two sides, "
        "1 no assistant turn, 1 unknown winner ('bad-vote' x1), 1 text breaks the text rule (NUL or lone surrogate)",
        f"extra data {files[1]} (arena-140k): 3 rows in, 2 kept; dropped 1 non-text content (an image or file part)",
        f"extra data {files[2]} (arena-100k): 3 rows in, 2 kept; dropped 1 text breaks the text rule (NUL or lone "
        "surrogate)",
        f"extra data {files[3]} (ppe): 3 rows in, 3 kept",
        f"extra data {files[4]} (wsdm): 5 rows in, 2 kept; dropped 2 duplicate of a training/test row (either "
        "order), 1 repeat of an extra row",
    ]


def test_a_two_way_task_drops_the_ties(files, train, tmp_path, capsys):
    competition = tmp_path / "55k.csv"
    data.write_csv(data.generate_sample(12, seed=5), competition)
    sample = data.load(competition)
    df = read_extras([*files, str(competition)], TWO_WAY, [train])
    assert df.columns.tolist()[-3:] == [*TWO_WAY.label_columns, "label"]
    assert set(df["label"]) == {0, 1} and "q2" not in set(df["id"]) and "v1" not in set(df["id"])
    assert (df[TWO_WAY.label_columns].to_numpy() == np.eye(2)[df["label"]]).all()
    err = capsys.readouterr().err
    assert "(arena-140k): 3 rows in, 1 kept; dropped 1 tie (two-way task), 1 non-text content" in err
    ties = int((sample["label"] == 2).sum())
    assert 0 < ties < 12 and f"(competition): 12 rows in, {12 - ties} kept; dropped {ties} tie (two-way task)" in err
    assert df["id"].tail(12 - ties).tolist() == sample["id"][sample["label"] < 2].tolist()


def test_a_competition_csv_keeps_its_labels_and_is_deduplicated_against_training(tmp_path, train, capsys):
    competition = tmp_path / "55k.csv"
    rows = pd.concat([train.iloc[:2], data.generate_sample(4, seed=3)], ignore_index=True)
    rows["id"] = [f"c{i}" for i in range(6)]
    data.write_csv(rows, competition)
    df = read_extras([str(competition)], THREE_WAY, [train])
    assert df["id"].tolist() == ["c2", "c3", "c4", "c5"] and df["language"].isna().all()
    assert (df[THREE_WAY.label_columns].to_numpy() == rows[THREE_WAY.label_columns].to_numpy()[2:]).all()
    assert "6 rows in, 4 kept; dropped 2 duplicate of a training/test row" in capsys.readouterr().err


def test_a_file_in_no_known_format_names_its_columns_and_the_formats(tmp_path):
    odd = tmp_path / "odd.parquet"
    pd.DataFrame({"question": ["q"], "chosen": ["a"], "rejected": ["b"]}).to_parquet(odd)
    with pytest.raises(data.DataError) as info:
        read_extras([str(odd)], THREE_WAY, [])
    text = str(info.value)
    assert f"{odd}: not a format arena reads as extra data (columns: question, chosen, rejected)" in text
    assert "ppe (lmarena-ai/PPE-Human-Preference-V1): question_id, prompt, response_1, response_2, winner" in text
    assert "arena-100k (lmarena-ai/arena-human-preference-100k): question_id or id, conversation_a" in text
    competition = tmp_path / "55k.json"
    competition.write_text(data.generate_sample(3).to_json(orient="records"))
    with pytest.raises(data.DataError, match="55k.json: competition-format columns in a .json file: arena reads that "
                                             "format from CSV only"):
        read_extras([str(competition)], THREE_WAY, [])


def test_missing_files_bad_suffixes_and_files_of_no_known_winner_are_errors(tmp_path):
    archive = tmp_path / "data.zip"
    archive.write_bytes(b"PK\x03\x04")
    broken = tmp_path / "broken.parquet"
    broken.write_text("not parquet")
    with pytest.raises(data.DataError) as info:
        read_extras([str(tmp_path / "gone.parquet"), str(archive), str(broken)], THREE_WAY, [])
    assert info.value.problems[:2] == [f"{tmp_path / 'gone.parquet'}: extra data file not found",
                                       f"{archive}: extra data must be .parquet, .json, .jsonl, .csv (extract an "
                                       "archive first)"]
    assert info.value.problems[2].startswith(f"{broken}: not a readable parquet file (")
    votes = tmp_path / "votes.jsonl"
    votes.write_text("\n".join(json.dumps({"id": str(i), "prompt": "p", "response_a": "a", "response_b": "b",
                                           "winner": w}) for i, w in enumerate(["A", "B", "A"])))
    again = tmp_path / "again.json"
    again.write_text(json.dumps([json.loads(line) for line in votes.read_text().splitlines()]))
    with pytest.raises(data.DataError, match="votes.jsonl: no row has a winner arena knows \\(found 'A', 'B'; "
                                             "known: model_a, model_b, tie, tie \\(bothbad\\), both_bad\\)") as info:
        read_extras([str(votes), str(again)], THREE_WAY, [])
    assert info.value.problems[1].startswith(f"{again}: no row has a winner arena knows")
    votes.write_text('{"id": "1"}\n[1, 2]\n')
    with pytest.raises(data.DataError, match="votes.jsonl: line 2 is not a JSON object"):
        read_extras([str(votes)], THREE_WAY, [])


def test_a_one_turn_format_in_a_csv_is_read_through_the_text_rule(tmp_path, capsys):
    votes = tmp_path / "wsdm.csv"
    pd.DataFrame({"id": ["1", "2"], "prompt": ["p", "q"], "response_a": ["a", "c"], "response_b": ["b", "d"],
                  "winner": ["model_b", "tie"]}).to_csv(votes, index=False)
    df = read_extras([str(votes)], TWO_WAY, [])
    assert df[["id", "prompt", "label"]].values.tolist() == [["1", ["p"], 1]] and df["model_a"].isna().all()
    assert "(wsdm): 2 rows in, 1 kept; dropped 1 tie (two-way task)" in capsys.readouterr().err
    votes.write_bytes(votes.read_bytes().replace(b"q", b"\x00"))
    with pytest.raises(data.DataError, match="row id=2 .*column prompt: holds a NUL byte"):
        read_extras([str(votes)], TWO_WAY, [])
