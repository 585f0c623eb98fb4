"""The public arena datasets as extra training rows (`data.extra`): lmsys/chatbot_arena_conversations (33k),
lmarena-ai/arena-human-preference-100k and -140k (OpenAI message lists), lmarena-ai/PPE-Human-Preference-V1, the
WSDM Cup's train.parquet (plain strings) and competition-format CSVs (arena-human-preference-55k), read from the
.parquet, .json (a list of records, or one record a line), .jsonl or .csv files a user downloaded.

Each file's format follows from its columns (FORMATS). Its rows are rendered into the in-memory form of `files`
(prompt and responses as lists of turns), labelled in the task's classes, checked by the text rule of `cells`, and
deduplicated against the training and test rows and each other; what is not kept is counted, by reason, in one
line per file on stderr.
"""

from __future__ import annotations

import csv
import json
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from arena.data.cells import DataError, _text_problem
from arena.data.files import TEXT_COLUMNS, load, read_table, row_keys
from arena.task import THREE_WAY, TWO_WAY, WINNER_CLASSES, Task

# `winner` -> class (0 = A, 1 = B, 2 = tie). Both-bad votes are ties, as in the competition's labels.
WINNERS = {value: THREE_WAY.label_columns.index(column) for value, column in WINNER_CLASSES.items()}
ROLES = ("user", "assistant")
COLUMNS = ["id", "model_a", "model_b", *TEXT_COLUMNS, "language"]

# The reasons a row is not kept, as the report line names them.
TIE_DROPPED = "tie (two-way task)"
UNKNOWN = "unknown winner"
MALFORMED = "malformed conversation or cell"
NON_TEXT = "non-text content (an image or file part)"
MISMATCH = "user turns differ between the two sides"
NO_ANSWER = "no assistant turn"
TEXT_RULE = "text breaks the text rule (NUL or lone surrogate)"
KNOWN = "duplicate of a training/test row (either order)"
REPEAT = "repeat of an extra row"


@dataclass(frozen=True)
class Format:
    """name: the short name (report lines, and the prefix of an id that would collide); source: where users get
    it; needs: its columns ("a|b": either); texts: the prompt and two response columns of a one-turn format
    (plain strings), none for OpenAI conversations; marks: columns that tell it from a format of the same needs."""

    name: str
    source: str
    needs: tuple[str, ...]
    texts: tuple[str, ...] = ()
    marks: tuple[str, ...] = ()

    def present(self, columns) -> list[str] | None:
        """The columns this format reads from a file with these columns, or None when it is not this format."""
        found = [next((c for c in need.split("|") if c in columns), None) for need in self.needs]
        if None in found or (self.marks and not set(self.marks) & set(columns)):
            return None
        optional = [c for c in ("model_a", "model_b", "language") if c in columns and c not in found]
        return found + optional

    @property
    def describe(self) -> str:
        marks = f" and one of {', '.join(self.marks)}" if self.marks else ""
        return f"{self.name} ({self.source}): {', '.join(n.replace('|', ' or ') for n in self.needs)}{marks}"


_CONVERSATIONS = ("conversation_a", "conversation_b", "winner")
FORMATS = (
    Format("competition", "the competition's train.csv, lmarena-ai/arena-human-preference-55k, `arena predict "
           "--soft-labels`; CSV only", ("id", "prompt", "response_a", "response_b", *TWO_WAY.label_columns)),
    Format("arena-140k", "lmarena-ai/arena-human-preference-140k", ("id", *_CONVERSATIONS),
           marks=("evaluation_order", "full_conversation")),
    Format("arena-100k", "lmarena-ai/arena-human-preference-100k", ("question_id|id", *_CONVERSATIONS),
           marks=("judge_hash", "dedup_tag")),
    Format("arena-33k", "lmsys/chatbot_arena_conversations", ("question_id", *_CONVERSATIONS),
           marks=("openai_moderation", "toxic_chat_tag", "judge")),
    Format("conversations", "any other file of OpenAI conversations", ("question_id|id", *_CONVERSATIONS)),
    Format("ppe", "lmarena-ai/PPE-Human-Preference-V1", ("question_id", "prompt", "response_1", "response_2", "winner"),
           texts=("prompt", "response_1", "response_2")),
    Format("wsdm", "WSDM Cup 2025 train.parquet", ("id", "prompt", "response_a", "response_b", "winner"),
           texts=("prompt", "response_a", "response_b")),
)
SUFFIXES = (".parquet", ".json", ".jsonl", ".csv")


