"""Competition-format data: read and validate CSVs, labels (one-hot or soft), folds, dedup and merge,
a generated learnable sample, and length features for baselines.

In memory, `prompt`, `response_a` and `response_b` hold Python lists of strings (one per turn, all three
padded to the same number of turns); on disk they are JSON-encoded lists, as in the competition's CSVs.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from arena.errors import UserError

LABEL_COLUMNS = ["winner_model_a", "winner_model_b", "winner_tie"]
TEXT_COLUMNS = ["prompt", "response_a", "response_b"]
REQUIRED_COLUMNS = ["id", *TEXT_COLUMNS]
DEFAULT_TRAIN = "data/train.csv"
SUM_TOLERANCE = 1e-3
MAX_SHOWN_PROBLEMS = 200

# Bytes that are not valid UTF-8 decode (with errors="surrogateescape") to lone surrogates U+DC80..U+DCFF,
# which valid UTF-8 text can never contain.
_BAD_BYTE = re.compile(r"[\udc80-\udcff]")


class DataError(UserError):
    """A data problem; every line names the file and, where it applies, the row id, line and column."""

    def __init__(self, message: str = "", problems: list[str] | None = None):
        problems = list(problems or ([message] if message else []))
        if not message and len(problems) > MAX_SHOWN_PROBLEMS:
            hidden = len(problems) - MAX_SHOWN_PROBLEMS
            message = "\n".join([*problems[:MAX_SHOWN_PROBLEMS], f"... and {hidden} more problems"])
        super().__init__(message, problems)


# ---- reading ----------------------------------------------------------------------------------------

@dataclass
class _Record:
    first_line: int
    fields: list[str]


def _printable(text: str) -> str:
    """Undo surrogate escapes so that messages can always be printed."""
    return _BAD_BYTE.sub(lambda m: f"\\x{ord(m.group()) - 0xDC00:02x}", text)


def _snippet(text: str, width: int = 60) -> str:
    text = _printable(text)
    return repr(text if len(text) <= width else text[:width] + "...")


def _read_records(path: Path, problems: list[str]) -> tuple[list[str], list[_Record]] | None:
    """Parse the CSV into a header and records that remember their first line; None when unreadable."""
    name = str(path)
    if not path.exists():
        problems.append(f"{name}: file not found")
        return None
    if not path.is_file():
        problems.append(f"{name}: not a file")
        return None
    text = path.read_bytes().decode("utf-8", errors="surrogateescape").removeprefix("\ufeff")
    if not text.strip():
        problems.append(f"{name}: empty file")
        return None

    csv.field_size_limit(2**31 - 1)  # competition responses can exceed the default 128 KiB per field
    reader = csv.reader(io.StringIO(text, newline=""))
    records = []
    try:
        header = [h.strip() for h in next(reader)]
        first = reader.line_num + 1
        for fields in reader:
            if fields:  # blank lines are skipped, as pandas does
                records.append(_Record(first, fields))
            first = reader.line_num + 1
    except csv.Error as exc:
        problems.append(f"{name}: line {reader.line_num}: malformed CSV: {exc}")
        return None

    for col in header:
        if _BAD_BYTE.search(col):
            problems.append(f"{name}: line 1: header: not valid UTF-8: {_snippet(col)}")
    seen = set()
    for col in header:
        if col in seen:
            problems.append(f"{name}: header: duplicate column {col!r}")
        seen.add(col)
    if not records:
        problems.append(f"{name}: no rows (only a header)")
    return header, records


def _turn_text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def _parse_turns(value: str) -> tuple[list[str] | None, str | None]:
    """A JSON list of turns -> list[str]; a bare JSON value counts as one turn. Returns (turns, error)."""
    if not value.strip():
        return None, "empty, expected a JSON list of strings"
    try:
        obj = json.loads(value, strict=False)  # tolerate raw control characters (tabs, newlines) in strings
    except json.JSONDecodeError as exc:
        return None, f"invalid JSON ({exc.msg} at char {exc.pos}): {_snippet(value)}"
    if not isinstance(obj, list):
        obj = [obj]
    return [_turn_text(v) for v in obj], None


def _bad_byte_message(rec: _Record, col_idx: int) -> str | None:
    value = rec.fields[col_idx]
    match = _BAD_BYTE.search(value)
    if match is None:
        return None
    # Quoting never adds newlines, so the line of the bad byte is the record's first line plus the newlines
    # in the fields before it.
    before = sum(f.count("\n") for f in rec.fields[:col_idx]) + value.count("\n", 0, match.start())
    byte = ord(match.group()) - 0xDC00
    return f"not valid UTF-8 (byte 0x{byte:02x} on line {rec.first_line + before})"


def _parse_label(raw: str) -> tuple[float | None, str | None]:
    raw = raw.strip()
    if raw == "":
        return None, "missing label"
    try:
        value = float(raw)
    except ValueError:
        return None, f"label {_snippet(raw)} is not a number"
    if math.isnan(value):
        return None, "label is NaN"
    if not 0.0 <= value <= 1.0:
        return None, f"label {raw} is not in 0..1"
    return value, None


def _load(path, require_labels: bool | None) -> tuple[pd.DataFrame, int]:
    """Read and check a CSV; returns (frame, number of rows whose turn lists were padded)."""
    path = Path(path)
    name = str(path)
    problems: list[str] = []
    parsed = _read_records(path, problems)
    if parsed is None:
        raise DataError(problems=problems)
    header, records = parsed

    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        problems.append(f"{name}: missing required column(s) {', '.join(missing)} (found: {', '.join(header)})")
    present_labels = [c for c in LABEL_COLUMNS if c in header]
    has_labels = len(present_labels) == len(LABEL_COLUMNS)
    if present_labels and not has_labels:
        absent = [c for c in LABEL_COLUMNS if c not in header]
        problems.append(f"{name}: has label column(s) {', '.join(present_labels)} but not {', '.join(absent)}")
    elif not present_labels and require_labels:
        problems.append(f"{name}: missing label columns {', '.join(LABEL_COLUMNS)} (labels are required here)")

    columns = list(dict.fromkeys(header))
    index = {c: header.index(c) for c in columns}
    values: dict[str, list] = {c: [] for c in columns}
    first_line_of_id: dict[str, int] = {}
    padded = 0

    for rec in records:
        fields = rec.fields
        rid = fields[index["id"]] if "id" in index and index["id"] < len(fields) else ""
        where = f"{name}: row id={_printable(rid) if rid.strip() else '?'} (line {rec.first_line})"
        if len(fields) != len(header):
            problems.append(f"{where}: has {len(fields)} fields, the header has {len(header)}")
            continue
        for col in columns:
            msg = _bad_byte_message(rec, index[col])
            if msg:
                problems.append(f"{where}: column {_printable(col)}: {msg}")

        if "id" in index:
            if not rid.strip():
                problems.append(f"{where}: column id: missing id")
            elif rid in first_line_of_id:
                problems.append(f"{where}: column id: duplicate id (first on line {first_line_of_id[rid]})")
            else:
                first_line_of_id[rid] = rec.first_line

        turns = {}
        for col in TEXT_COLUMNS:
            if col not in index or _BAD_BYTE.search(fields[index[col]]):
                continue
            turns[col], error = _parse_turns(fields[index[col]])
            if error:
                problems.append(f"{where}: column {col}: {error}")
        if all(turns.get(col) is not None for col in TEXT_COLUMNS):
            lengths = {len(t) for t in turns.values()}
            n_turns = max(max(lengths), 1)
            if len(lengths) > 1:
                padded += 1
            for col, t in turns.items():
                turns[col] = t + [""] * (n_turns - len(t))

        labels = []
        if has_labels:
            for col in LABEL_COLUMNS:
                value, error = _parse_label(fields[index[col]])
                if error:
                    problems.append(f"{where}: column {col}: {error}")
                labels.append(value)
            if None not in labels and abs(sum(labels) - 1.0) > SUM_TOLERANCE:
                problems.append(f"{where}: column {'+'.join(LABEL_COLUMNS)}: labels sum to {sum(labels):g}, "
                                f"expected 1")

        for col in columns:
            if col in TEXT_COLUMNS:
                values[col].append(turns.get(col))
            elif has_labels and col in LABEL_COLUMNS:
                values[col].append(labels[LABEL_COLUMNS.index(col)])
            else:
                values[col].append(fields[index[col]])

    if problems:
        raise DataError(problems=problems)
    return _finish(pd.DataFrame(values)), padded


def _finish(df: pd.DataFrame) -> pd.DataFrame:
    """Canonical form: fresh index, str ids, float64 labels, int `label` (argmax: 0=A, 1=B, 2=tie)."""
    df = df.reset_index(drop=True)
    df["id"] = df["id"].astype(str)
    labels = label_matrix(df)
    if labels is not None:
        df[LABEL_COLUMNS] = labels
        df["label"] = labels.argmax(axis=1).astype("int64")
    return df


def load(path, require_labels: bool | None = None) -> pd.DataFrame:
    """Read a competition-format CSV (train.csv or test.csv). Raises DataError listing every problem.

    require_labels: True -> the three label columns must be there; None or False -> optional (all or none).
    """
    df, padded = _load(path, require_labels)
    if padded:
        warnings.warn(f"{path}: {padded} rows have prompt/response lists of different lengths; "
                      f"padded the shorter ones with empty turns", stacklevel=2)
    return df


def validate(path) -> str:
    """Load a CSV and return a one-line summary; raises DataError listing every problem."""
    df, padded = _load(path, None)
    labels = label_matrix(df)
    if labels is None:
        label_text = "labels: none"
    else:
        a, b, t = np.bincount(df["label"], minlength=3)
        soft = "yes" if not np.isin(labels, (0.0, 1.0)).all() else "no"
        label_text = f"labels A/B/tie = {a}/{b}/{t} (soft: {soft})"
    turns = df["prompt"].map(len)
    return (f"{path}: OK {len(df)} rows; {label_text}; turns: mean {turns.mean():.2f}, max {turns.max()}; "
            f"padded rows: {padded}")


def label_matrix(df: pd.DataFrame) -> np.ndarray | None:
    """(n, 3) float probabilities in LABEL_COLUMNS order, or None when df has no labels."""
    if not all(c in df.columns for c in LABEL_COLUMNS):
        return None
    return df[LABEL_COLUMNS].to_numpy(dtype="float64")


# ---- transforms -------------------------------------------------------------------------------------

def swap_ab(df: pd.DataFrame) -> pd.DataFrame:
    """Swap the two sides: responses, models, their win labels and `label` 0<->1. Ids are kept."""
    out = df.copy()
    for a, b in (("response_a", "response_b"), ("model_a", "model_b"), ("winner_model_a", "winner_model_b")):
        if a in df.columns and b in df.columns:
            out[a] = df[b]
            out[b] = df[a]
    if "label" in df.columns:
        out["label"] = np.array([1, 0, 2], dtype="int64")[df["label"].to_numpy()]
    return out


def _row_keys(df: pd.DataFrame) -> pd.Series:
    return pd.Series([json.dumps(row, ensure_ascii=False) for row in zip(*(df[c] for c in TEXT_COLUMNS))],
                     index=df.index)


def dedup(df: pd.DataFrame) -> pd.DataFrame:
    """Drop rows whose (prompt, response_a, response_b) repeats an earlier row; index reset."""
    return df[~_row_keys(df).duplicated()].reset_index(drop=True)


def merge(main: pd.DataFrame, extras: list[pd.DataFrame]) -> pd.DataFrame:
    """Append extra datasets after `main`. Extra rows that repeat a (prompt, response_a, response_b) already
    seen are dropped; ids that collide get a suffix. Only shared columns are kept (required ones must exist)."""
    if not extras:
        return main.reset_index(drop=True)
    required = list(REQUIRED_COLUMNS)
    if label_matrix(main) is not None:
        required += LABEL_COLUMNS
    problems = []
    for i, extra in enumerate(extras, 1):
        missing = [c for c in required if c not in extra.columns]
        if missing:
            problems.append(f"extra dataset #{i}: missing column(s) {', '.join(missing)}")
    if problems:
        raise DataError(problems=problems)

    columns = [c for c in main.columns if all(c in e.columns for e in extras) or c in required]
    seen_rows = set(_row_keys(main))
    seen_ids = set(main["id"])
    parts = [main[columns]]
    for i, extra in enumerate(extras, 1):
        keys = _row_keys(extra)
        keep = []
        for key in keys:
            keep.append(key not in seen_rows)
            seen_rows.add(key)
        part = extra.loc[keep, columns].copy()
        new_ids = []
        for rid in part["id"]:
            new, n = rid, 1
            while new in seen_ids:
                new = f"{rid}_extra{i}" + (f"_{n}" if n > 1 else "")
                n += 1
            seen_ids.add(new)
            new_ids.append(new)
        part["id"] = new_ids
        parts.append(part)
    return _finish(pd.concat(parts, ignore_index=True))


def make_folds(df: pd.DataFrame, k: int, seed: int) -> np.ndarray:
    """Fold index per row: StratifiedGroupKFold stratified by `label` (argmax of soft labels), grouped by
    prompt so that the same prompt never lands in two folds. Deterministic by seed."""
    from sklearn.model_selection import StratifiedGroupKFold

    if k < 2:
        raise DataError(f"folds: k={k}; need at least 2 folds")
    groups = pd.factorize(pd.Series([json.dumps(p, ensure_ascii=False) for p in df["prompt"]]))[0]
    n_groups = int(groups.max()) + 1 if len(groups) else 0
    if n_groups < k:
        raise DataError(f"folds: cannot make {k} folds from {n_groups} distinct prompts ({len(df)} rows)")
    labels = label_matrix(df)
    y = labels.argmax(axis=1) if labels is not None else np.zeros(len(df), dtype="int64")
    folds = np.full(len(df), -1, dtype="int64")
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        # sklearn warns when a class has fewer members than folds; the folds are still valid.
        warnings.filterwarnings("ignore", message="The least populated class")
        for fold, (_, held_out) in enumerate(splitter.split(np.zeros(len(df)), y, groups)):
            folds[held_out] = fold
    return folds


# ---- generated sample -------------------------------------------------------------------------------
# A synthetic, learnable stand-in for train.csv. Each side gets a style (refusal, topicality, length,
# formatting) that shows in its text; a latent score from those plus judge noise picks the winner, with a
# tie when the scores are close or both sides are bad.

_MODELS = [  # name, skill (shifts topicality, length and formatting), refusal rate
    ("gpt-4-1106-preview", 0.8, 0.02), ("gpt-4-0613", 0.6, 0.03), ("claude-2.1", 0.4, 0.08),
    ("claude-instant-1", 0.2, 0.05), ("gpt-3.5-turbo-0613", 0.2, 0.04), ("mixtral-8x7b-instruct-v0.1", 0.3, 0.03),
    ("llama-2-70b-chat", 0.0, 0.15), ("llama-2-13b-chat", -0.2, 0.15), ("vicuna-13b", -0.2, 0.04),
    ("mistral-7b-instruct", -0.3, 0.03), ("zephyr-7b-beta", -0.3, 0.03), ("gemma-7b-it", -0.4, 0.08),
    ("koala-13b", -0.6, 0.05), ("oasst-pythia-12b", -0.7, 0.05), ("chatglm-6b", -0.8, 0.06),
]

_REFUSALS = [
    "I'm sorry, I can't help with that.",
    "I'm sorry, but I can't assist with that request.",
    "As an AI language model, I cannot help with this request.",
    "I apologize, but I am not able to provide that.",
]
_REFUSAL_TAILS = ["", "", " Is there something else I can help you with?",
                  " Please consult a qualified professional instead.", " I hope you understand."]
_OPENERS = ["", "", "Sure! ", "Great question! ", "Certainly. ", "Of course! ", "Here is what I would suggest. "]
_CLOSERS = ["", "", "Let me know if you have any other questions.", "I hope this helps!", "Good luck!",
            "Feel free to ask if anything is unclear."]
_FILLER = [
    "There are many different ways to look at this, and people often disagree.",
    "It really depends on what you are trying to achieve and on your situation.",
    "This is a common question, and the answer is not always simple.",
    "In general, it is a good idea to consider all of the options carefully.",
    "Many people have asked about this over the years, and opinions vary a lot.",
    "Of course, everyone is different, so what works for one person may not work for another.",
    "History shows that things like this change over time in surprising ways.",
    "The weather, the economy and many other factors can play a role as well.",
    "Some experts recommend doing more research before making any decision.",
    "It is also worth remembering that there is no single right answer here.",
    "My favourite season is autumn, when the leaves change colour.",
    "Technology keeps moving quickly, and new tools appear every year.",
]

_CODE = {
    "Python": "```python\ndef {fn}(items):\n    \"\"\"{Task}.\"\"\"\n    result = []\n    for item in items:\n"
              "        result.append(item)\n    return result\n```",
    "JavaScript": "```javascript\nfunction {fn}(items) {\n  // {task}\n  const result = [];\n"
                  "  for (const item of items) {\n    result.push(item);\n  }\n  return result;\n}\n```",
    "Go": "```go\n// {fn}: {task}\nfunc {fn}(items []int) []int {\n\tresult := make([]int, 0, len(items))\n"
          "\tfor _, item := range items {\n\t\tresult = append(result, item)\n\t}\n\treturn result\n}\n```",
    "Rust": "```rust\n/// {Task}.\nfn {fn}(items: &[i32]) -> Vec<i32> {\n    let mut result = Vec::new();\n"
            "    for item in items {\n        result.push(*item);\n    }\n    result\n}\n```",
    "Java": "```java\n// {Task}\npublic static List<Integer> {fn}(List<Integer> items) {\n"
            "    List<Integer> result = new ArrayList<>();\n    for (int item : items) {\n"
            "        result.add(item);\n    }\n    return result;\n}\n```",
}

# Each topic: prompts, subjects (slot values; `kw` are the words that mark an on-topic sentence), on-topic
# sentences, list items (the formatted variant) and follow-up turns.
_TOPICS = {
    "coding": {
        "prompts": ["How do I {task} in {lang}?", "Write a {lang} function to {task}.",
                    "What's the cleanest way to {task} in {lang}? Mine works but it is slow.",
                    "Can you explain how to {task} using {lang}?"],
        "subjects": [
            {"task": "reverse a linked list", "thing": "linked list", "fn": "reverse_list"},
            {"task": "remove duplicates from a list", "thing": "list", "fn": "remove_duplicates"},
            {"task": "merge two sorted arrays", "thing": "sorted arrays", "fn": "merge_sorted"},
            {"task": "parse a CSV file", "thing": "CSV file", "fn": "parse_csv"},
            {"task": "count word frequencies in a text", "thing": "word counts", "fn": "count_words"},
            {"task": "implement binary search", "thing": "binary search", "fn": "binary_search"},
            {"task": "flatten a nested list", "thing": "nested list", "fn": "flatten"},
            {"task": "validate an email address", "thing": "email address", "fn": "is_valid_email"},
        ],
        "extra": {"lang": list(_CODE)},
        "sentences": [
            "To {task} in {lang}, walk through the {thing} once and keep track of where you are.",
            "The important part is to handle an empty {thing} before anything else.",
            "In {lang} this takes only a few lines, and it runs in linear time.",
            "A common mistake when you {task} is to modify the {thing} while iterating over it.",
            "Test the function on a small {thing} first to make sure it behaves as expected.",
            "If performance matters, avoid copying the {thing}; {lang} lets you work in place.",
            "The function {fn} below shows how to {task} in idiomatic {lang}.",
        ],
        "items": ["Check the input {thing} before you start.", "Loop over the {thing} once.",
                  "Return the result instead of printing it.", "Add a test for the edge cases of {fn}."],
        "followups": ["Can you add comments to the code?", "What is the time complexity of this?",
                      "How would I write a unit test for {fn}?", "Can you do it without a loop?"],
    },
    "writing": {
        "prompts": ["Write {piece} about {thing}.", "Can you write {piece} about {thing}? Keep the tone {tone}.",
                    "I need {piece} about {thing} for {occasion}.", "Please write {piece} about {thing}."],
        "subjects": [
            {"thing": "the ocean at night"}, {"thing": "autumn leaves"}, {"thing": "a lost umbrella"},
            {"thing": "my grandmother's kitchen"}, {"thing": "a city waking up"}, {"thing": "morning coffee"},
            {"thing": "a robot learning to paint"}, {"thing": "the first snow of winter"},
        ],
        "extra": {"piece": ["a short poem", "a haiku", "a limerick", "a short story", "a toast"],
                  "tone": ["warm", "funny", "serious", "nostalgic", "hopeful"],
                  "occasion": ["a class assignment", "my sister's birthday", "our team newsletter"]},
        "sentences": [
            "Here is {piece} about {thing}, with a {tone} tone.",
            "Soft light falls on {thing}, and the moment feels {tone} and new.",
            "Every line circles back to {thing}, quiet and {tone}.",
            "I kept the language simple so that the image of {thing} stays clear.",
            "The ending returns to {thing}, so {piece} feels complete.",
            "We remember {thing} long after the day has gone.",
        ],
        "items": ["Title: {Thing}", "Oh, {thing}, you stay with me.", "I think of {thing} and smile.",
                  "And still {thing} calls me home."],
        "followups": ["Can you make it shorter?", "Make it a bit more {tone}.", "Can you give it a title?"],
    },
    "math": {
        "prompts": ["{question}", "Quick math question: {question}", "{question} Please show your work.",
                    "Can you help me with this? {question}"],
        "subjects": [
            {"question": "What is 15% of 240?", "thing": "percent", "ans": "36", "method": "0.15 x 240"},
            {"question": "What is 35% of 80?", "thing": "percent", "ans": "28", "method": "0.35 x 80"},
            {"question": "Solve for x: 3x + 7 = 22.", "thing": "equation", "ans": "x = 5",
             "method": "subtracting 7 and dividing by 3"},
            {"question": "Solve for x: 5x - 4 = 31.", "thing": "equation", "ans": "x = 7",
             "method": "adding 4 and dividing by 5"},
            {"question": "In how many ways can 5 different books be arranged on a shelf?", "thing": "books",
             "ans": "120", "method": "the factorial 5! = 5 x 4 x 3 x 2 x 1"},
            {"question": "What is the derivative of x^3?", "thing": "derivative", "ans": "3x^2",
             "method": "the power rule"},
            {"question": "What is the average of 4, 8, 15 and 23?", "thing": "average", "ans": "12.5",
             "method": "adding the numbers and dividing by 4"},
            {"question": "What is the area of a circle with radius 3?", "thing": "circle",
             "ans": "about 28.27", "method": "the formula pi x r^2"},
        ],
        "extra": {},
        "sentences": [
            "The answer is {ans}.", "We can solve this {thing} problem step by step using {method}.",
            "Using {method}, the result comes out to {ans}.",
            "To check the {thing} result, plug {ans} back into the original question.",
            "So the final answer to this {thing} question is {ans}.",
        ],
        "items": ["Write down what the {thing} question gives us.", "Apply {method}.", "The result is {ans}.",
                  "Check the {thing} answer: {ans} is consistent."],
        "followups": ["Can you explain the second step again?", "How would I check that answer?",
                      "Is there a faster way to do this {thing} problem?"],
    },
    "advice": {
        "prompts": ["How can I {task}?", "Any tips to {task}? I've tried a few things already.",
                    "What's the best way to {task}?", "I really want to {task} this year. Where do I start?"],
        "subjects": [
            {"task": "sleep better", "thing": "sleep", "kw2": "bedtime"},
            {"task": "save money on groceries", "thing": "groceries", "kw2": "budget"},
            {"task": "prepare for a job interview", "thing": "interview", "kw2": "questions"},
            {"task": "start running", "thing": "running", "kw2": "pace"},
            {"task": "learn a new language", "thing": "language", "kw2": "vocabulary"},
            {"task": "deal with a difficult coworker", "thing": "coworker", "kw2": "boundaries"},
            {"task": "stay focused when working from home", "thing": "focus", "kw2": "workspace"},
            {"task": "eat healthier", "thing": "meals", "kw2": "vegetables"},
        ],
        "extra": {},
        "sentences": [
            "If you want to {task}, start small and be consistent.",
            "Pay attention to your {kw2}; for {thing} it matters more than most people think.",
            "Many people who try to {task} find it helps to plan their {kw2} ahead of time.",
            "Give yourself a few weeks before judging whether the change in {thing} is working.",
            "Keep short notes on your {thing} so that you can see what works for you.",
            "Talking to someone who managed to {task} can give you practical ideas.",
        ],
        "items": ["Set a clear goal for your {thing}.", "Plan your {kw2} in advance.",
                  "Track your {thing} every week.", "Be patient: it takes time to {task}."],
        "followups": ["What if I only have ten minutes a day?", "Which of those tips matters most?",
                      "How long until I see results with my {thing}?"],
    },
    "trivia": {
        "prompts": ["{question}", "Quick question: {question}", "I was wondering, {question_lc}",
                    "Settle a debate for us: {question_lc}"],
        "subjects": [
            {"question": "What is the capital of Australia?", "thing": "Australia", "ans": "Canberra",
             "fact": "Canberra was chosen as a compromise between Sydney and Melbourne"},
            {"question": "What is the capital of Canada?", "thing": "Canada", "ans": "Ottawa",
             "fact": "Ottawa sits on the border between Ontario and Quebec"},
            {"question": "Who wrote Pride and Prejudice?", "thing": "Pride and Prejudice", "ans": "Jane Austen",
             "fact": "the novel was published in 1813"},
            {"question": "Who wrote One Hundred Years of Solitude?", "thing": "One Hundred Years of Solitude",
             "ans": "Gabriel García Márquez", "fact": "the novel was first published in Spanish in 1967"},
            {"question": "Why is the sky blue?", "thing": "sky", "ans": "Rayleigh scattering of sunlight",
             "fact": "blue light is scattered more than red light by the air"},
            {"question": "How many bones are in the adult human body?", "thing": "bones", "ans": "206",
             "fact": "babies are born with more bones, some of which fuse later"},
            {"question": "What is the largest planet in the solar system?", "thing": "planet",
             "ans": "Jupiter", "fact": "Jupiter is more than twice as massive as all other planets combined"},
            {"question": "When did the Berlin Wall fall?", "thing": "Berlin Wall", "ans": "1989",
             "fact": "the wall had divided the city since 1961"},
        ],
        "extra": {},
        "sentences": [
            "The short answer is {ans}.", "When it comes to the {thing} question, the answer is {ans}.",
            "A related fact: {fact}.", "Many people are surprised to learn that {fact}.",
            "So, to answer your question about {thing}: {ans}.",
        ],
        "items": ["Answer: {ans}.", "Background: {fact}.", "Topic: {thing}."],
        "followups": ["Interesting! Can you tell me more about {thing}?", "How do you know that?",
                      "Is that still true today?"],
    },
}
_TOPIC_WEIGHTS = {"coding": 0.25, "writing": 0.2, "math": 0.15, "advice": 0.2, "trivia": 0.2}

_SLOT = re.compile(r"\{(\w+)\}")


def _pick(rng: np.random.Generator, items):
    return items[int(rng.integers(len(items)))]


def _fill(template: str, slots: dict) -> str:
    return _SLOT.sub(lambda m: slots.get(m.group(1), m.group(0)), template)


@dataclass
class _Style:
    refusal: bool
    topical: float  # probability that a sentence is on topic
    sentences: float  # mean sentences per turn
    formatted: bool  # code block for coding, a list otherwise


def _sample_style(rng: np.random.Generator, skill: float, refusal_rate: float) -> _Style:
    return _Style(
        refusal=bool(rng.random() < refusal_rate),
        topical=float(1 / (1 + math.exp(-(0.6 + 1.5 * skill + rng.normal(0, 1.4))))),
        sentences=float(np.clip(math.exp(rng.normal(math.log(5.0) + 0.3 * skill, 0.8)), 1, 30)),
        formatted=bool(rng.random() < 0.35 + 0.3 * skill),
    )


def _response_turn(rng: np.random.Generator, topic: dict, slots: dict, style: _Style, coding: bool):
    """One turn of a response: (text, on-topic sentences, sentences)."""
    if style.refusal:
        return _pick(rng, _REFUSALS) + _pick(rng, _REFUSAL_TAILS), 0, 1
    n = max(1, int(rng.poisson(style.sentences)))
    on_topic = rng.random(n) < style.topical
    sentences = [_fill(_pick(rng, topic["sentences"] if on else _FILLER), slots) for on in on_topic]
    paragraphs, i = [], 0
    while i < len(sentences):
        size = int(rng.integers(2, 5))
        paragraphs.append(" ".join(sentences[i:i + size]))
        i += size
    if style.formatted:
        if coding:
            block = _fill(_CODE[slots["lang"]], slots)
        else:
            items = [_fill(t, slots) for t in topic["items"]]
            numbered = rng.random() < 0.5
            block = "\n".join(f"{k}. {t}" if numbered else f"- {t}" for k, t in enumerate(items, 1))
        paragraphs.insert(1 if len(paragraphs) > 1 else len(paragraphs), block)
    text = _pick(rng, _OPENERS) + "\n\n".join(paragraphs)
    closer = _pick(rng, _CLOSERS)
    if closer:
        text += "\n\n" + closer
    return text, int(on_topic.sum()), n


def _score(turns: list[tuple[str, int, int]], style: _Style, coding: bool) -> float:
    """Latent quality: topicality, moderate length, formatting; refusals are heavily penalised."""
    words = np.mean([len(text.split()) for text, _, _ in turns])
    topical = np.mean([on / n for _, on, n in turns])
    length = max(1.0 - ((math.log(words) - math.log(110)) / 0.8) ** 2, -3.0)
    fmt = (1.0 if style.formatted else -0.5) if coding else (0.4 if style.formatted else 0.0)
    return 3.0 * topical + length + fmt - (3.0 if style.refusal else 0.0)


_TIE_MARGIN = 0.9  # |score difference| (after judge noise) below which the judge calls a tie
_BAD_SCORE = 0.5  # both sides below this -> tie ("both are bad")
_JUDGE_NOISE = 0.9


def generate_sample(rows: int, seed: int = 0) -> pd.DataFrame:
    """A generated, learnable dataset in the competition's format (see the section comment above)."""
    if rows < 1:
        raise DataError(f"sample: rows={rows}; need at least 1")
    rng = np.random.default_rng(seed)
    topic_names = list(_TOPIC_WEIGHTS)
    topic_p = np.array(list(_TOPIC_WEIGHTS.values()))
    ids = 10_000 + np.cumsum(rng.integers(1, 5000, size=rows))
    records, seen = [], set()
    while len(records) < rows:
        name = topic_names[rng.choice(len(topic_names), p=topic_p)]
        topic, coding = _TOPICS[name], name == "coding"
        slots = dict(_pick(rng, topic["subjects"]))
        for key, options in topic["extra"].items():
            slots[key] = _pick(rng, options)
        for key in list(slots):
            slots[key[0].upper() + key[1:]] = slots[key][:1].upper() + slots[key][1:]
        if "question" in slots:
            slots["question_lc"] = slots["question"][:1].lower() + slots["question"][1:]

        n_turns = 1 if rng.random() < 0.8 else int(rng.integers(2, 4))
        prompt = [_fill(_pick(rng, topic["prompts"]), slots)]
        followups = list(topic["followups"]) + ["Thanks! Can you give me an example?"]
        for _ in range(n_turns - 1):
            prompt.append(_fill(_pick(rng, followups), slots))

        pair = rng.choice(len(_MODELS), size=2, replace=False)
        sides = []
        for m in pair:
            _, skill, refusal_rate = _MODELS[m]
            style = _sample_style(rng, skill, refusal_rate)
            turns = [_response_turn(rng, topic, slots, style, coding) for _ in range(n_turns)]
            sides.append((turns, _score(turns, style, coding)))
        (turns_a, score_a), (turns_b, score_b) = sides
        if rng.random() < 0.01:  # identical answers happen in the arena; they are ties
            turns_b, score_b = turns_a, score_a

        diff = score_a - score_b + rng.normal(0, _JUDGE_NOISE)
        if turns_a == turns_b or abs(diff) < _TIE_MARGIN or max(score_a, score_b) < _BAD_SCORE:
            label = 2
        else:
            label = 0 if diff > 0 else 1
        response_a = [t for t, _, _ in turns_a]
        response_b = [t for t, _, _ in turns_b]
        key = json.dumps([prompt, response_a, response_b])
        if key in seen:
            continue
        seen.add(key)
        onehot = [0.0, 0.0, 0.0]
        onehot[label] = 1.0
        records.append({
            "id": str(ids[len(records)]), "model_a": _MODELS[pair[0]][0], "model_b": _MODELS[pair[1]][0],
            "prompt": prompt, "response_a": response_a, "response_b": response_b,
            **dict(zip(LABEL_COLUMNS, onehot)),
        })
    return _finish(pd.DataFrame(records))


