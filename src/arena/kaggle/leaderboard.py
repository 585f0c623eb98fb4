"""Leaderboard scores from Kaggle: the competition's submissions read through the kaggle CLI (after the
credentials check, so nothing reaches the network without them), matched to runs by the tag `arena push` puts in
each submission message."""

from __future__ import annotations

import io
import re

import pandas as pd

from arena.errors import UserError
from arena.kaggle.credentials import require_credentials
from arena.kaggle.remote import run_kaggle

_TAG = re.compile(r"\[arena run ([A-Za-z0-9][A-Za-z0-9._-]*)\]")
SUBMISSION_COLUMNS = ["ref", "date", "description", "status", "publicScore"]


def tag_message(message: str, run_name: str) -> str:
    """The submission message `arena push` sends: the user's message and the run folder's name."""
    return f"{message} [arena run {run_name}]"


def run_in_message(description: str) -> str | None:
    match = _TAG.search(description or "")
    return match.group(1) if match else None


def parse_submissions(text: str) -> pd.DataFrame:
    """`kaggle competitions submissions --csv` output (after any notice lines) as a frame."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("ref,")), None)
    if start is None:
        if "No submissions found" in text:
            return pd.DataFrame(columns=SUBMISSION_COLUMNS)
        raise UserError("`kaggle competitions submissions` printed no CSV table; its output is above")
    frame = pd.read_csv(io.StringIO("\n".join(lines[start:])), dtype=str, keep_default_na=False)
    missing = [c for c in SUBMISSION_COLUMNS if c not in frame.columns]
    if missing:
        raise UserError(f"`kaggle competitions submissions` lacks the column(s) {', '.join(missing)}")
    return frame


def fetch_scored_submissions(competition: str) -> list[dict]:
    """The competition's scored submissions that `arena push` made: {run, score, ref, date, description}.
    UserError (exit 2) before any network call without Kaggle credentials."""
    require_credentials()
    proc = run_kaggle(["competitions", "submissions", competition, "--csv", "--page-size", "200"])
    found = []
    for sub in parse_submissions(proc.stdout).to_dict("records"):
        run = run_in_message(sub["description"])
        try:
            score = float(sub["publicScore"])
        except ValueError:  # pending or failed: no score yet
            continue
        if run is not None:
            found.append({"run": run, "score": score, "ref": sub["ref"], "date": sub["date"],
                          "description": sub["description"], "status": sub["status"]})
    return found