class _Drop(Exception):
    """A row that is not kept; the argument is the reason."""


def _parquet_module():
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise DataError("reading .parquet needs pyarrow: pip install -r requirements.txt (it pins pyarrow)") from exc
    return pq


def _json_records(path: Path) -> list[dict]:
    """A .json file's records (a list of objects, or one object a line as `datasets` writes .json) or a .jsonl
    file's (one object a line)."""
    text = path.read_text(encoding="utf-8", errors="surrogateescape")
    numbered = None
    if path.suffix.lower() == ".json":
        try:
            whole = json.loads(text)
        except json.JSONDecodeError as exc:
            if exc.msg != "Extra data":  # more than one value: one object a line
                raise DataError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno} column {exc.colno})") from None
        else:
            if not isinstance(whole, list):
                raise DataError(f"{path}: one JSON {type(whole).__name__}, expected a list of records or one object "
                                f"a line (pandas: to_json(orient='records'))")
            numbered = [(f"record {i}", r) for i, r in enumerate(whole, 1)]
    if numbered is None:
        numbered = []
        for n, line in enumerate(text.split("\n"), 1):  # not splitlines(): U+2028 may stand inside a string
            if line.strip():
                try:
                    numbered.append((f"line {n}", json.loads(line)))
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}: line {n}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    bad = next((where for where, r in numbered if not isinstance(r, dict)), None)
    if bad:
        raise DataError(f"{path}: {bad} is not a JSON object: expected one object (column -> value) per row")
    return [r for _, r in numbered]


def _open(path: Path):
    """(the file's columns, a function of the columns to read -> its records as dicts)."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        pq = _parquet_module()
        try:
            names = pq.read_schema(path).names
        except Exception as exc:  # pyarrow raises ArrowInvalid, OSError or others for a file that is not parquet
            raise DataError(f"{path}: not a readable parquet file ({exc})") from None
        return names, lambda columns: pq.read_table(path, columns=columns).to_pylist()
    if suffix in (".json", ".jsonl"):
        records = _json_records(path)
        return list(dict.fromkeys(k for r in records for k in r)), lambda columns: records
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        header = [h.strip().removeprefix("\ufeff") for h in next(csv.reader(f), [])]
    return header, lambda columns: read_table(path, "extra data", columns).to_dict("records")


def _detect(path: Path, columns: list[str]) -> Format:
    for fmt in FORMATS:
        if fmt.present(columns) is not None:
            if fmt.name == "competition" and path.suffix.lower() != ".csv":
                raise DataError(f"{path}: competition-format columns in a {path.suffix} file: arena reads that "
                                f"format from CSV only (the competition's or arena-human-preference-55k's train.csv)")
            return fmt
    shown = ", ".join(columns[:20]) + (", ..." if len(columns) > 20 else "")
    raise DataError(problems=[f"{path}: not a format arena reads as extra data (columns: {shown or 'none'}); "
                              f"the formats, with the columns each needs:",
                              *(f"  {fmt.describe}" for fmt in FORMATS)])


def _text(value) -> str:
    """A message's content or a plain cell as text: None is "", typed parts are joined; _Drop otherwise."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise _Drop(MALFORMED)
    texts = []
    for part in value:
        if not isinstance(part, dict):
            raise _Drop(MALFORMED)
        if (part.get("type") or "text") != "text":
            raise _Drop(NON_TEXT)
        text = part.get("text")
        if not isinstance(text, (str, type(None))):
            raise _Drop(MALFORMED)
        texts.append(text or "")
    return "\n".join(texts)


