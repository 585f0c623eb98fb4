"""Leaderboard scores from Kaggle: the competition's submissions read through the kaggle CLI (after the
credentials check, so nothing reaches the network without them), matched to runs by the tag `arena push` puts in
each submission message. Its score is the private one where Kaggle shows it (lmsys-chatbot-arena is closed: a
late submission is judged by its private score), else the public one (llm-classification-finetuning is open: its
board is public); a submission whose hidden rerun errored or timed out is kept too, with Kaggle's error text, so
that the failure is seen.

The CLI's table (`kaggle competitions submissions --csv`) has no error text (its fields: ref, fileName, date,
description, status, publicScore, privateScore), so for errored submissions `python -m arena.kaggle.leaderboard`
reads the same list through the CLI's own library (kaggle.api, same credentials) and prints each errorDescription."""

from __future__ import annotations

import io
import json
import re
import sys

import pandas as pd

from arena.errors import UserError
from arena.kaggle.credentials import require_credentials
from arena.kaggle.remote import run_kaggle, run_kaggle_module

_TAG = re.compile(r"\[arena run ([A-Za-z0-9][A-Za-z0-9._-]*)\]")
SUBMISSION_COLUMNS = ["ref", "date", "description", "status", "publicScore", "privateScore"]
PAGE_SIZE = 200


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


def _score(text: str) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):  # pending, failed, or "None"
        return None


def _state(status: str) -> str:
    """"SubmissionStatus.COMPLETE" -> "complete"."""
    return (status or "").rsplit(".", 1)[-1].lower()


def fetch_submissions(competition: str) -> list[dict]:
    """The competition's submissions that `arena push` made: {run, ref, date, description, status, public,
    private, error}; `error` is Kaggle's text for one that errored or timed out. UserError (exit 2) before any
    network call without Kaggle credentials."""
    require_credentials()
    proc = run_kaggle(["competitions", "submissions", competition, "--csv", "--page-size", str(PAGE_SIZE)])
    found = []
    for sub in parse_submissions(proc.stdout).to_dict("records"):
        run = run_in_message(sub["description"])
        if run is None:
            continue
        found.append({"run": run, "ref": sub["ref"], "date": sub["date"], "description": sub["description"],
                      "status": _state(sub["status"]), "public": _score(sub["publicScore"]),
                      "private": _score(sub["privateScore"]), "error": None})
    if any(sub["status"] == "error" for sub in found):
        errors = json.loads(run_kaggle_module("arena.kaggle.leaderboard", [competition]).stdout.strip()
                            .splitlines()[-1])
        for sub in found:
            if sub["status"] == "error":
                sub["error"] = errors.get(str(sub["ref"])) or "(Kaggle gave no error text)"
    return found


def _print_error_descriptions(competition: str) -> None:
    """Run by fetch_submissions in a subprocess: {ref: errorDescription} of the errored submissions, as JSON."""
    from kaggle import api  # authenticates as the CLI does

    subs = api.competition_submissions(competition, page_size=PAGE_SIZE) or []
    print(json.dumps({str(s.ref): s.error_description or "" for s in subs if _state(str(s.status)) == "error"}))


if __name__ == "__main__":
    _print_error_descriptions(sys.argv[1])
