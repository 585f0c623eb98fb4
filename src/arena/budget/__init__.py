"""Time budgets. inference.py: the deadline of a prediction and its passes within it. Here and in callback.py:
the wall-clock budget of a training process (`train.max_wall_hours`, `arena train --max-wall-hours`): training
stops after the last optimizer step that leaves time to save (budget.callback.WallBudget), saves a whole
checkpoint, records the stop in the run folder (RECORD) and exits with EXIT_CODE; `arena train --resume`
continues it. This module stays light (no transformers import) so that the CLI can catch BudgetStop cheaply."""

from __future__ import annotations

import json
import time
from pathlib import Path

# EX_TEMPFAIL of sysexits.h, "try again later": `arena train` exits with it after a stop for time. Under
# `accelerate launch` the launcher reports any rank's non-zero exit as its own failure (exit 1): read RECORD.
EXIT_CODE = 75
RECORD = "wall_budget.json"  # in the run folder: every stop for time, newest last


def now() -> float:
    """The budget's clock (tests replace it to drive a budget without waiting)."""
    return time.time()


class BudgetStop(Exception):
    """Training stopped for time after a whole checkpoint was saved; the message says how to resume."""

    exit_code = EXIT_CODE

    def __init__(self, message: str, step: int, checkpoint: Path):
        super().__init__(message)
        self.step, self.checkpoint = step, checkpoint


def record_path(run_root: str | Path) -> Path:
    return Path(run_root) / RECORD


def recorded_stops(run_root: str | Path) -> list[dict]:
    """The run's stops for time, oldest first ([] when it never stopped for time)."""
    path = record_path(run_root)
    if not path.is_file():
        return []
    return json.loads(path.read_text(encoding="utf-8")).get("stops", [])