def _messages(conversation) -> tuple[list[str], list[str]]:
    """The user turns and the assistant turns of an OpenAI message list (a list, or its JSON text)."""
    if isinstance(conversation, str):
        try:
            conversation = json.loads(conversation)
        except json.JSONDecodeError:
            raise _Drop(MALFORMED) from None
    if not isinstance(conversation, list):
        raise _Drop(MALFORMED)
    turns: dict[str, list[str]] = {role: [] for role in ROLES}
    for message in conversation:
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise _Drop(MALFORMED)
        turns[message["role"]].append(_text(message.get("content")))
    return turns["user"], turns["assistant"]


def _turns(fmt: Format, record: dict) -> list[list[str]]:
    """prompt, response_a, response_b as lists of turns, padded to the same number of turns."""
    if fmt.texts:
        return [[_text(record.get(c))] for c in fmt.texts]
    user, answers_a = _messages(record.get("conversation_a"))
    user_b, answers_b = _messages(record.get("conversation_b"))
    if not user:
        raise _Drop(MALFORMED)
    if user != user_b:
        raise _Drop(MISMATCH)
    if not answers_a or not answers_b:
        raise _Drop(NO_ANSWER)
    turns = [user, answers_a, answers_b]
    n = max(map(len, turns))
    return [t + [""] * (n - len(t)) for t in turns]


def _winner_class(value, task: Task) -> int:
    cls = WINNERS.get(value.strip()) if isinstance(value, str) else None
    if cls is None:
        raise _Drop(UNKNOWN)
    if cls == 2 and task.classes == 2:
        raise _Drop(TIE_DROPPED)
    return cls


def _rows(path: Path, fmt: Format, id_column: str, records: list[dict], task: Task, dropped: Counter,
          unknown: Counter) -> pd.DataFrame:
    """The records of one file in a one-turn or conversation format, as rows with a class in `label`."""
    if not records:
        raise DataError(f"{path}: no rows")
    rows = []
    for i, record in enumerate(records, 1):
        try:
            label = _winner_class(record.get("winner"), task)
            turns = _turns(fmt, record)
            if any(_text_problem(t) for turn in turns for t in turn):
                raise _Drop(TEXT_RULE)
        except _Drop as drop:
            dropped[drop.args[0]] += 1
            if drop.args[0] == UNKNOWN:
                unknown[repr(record.get("winner"))] += 1
            continue
        rid = record.get(id_column)
        rows.append({"id": f"row{i}" if rid is None or str(rid) == "" else str(rid),
                     **{c: record.get(c) for c in ("model_a", "model_b", "language")},
                     **dict(zip(TEXT_COLUMNS, turns)), "label": label})
    if dropped[UNKNOWN] == len(records):
        values = ", ".join(v for v, _ in unknown.most_common(5))
        raise DataError(f"{path}: no row has a winner arena knows (found {values}; known: {', '.join(WINNERS)})")
    return pd.DataFrame(rows, columns=[*COLUMNS, "label"])


def _competition(path: Path, task: Task, dropped: Counter) -> pd.DataFrame:
    """A competition-format CSV, read as `data.train` is (files.load: every problem is an error). A two-way task
    drops the rows whose largest label is the tie and keeps A and B renormalized; a two-way file (no tie column,
    e.g. `arena predict --soft-labels` in a two-way task) gives a three-way task rows without a tie."""
    df = load(path, require_labels=True)
    if task.classes == 2:
        ties = df["label"] == 2
        dropped[TIE_DROPPED] += int(ties.sum())
        df = df[~ties]
    labels = df.reindex(columns=task.label_columns, fill_value=0.0).to_numpy(dtype="float64")
    out = pd.DataFrame({c: df[c] if c in df.columns else None for c in COLUMNS}).reset_index(drop=True)
    out[task.label_columns] = labels / labels.sum(axis=1, keepdims=True)
    out["label"] = df["label"].to_numpy()
    return out


def _report(path: Path, fmt: Format, rows_in: int, kept: int, dropped: Counter, unknown: Counter) -> str:
    parts = []
    for reason, n in dropped.items():
        if n and reason == UNKNOWN:
            values = ", ".join(f"{v} x{c}" for v, c in unknown.most_common(5))
            more = f", {len(unknown) - 5} more values" if len(unknown) > 5 else ""
            parts.append(f"{n} {reason} ({values}{more})")
        elif n:
            parts.append(f"{n} {reason}")
    rest = f"; dropped {', '.join(parts)}" if parts else ""
    return f"extra data {path} ({fmt.name}): {rows_in} rows in, {kept} kept{rest}"


