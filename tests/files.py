"""Files the tests write by hand: CSVs cell by cell, a packable copy of the tiny run (damaged as asked), a file
cut short, a token file; and what a folder holds."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd

from arena import config
from arena.layout import RunFolder
from arena.task import THREE_WAY

LABEL_COLUMNS = THREE_WAY.label_columns


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def write_csv_text(path: Path, header: list[str], rows: list[list]) -> Path:
    frame = pd.DataFrame(rows, columns=header)
    frame.to_csv(path, index=False)
    return path


def turns_csv(path: Path, bad_response_a: str, long_first_row: bool = False) -> Path:
    """One good row and one row whose response_a is `bad_response_a` (raw JSON text); with `long_first_row` the
    good row is 100 KiB long, so that the bad row lies past the first 64 KiB of the file."""
    header = ["id", "prompt", "response_a", "response_b", *LABEL_COLUMNS]
    first = json.dumps(["x" * 100_000 if long_first_row else "a"])
    return write_csv_text(path, header, [["r1", '["hi"]', first, '["b"]', 1, 0, 0],
                                         ["r2", '["hi"]', bad_response_a, '["b"]', 0, 1, 0]])


def probs_csv(path: Path, ids: list[str], probs) -> Path:
    return write_csv_text(path, ["id", *LABEL_COLUMNS], [[i, *p] for i, p in zip(ids, probs)])


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("x")
    return path


def run_copy(work: Path, tiny_run: Path, damage=lambda run: None) -> Path:
    """A copy of the tiny run, packable (its config says where the kernel finds the base model), then damaged."""
    run = RunFolder(work / "inputs" / "run")
    shutil.copytree(tiny_run, run.root, ignore=shutil.ignore_patterns("checkpoints", "predictions", "config.yaml"))
    config.dump(config.load(RunFolder(tiny_run).config, ["kaggle.base_model_kernel_path=/kaggle/input/tiny/1",
                                                         "kaggle.base_model_source=someone/tiny/1"]), run.config)
    damage(run)
    return run.root


def truncate(path: Path, keep: int | None = None) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2 if keep is None else keep])


def kaggle_json(work: Path, text: str) -> bool:
    folder = work / "home" / "kaggle"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "kaggle.json").write_text(text)
    return True
