"""Reading the JSON records arena keeps beside its files (head.json, metrics.json, recipe.json, calibration.json, a
pulled run's source, kaggle.json, ...): one reader, whose failure says why, so that each caller only decides what a
missing or damaged record means to it (a problem listed, a row left out of a table, a default)."""

from __future__ import annotations

import json
from pathlib import Path

from arena.errors import UserError


class RecordError(UserError):
    """A record that is missing, unreadable, not JSON or not a JSON object: `path`, and `why` in words."""

    def __init__(self, path: Path, why: str, missing: bool = False, damaged: bool = False):
        super().__init__(f"{path}: {why}" + ("; the file is damaged" if damaged else ""))
        self.path, self.why, self.missing = path, why, missing


def read_record(path: str | Path, what: str = "", quote_errors: bool = True) -> dict:
    """The JSON object in `path`; RecordError otherwise. `what` (what the file should hold) is named when it is
    missing. `quote_errors=False` names only the kind of a parse error, for files holding secrets (a JSON error's
    message can quote the text around it)."""
    path = Path(path)
    if not path.exists():
        raise RecordError(path, "missing" + (f" ({what})" if what else ""), missing=True)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RecordError(path, f"not readable ({exc.strerror or type(exc).__name__})") from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        detail = f"{type(exc).__name__}: {exc}" if quote_errors else type(exc).__name__
        raise RecordError(path, f"not valid JSON ({detail})", damaged=True) from None
    if not isinstance(record, dict):
        raise RecordError(path, f"a JSON {type(record).__name__}, not an object" + (f" ({what})" if what else ""))
    return record


def record_or_none(path: str | Path, problems: list[str] | None = None, what: str = "",
                   missing_is_a_problem: bool = True) -> dict | None:
    """read_record for callers that gather every problem before they stop: None when it fails, with why appended to
    `problems` (a missing file only when `missing_is_a_problem`)."""
    try:
        return read_record(path, what)
    except RecordError as exc:
        if problems is not None and (missing_is_a_problem or not exc.missing):
            problems.append(str(exc))
        return None