def _unique_id(rid: str, prefix: str, taken: set[str]) -> str:
    new, n = rid, 1
    while new in taken:
        new = f"{prefix}-{rid}" + (f"-{n}" if n > 1 else "")
        n += 1
    taken.add(new)
    return new


def _swapped_keys(df: pd.DataFrame) -> pd.Series:
    return row_keys(df.rename(columns={"response_a": "response_b", "response_b": "response_a"}))


def _source(path: Path, fmt: Format, columns: list[str], read, task: Task) -> tuple[pd.DataFrame, int, Counter, Counter]:
    """One file's rows in the task's labels, before deduplication: (rows, rows in the file, dropped, unknown)."""
    dropped, unknown = Counter(), Counter()
    if fmt.name == "competition":
        df = _competition(path, task, dropped)
        return df, len(df) + dropped[TIE_DROPPED], dropped, unknown
    present = fmt.present(columns)
    records = read(present)
    df = _rows(path, fmt, present[0], records, task, dropped, unknown)
    df[task.label_columns] = np.eye(task.classes)[df["label"].to_numpy(dtype="int64")]
    return df, len(records), dropped, unknown


def _opened(paths: list[str]) -> list[tuple[Path, Format, list[str], object]]:
    """Each file with its format, columns and reader; DataError naming every file that is missing, of another
    kind, or in no known format."""
    opened, problems = [], []
    for path in map(Path, paths):
        if not path.is_file():
            problems.append(f"{path}: extra data file not found")
        elif path.suffix.lower() not in SUFFIXES:
            problems.append(f"{path}: extra data must be {', '.join(SUFFIXES)} (extract an archive first)")
        else:
            try:
                columns, read = _open(path)
                opened.append((path, _detect(path, columns), columns, read))
            except DataError as exc:
                problems.extend(exc.problems)
    if problems:
        raise DataError(problems=problems)
    return opened


def read_extras(paths: list[str], task: Task, known: list[pd.DataFrame]) -> pd.DataFrame:
    """The rows of the extra data files, in the task's labels: id (the source's, prefixed with the format's short
    name where it would collide), model_a, model_b, prompt, response_a, response_b (lists of turns), language
    (missing where the source has none), the task's label columns (float64) and `label` (int). Rows whose
    (prompt, response_a, response_b), in either order of the responses, is a row of `known` (the training and
    test rows), or that repeats an earlier extra row as it is, are dropped (a swapped repeat is another vote, as
    data.dedup counts it). Prints one line per file to stderr. DataError naming every file
    that is missing, in no known format, without a known winner, or (a CSV) with a problem."""
    opened = _opened(paths)
    known = [k for k in known if len(k)]
    known_keys = {key for k in known for keys in (row_keys(k), _swapped_keys(k)) for key in keys}
    taken_ids = {str(i) for k in known if "id" in k.columns for i in k["id"]}
    seen: set[str] = set()
    parts, problems = [], []
    for path, fmt, columns, read in opened:
        try:
            df, rows_in, dropped, unknown = _source(path, fmt, columns, read, task)
        except DataError as exc:
            problems.extend(exc.problems)
            continue
        keep = []
        for key in row_keys(df):
            reason = KNOWN if key in known_keys else REPEAT if key in seen else None
            if reason:
                dropped[reason] += 1
            seen.add(key)  # the same pair again (a swapped one is another vote, as data.dedup counts it)
            keep.append(reason is None)
        df = df[keep].reset_index(drop=True)
        df["id"] = [_unique_id(rid, fmt.name, taken_ids) for rid in df["id"]]
        print(_report(path, fmt, rows_in, len(df), dropped, unknown), file=sys.stderr, flush=True)
        parts.append(df)
    if problems:
        raise DataError(problems=problems)
    columns = [*COLUMNS, *task.label_columns, "label"]
    out = pd.concat([d[columns] for d in parts], ignore_index=True) if parts else pd.DataFrame(columns=columns)
    out[task.label_columns] = out[task.label_columns].astype("float64")
    out["label"] = out["label"].astype("int64")
    return out
