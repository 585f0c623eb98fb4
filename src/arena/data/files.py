"""Competition-format CSV files: reading with validation (every problem named by file, row id and column),
the label matrix, and the atomic, never-overwriting writer.

In memory, `prompt`, `response_a` and `response_b` hold Python lists of strings (one per turn, all three
padded to the same number of turns); on disk they are JSON-encoded lists, as in the competition's CSVs.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from arena.errors import UserError
from arena.layout import LABEL_COLUMNS, SUM_TOLERANCE
from arena.writes import atomic_file

TEXT_COLUMNS = ["prompt", "response_a", "response_b"]
REQUIRED_COLUMNS = ["id", *TEXT_COLUMNS]
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


_ARCHIVES = {b"PK\x03\x04": "zip archive", b"\x1f\x8b": "gzip file", b"BZh": "bzip2 file",
             b"\xfd7zXZ\x00": "xz file", b"7z\xbc\xaf\x27\x1c": "7z archive"}


def _read_records(path: Path, problems: list[str]) -> tuple[list[str], list[_Record]] | None:
    """Parse the CSV into a header and records that remember their first line; None when unreadable."""
    name = str(path)
    if not path.exists():
        problems.append(f"{name}: file not found")
        return None
    if not path.is_file():
        problems.append(f"{name}: not a file")
        return None
    raw = path.read_bytes()
    for magic, kind in _ARCHIVES.items():
        if raw.startswith(magic):
            problems.append(f"{name}: a {kind}, not a CSV: extract it first (Kaggle's download is a zip: "
                            f"unzip it into a folder and pass the CSV inside)")
            return None
    if b"\x00" in raw[:65536]:
        problems.append(f"{name}: binary data (NUL bytes), not a CSV")
        return None
    text = raw.decode("utf-8", errors="surrogateescape").removeprefix("\ufeff")
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


_JSON_KINDS = {dict: "object", list: "list", str: "string", bool: "boolean", int: "number", float: "number",
               type(None): "null"}


def _parse_turns(value: str) -> tuple[list[str] | None, str | None]:
    """A JSON list of turns -> list[str]. Returns (turns, error).

    A turn is a string; `null` (a missing turn, as in the competition's data) reads as "", and a JSON boolean
    as its text (real data holds `[true]` where a model answered "True"). Anything else is an error.
    """
    if not value.strip():
        return None, "empty, expected a JSON list of strings"
    try:
        obj = json.loads(value, strict=False)  # tolerate raw control characters (tabs, newlines) in strings
    except json.JSONDecodeError as exc:
        return None, f"invalid JSON ({exc.msg} at char {exc.pos}): {_snippet(value)}"
    if not isinstance(obj, list):
        return None, f"expected a JSON list of strings, got a JSON {_JSON_KINDS[type(obj)]}: {_snippet(value)}"
    for i, turn in enumerate(obj, 1):
        if not isinstance(turn, (str, bool, type(None))):
            return None, (f"turn {i} is a JSON {_JSON_KINDS[type(turn)]}, expected a string (or null): "
                          f"{_snippet(value)}")
    return ["" if t is None else json.dumps(t) if isinstance(t, bool) else t for t in obj], None


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
    return canonical(pd.DataFrame(values)), padded


def canonical(df: pd.DataFrame) -> pd.DataFrame:
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


def write_csv(df: pd.DataFrame, path) -> None:
    """Write in the competition's format (JSON-list text columns), atomically; never overwrites a file."""
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
    with atomic_file(path) as tmp:
        out.to_csv(tmp, index=False, encoding="utf-8", lineterminator="\n")
