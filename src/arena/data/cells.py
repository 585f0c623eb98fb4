"""The cells of every CSV the package reads: encoding, archives and CSV shape (`cells`), one text rule (no
undecodable byte or NUL in a cell, no lone surrogate or NUL in a decoded turn) or, for a hidden test set, its
repairs, the turns of a text cell, and the one number reader (`parse_number`). Every problem names the file, the
row id (or line) and the column."""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from arena.errors import UserError

MAX_SHOWN_PROBLEMS = 200


# Bytes that are not valid UTF-8 decode (with errors="surrogateescape") to lone surrogates U+DC80..U+DCFF,
# which valid UTF-8 text can never contain.
_BAD_BYTE = re.compile(r"[\udc80-\udcff]")
# What no text may hold once decoded (a JSON "\ud83d" escape is half of an emoji; tokenizers refuse it) and NUL.
_UNSAFE = re.compile(r"[\x00\ud800-\udfff]")
# A plain decimal number, the only spelling of a label or probability (float() also takes "nan", "1_0", "١").
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
REPLACEMENT = "\ufffd"


class DataError(UserError):
    """A data problem; every line names the file and, where it applies, the row id, line and column."""

    def __init__(self, message: str = "", problems: list[str] | None = None):
        problems = list(problems or ([message] if message else []))
        if not message and len(problems) > MAX_SHOWN_PROBLEMS:
            hidden = len(problems) - MAX_SHOWN_PROBLEMS
            message = "\n".join([*problems[:MAX_SHOWN_PROBLEMS], f"... and {hidden} more problems"])
        super().__init__(message, problems)


@dataclass
class _Record:
    first_line: int
    fields: list[str]


@dataclass
class _Row:
    """A record of the right shape: where it is (for messages), its id, and the cells that broke the text rule."""

    where: str
    rid: str
    first_line: int
    fields: list[str]
    bad: set[int]


def _printable(text: str) -> str:
    """Undo surrogate escapes (and spell out lone surrogates and NULs) so that messages can always be printed."""
    text = _BAD_BYTE.sub(lambda m: f"\\x{ord(m.group()) - 0xDC00:02x}", text)
    return _UNSAFE.sub(lambda m: "\\x00" if m.group() == "\x00" else f"\\u{ord(m.group()):04x}", text)


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
    header_end = raw.find(b"\n")
    if b"\x00" in raw[: header_end if header_end >= 0 else len(raw)]:  # NULs past the header are named per cell
        problems.append(f"{name}: binary data or UTF-16 text (NUL bytes in the header line), not a UTF-8 CSV")
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


def _text_problem(text: str) -> str | None:
    """The one text rule, for every decoded string read (a turn, a cell): no lone surrogate, no NUL."""
    match = _UNSAFE.search(text)
    if match is None:
        return None
    if match.group() == "\x00":
        return f"holds a NUL character (at char {match.start()}): not text"
    return (f"holds a lone surrogate \\u{ord(match.group()):04x} at char {match.start()} (half of a UTF-16 pair, "
            f"e.g. a cut emoji): not valid Unicode")


def _repair_text(text: str, repairs: Counter) -> str:
    """Lenient reading: lone surrogates become U+FFFD and NUL characters are dropped, each counted."""
    if _UNSAFE.search(text) is None:
        return text
    repairs["NUL characters dropped"] += text.count("\x00")
    repairs["lone surrogates replaced by U+FFFD"] += len(re.findall(r"[\ud800-\udfff]", text))
    return re.sub(r"[\ud800-\udfff]", REPLACEMENT, text.replace("\x00", ""))


def _turn_text(turn) -> str:
    return "" if turn is None else turn if isinstance(turn, str) else json.dumps(turn, ensure_ascii=False)


def parse_turns(value: str, repairs: Counter | None = None) -> tuple[list[str] | None, str | None]:
    """A JSON list of turns -> list[str]. Returns (turns, error).

    A turn is a string; `null` (a missing turn, as in the competition's data) reads as "", and a JSON boolean
    as its text (real data holds `[true]` where a model answered "True"). Anything else is an error, unless
    `repairs` (lenient reading) is given: then a turn that is not a string becomes its text, a cell that is not
    a JSON list is one turn, and each repair is counted.
    """
    lenient = repairs is not None
    if not value.strip():
        if lenient:
            repairs["empty cells read as one empty turn"] += 1
            return [""], None
        return None, "empty, expected a JSON list of strings"
    try:
        obj = json.loads(value, strict=False)  # tolerate raw control characters (tabs, newlines) in strings
    except json.JSONDecodeError as exc:
        if lenient:
            repairs["cells that are not JSON read as one turn of their text"] += 1
            return [_repair_text(value, repairs)], None
        return None, f"invalid JSON ({exc.msg} at char {exc.pos}): {_snippet(value)}"
    if not isinstance(obj, list):
        if lenient:
            repairs["cells that are not a JSON list read as one turn"] += 1
            obj = [obj]
        else:
            return None, f"expected a JSON list of strings, got a JSON {_JSON_KINDS[type(obj)]}: {_snippet(value)}"
    turns = []
    for i, turn in enumerate(obj, 1):
        if not isinstance(turn, (str, bool, type(None))):
            if not lenient:
                return None, (f"turn {i} is a JSON {_JSON_KINDS[type(turn)]}, expected a string (or null): "
                              f"{_snippet(value)}")
            repairs["turns that are not strings taken as their text"] += 1
        text = _turn_text(turn)
        problem = _text_problem(text)
        if problem and not lenient:
            return None, f"turn {i} {problem}: {_snippet(value)}"
        turns.append(_repair_text(text, repairs) if problem else text)
    return turns, None