# ---- writing and the training entry point ----------------------------------------------------------

def write_csv(df: pd.DataFrame, path) -> None:
    """Write in the competition's format (JSON-list text columns); never overwrites an existing file."""
    path = Path(path)
    if path.exists():
        raise DataError(f"{path}: already exists; refusing to overwrite it")
    out = df.drop(columns=["label"], errors="ignore").copy()
    for col in TEXT_COLUMNS:
        if col in out.columns:
            out[col] = [json.dumps([t] if isinstance(t, str) else list(t), ensure_ascii=False) for t in out[col]]
    labels = label_matrix(out)
    if labels is not None and np.isin(labels, (0.0, 1.0)).all():
        out[LABEL_COLUMNS] = labels.astype("int64")
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write aside, then hard-link into place: atomic, and fails instead of overwriting a file that appeared.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        out.to_csv(tmp, index=False, encoding="utf-8", lineterminator="\n")
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise DataError(f"{path}: already exists; refusing to overwrite it") from None
        except OSError:  # file systems without hard links
            if path.exists():
                raise DataError(f"{path}: already exists; refusing to overwrite it") from None
            os.rename(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_for_training(cfg_data) -> pd.DataFrame:
    """Training rows for a DataConfig: data.train (or the generated sample when the default data/train.csv
    is missing), plus data.extra files, deduplicated when data.dedup."""
    train = Path(cfg_data.train)
    if train.is_file():
        df = load(train, require_labels=True)
    elif train.resolve() == Path(DEFAULT_TRAIN).resolve():
        sample = train.parent / "sample" / f"train-{cfg_data.sample_rows}.csv"
        if not sample.exists():
            write_csv(generate_sample(cfg_data.sample_rows, seed=0), sample)
        print(f"note: {train} not found; using the generated sample {sample} ({cfg_data.sample_rows} rows). "
              f"Get the competition data with `make data` (see data/README.md).", file=sys.stderr)
        df = load(sample, require_labels=True)
    else:
        raise DataError(f"{train}: file not found (data.train)")

    extras, problems = [], []
    for extra in cfg_data.extra:
        try:
            extras.append(load(extra, require_labels=True))
        except DataError as exc:
            problems.extend(exc.problems)
    if problems:
        raise DataError(problems=problems)
    df = merge(df, extras)
    return dedup(df) if cfg_data.dedup else df


# ---- length features --------------------------------------------------------------------------------

def _side_stats(turns_column) -> np.ndarray:
    """chars, words, lines and turns (non-empty) per row of a list[str] column."""
    stats = np.zeros((len(turns_column), 4), dtype="float64")
    for i, turns in enumerate(turns_column):
        stats[i, 0] = sum(len(t) for t in turns)
        stats[i, 1] = sum(len(t.split()) for t in turns)
        stats[i, 2] = sum(t.count("\n") + 1 for t in turns if t)
        stats[i, 3] = sum(1 for t in turns if t)
    return stats


LENGTH_FEATURE_NAMES = [
    *(f"{side}_{what}" for side in ("a", "b") for what in (
        "chars", "words", "lines", "log_chars", "log_words", "log_lines", "turns")),
    "diff_chars", "diff_words", "diff_lines",
    "logratio_chars", "logratio_words", "logratio_lines",
    "abs_logratio_chars", "abs_logratio_words", "abs_logratio_lines",
    "prompt_chars", "prompt_log_chars",
]


def length_features(df: pd.DataFrame) -> np.ndarray:
    """Length features (float64, columns LENGTH_FEATURE_NAMES) for a length baseline."""
    a = _side_stats(df["response_a"])
    b = _side_stats(df["response_b"])
    prompt_chars = _side_stats(df["prompt"])[:, :1]
    log_a, log_b = np.log1p(a[:, :3]), np.log1p(b[:, :3])
    ratio = log_a - log_b
    return np.hstack([
        a[:, :3], log_a, a[:, 3:],
        b[:, :3], log_b, b[:, 3:],
        a[:, :3] - b[:, :3], ratio, np.abs(ratio),
        prompt_chars, np.log1p(prompt_chars),
    ]).astype("float64")


# The model's head sees only the log-scale length features (and turn counts): raw counts are heavy-tailed,
# and a head fit on them extrapolates wildly when test responses are much longer than training ones.
HEAD_FEATURE_NAMES = [n for n in LENGTH_FEATURE_NAMES if "log" in n or n.endswith("_turns")]
_HEAD_FEATURES = [LENGTH_FEATURE_NAMES.index(n) for n in HEAD_FEATURE_NAMES]
HEAD_FEATURE_CLIP = 4.0  # standard deviations


def fit_feature_scaler(df: pd.DataFrame) -> dict:
    """Mean/std of the head's length features on training rows (saved with the adapter, used at inference)."""
    x = length_features(df)[:, _HEAD_FEATURES]
    std = x.std(axis=0)
    return {"names": HEAD_FEATURE_NAMES, "mean": x.mean(axis=0).tolist(),
            "std": np.where(std > 1e-6, std, 1.0).tolist()}


def head_features(df: pd.DataFrame, scaler: dict, swap: bool = False) -> np.ndarray:
    """Standardised head features (float32) of the rows, of the A<->B swapped rows with swap=True; clipped so
    that a response far longer than any seen in training cannot push the logits without bound."""
    x = length_features(swap_ab(df) if swap else df)[:, _HEAD_FEATURES]
    z = (x - np.asarray(scaler["mean"])) / np.asarray(scaler["std"])
    return np.clip(z, -HEAD_FEATURE_CLIP, HEAD_FEATURE_CLIP).astype("float32")