def _bad_byte_message(rec: _Record, col_idx: int) -> str | None:
    """The text rule on a raw cell: bytes that are not UTF-8, or a NUL byte, named with their line."""
    value = rec.fields[col_idx]
    match = _BAD_BYTE.search(value) or re.search("\x00", value)
    if match is None:
        return None
    # Quoting never adds newlines, so the line of the bad byte is the record's first line plus the newlines
    # in the fields before it.
    before = sum(f.count("\n") for f in rec.fields[:col_idx]) + value.count("\n", 0, match.start())
    line = rec.first_line + before
    if match.group() == "\x00":
        return f"holds a NUL byte (on line {line}): not text"
    return f"not valid UTF-8 (byte 0x{ord(match.group()) - 0xDC00:02x} on line {line})"


def _repair_bytes(value: str, repairs: Counter) -> str:
    """Lenient reading of a raw cell: undecodable bytes become U+FFFD (as UTF-8 decoding with errors="replace")."""
    if _BAD_BYTE.search(value) is None:
        return value
    repairs["undecodable bytes replaced by U+FFFD"] += len(_BAD_BYTE.findall(value))
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def parse_number(raw) -> tuple[float | None, str | None]:
    """The one reading of a number in a CSV cell (labels, probabilities): a plain decimal, e.g. 1, 0.25, 1e-3.
    Returns (value, None), (None, "missing") for an empty cell, or (None, "not a number")."""
    if not isinstance(raw, str):  # a frame built in memory
        value = float(raw)
        return (None, "missing") if math.isnan(value) else (value, None)
    raw = raw.strip()
    if raw == "":
        return None, "missing"
    if not _NUMBER.fullmatch(raw):
        return None, "not a number"
    return float(raw), None


def parse_label(raw: str) -> tuple[float | None, str | None]:
    value, error = parse_number(raw)
    if error == "missing":
        return None, "missing label"
    if error:
        return None, f"label {_snippet(raw.strip())} is not a number"
    if not 0.0 <= value <= 1.0:
        return None, f"label {raw.strip()} is not in 0..1"
    return value, None


def _parquet_cell(value, as_list: bool) -> str:
    """A parquet cell as the text a CSV would hold: plain strings (or lists of them) of a text column as a JSON
    list of turns (null: one missing turn), other values as their text (null: empty)."""
    if hasattr(value, "tolist"):  # an arrow list column arrives as a numpy array
        value = value.tolist()
    if as_list:
        return json.dumps(value if isinstance(value, list) else [value], ensure_ascii=False)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _read_parquet(path: Path, problems: list[str], list_columns) -> tuple[list[str], list[_Record]] | None:
    """A parquet file's header and records (the row number in place of a line), read by pyarrow."""
    import pyarrow.parquet as pq

    if not path.is_file():
        problems.append(f"{path}: {'not a file' if path.exists() else 'file not found'}")
        return None
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError and others for a damaged file
        problems.append(f"{path}: not a readable parquet file ({type(exc).__name__}: {exc})")
        return None
    header = [str(c) for c in table.column_names]
    if not table.num_rows:
        problems.append(f"{path}: no rows")
    columns = [[_parquet_cell(v, name in list_columns) for v in table.column(i).to_pylist()]
               for i, name in enumerate(header)]
    return header, [_Record(n + 1, list(fields)) for n, fields in enumerate(zip(*columns))]


def cells(path: Path, problems: list[str], repairs: Counter | None = None, list_columns=()):
    """(header, rows) of a CSV or a parquet file (by its suffix), every cell through the text rule; None when
    unreadable. A parquet file's text cells in `list_columns` become JSON lists of turns, as a CSV holds them.
    Rows with the wrong number of fields and cells that break the text rule are named in `problems` (repaired
    and counted instead with `repairs`)."""
    name = str(path)
    parquet = Path(path).suffix.lower() == ".parquet"
    parsed = _read_parquet(Path(path), problems, list_columns) if parquet else _read_records(path, problems)
    if parsed is None:
        return None
    header, records = parsed
    id_index = header.index("id") if "id" in header else None
    rows = []
    for rec in records:
        fields = rec.fields
        rid = fields[id_index] if id_index is not None and id_index < len(fields) else ""
        where = (f"{name}: row id={_printable(rid) if rid.strip() else '?'} "
                 f"({'row' if parquet else 'line'} {rec.first_line})")
        if len(fields) != len(header):
            problems.append(f"{where}: has {len(fields)} fields, the header has {len(header)}")
            continue
        bad = set()
        for i, col in enumerate(header):
            msg = _bad_byte_message(rec, i)
            if msg and repairs is not None:
                fields[i] = _repair_text(_repair_bytes(fields[i], repairs), repairs)
            elif msg:
                problems.append(f"{where}: column {_printable(col)}: {msg}")
                bad.add(i)
        rows.append(_Row(where, fields[id_index] if id_index is not None else "", rec.first_line, fields, bad))
    return header, rows
