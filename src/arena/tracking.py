"""`arena runs`: one row per run and CV folder under the runs folder (what changed from its recipe, rows, steps,
batch, validation / OOF log loss plain and with swap TTA, the start's validation log loss and whether no checkpoint
beat it, calibrated, wall time, leaderboard score), and the leaderboard scores recorded in each folder (by hand, or
fetched from Kaggle)."""

from __future__ import annotations

import json
import math
from datetime import datetime
from pathlib import Path

import pandas as pd

from arena import config as config_mod
from arena.config.io import read_yaml
from arena.errors import UserError
from arena.kaggle import leaderboard
from arena.kaggle.pull import source
from arena.layout import CVFolder, RunFolder
from arena.records import RecordError, read_record
from arena.writes import write_text

COLUMNS = ["run", "kind", "base model", "changes", "train rows", "steps", "global batch", "val ll", "val ll tta",
           "val acc tta", "start ll", "start kept", "calibrated ll", "wall min", "LB", "LB public", "LB private",
           "LB error", "sweep", "kaggle"]
SORTS = {"time": None, "name": "run", "val": "val ll tta", "lb": "LB"}
# Keys every run sets for itself: never "a change from its recipe".
_OWN_KEYS = {"name", "train.runs_dir"}


def _read_json(path: Path, damaged: list[str] | None = None) -> dict | None:
    """A folder's JSON record, None when absent; one that is there but does not parse (or is not a record) is
    named in `damaged`, so a damaged run is listed as such, never silently as unfinished."""
    try:
        return read_record(path)
    except RecordError as exc:
        if damaged is not None and not exc.missing:
            damaged.append(f"{path}: damaged, left out of the table ({exc.why}); the run's other files are intact")
        return None


def changes(config: dict | None, origin: dict | None) -> str:
    """The keys of a run's resolved config that differ from its recipe, `key=value` (its overrides when the recipe
    cannot be compared, '?' when the run stores no origin)."""
    if origin is None or config is None:
        return "?"
    if origin.get("recipe") is None:
        return " ".join(o for o in origin.get("overrides", []) if o.split("=", 1)[0] not in _OWN_KEYS)
    mine, theirs = config_mod.flat(config), config_mod.flat(origin["recipe"])
    return " ".join(f"{k}={json.dumps(mine.get(k))}" for k in sorted(set(mine) | set(theirs))
                    if k not in _OWN_KEYS and mine.get(k) != theirs.get(k))


def _config(path: Path, damaged: list[str] | None = None) -> dict | None:
    try:
        cfg = read_yaml(path.read_text(encoding="utf-8"), path.name)
    except (OSError, ValueError, UserError) as exc:
        cfg = exc
    if isinstance(cfg, dict) or not path.exists():
        return cfg if isinstance(cfg, dict) else None
    if damaged is not None:
        damaged.append(f"{path}: damaged, left out of the table ({cfg if isinstance(cfg, Exception) else 'not a mapping'})")
    return None


def _is_score(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def scores(folder, damaged: list[str] | None = None) -> list[dict] | None:
    """The scores recorded in a folder's leaderboard.json ([] when it has none); None, with the file named in
    `damaged`, when it is not a list of score records (each score a non-negative number, or none for an error)."""
    board = _read_json(folder.leaderboard, damaged)
    if board is None:
        return None if folder.leaderboard.exists() else []
    entries = board.get("scores")
    if isinstance(entries, list) and all(isinstance(e, dict) and (e.get("score") is None or _is_score(e["score"]))
                                         for e in entries):
        return entries
    if damaged is not None:
        damaged.append(f"{folder.leaderboard}: damaged, left out of the table (not a list of scores from "
                       f"`arena runs --lb/--fetch-lb`); the run's other files are intact")
    return None


def latest_score(folder, damaged: list[str] | None = None) -> float | None:
    """The latest leaderboard score (a Kaggle submission's private score when it has one, else its public)."""
    recorded = [s for s in scores(folder, damaged) or [] if s.get("score") is not None]
    return recorded[-1]["score"] if recorded else None


def lb_columns(folder) -> dict:
    """The runs table's public and private score of the latest Kaggle submission, and Kaggle's error text when
    the latest one errored or timed out."""
    fetched = [s for s in scores(folder) or [] if s.get("source") == "kaggle"]
    latest = fetched[-1] if fetched else {}
    return {"LB public": latest.get("public"), "LB private": latest.get("private"),
            "LB error": latest.get("error") if latest.get("status") == "error" else None}


def _calibrated(folder, damaged: list[str] | None = None) -> float | None:
    return (_read_json(folder.calibration, damaged) or {}).get("log_loss_after_cross_fitted")


def _created(folder) -> float:
    """When the folder was made: its recipe.json or config.yaml are written then and never rewritten."""
    for path in (folder.recipe, getattr(folder, "config", folder.recipe), folder.root):
        if path.exists():
            return path.stat().st_mtime
    return 0.0


def _recipe_name(origin: dict | None) -> str | None:
    return Path(origin["file"]).name if origin and origin.get("file") else None


def run_row(run: RunFolder, name: str) -> dict:
    damaged: list[str] = []
    cfg, origin = _config(run.config, damaged), _read_json(run.recipe, damaged)
    m = _read_json(run.metrics, damaged) or {}
    kind = "run" if m else "damaged" if run.metrics.exists() else "unfinished"
    return {
        "run": name, "kind": kind, "recipe": _recipe_name(origin),
        "base model": ((cfg or {}).get("model") or {}).get("path"), "changes": changes(cfg, origin),
        "train rows": m.get("train_rows"), "steps": m.get("global_step"), "global batch": m.get("global_batch"),
        "val ll": m.get("val_log_loss"), "val ll tta": m.get("val_log_loss_tta"),
        "val acc tta": m.get("val_accuracy_tta"), "start ll": m.get("start_eval_log_loss"),
        "start kept": m.get("start_kept"), "calibrated ll": _calibrated(run, damaged),
        "wall min": m["total_wall_seconds"] / 60 if "total_wall_seconds" in m else None,
        "LB": latest_score(run, damaged), **lb_columns(run),
        "sweep": (origin or {}).get("sweep"), "point": (origin or {}).get("point"),
        "path": str(run.root), "time": _created(run), "damaged": damaged,
        "kaggle": _kaggle_source(run),
    }


def _kaggle_source(run: RunFolder) -> str | None:
    """A pulled run's training kernel and version (`arena kaggle pull`)."""

    pulled = source(run.root)
    return None if pulled is None else f"{pulled['kernel']} v{pulled['version'] or 'latest'}"


def cv_row(cv: CVFolder, name: str, folds: list[dict]) -> dict:
    """A CV folder: OOF log loss with TTA from cv.json; the plain one is the fold log losses weighted by rows
    (a log loss is a mean over rows); rows, steps and wall time summed over its fold runs."""
    damaged: list[str] = []
    summary, origin = _read_json(cv.summary, damaged), _read_json(cv.recipe, damaged)
    first = next((f for f in folds if f["kind"] == "run"), None)
    cfg = _config(RunFolder(Path(first["path"])).config) if first else None
    per_fold = (summary or {}).get("per_fold", [])
    rows = sum(f["rows"] for f in per_fold)
    done = [f for f in folds if f["kind"] == "run"]
    if cfg:
        cfg = {**cfg, "data": {k: v for k, v in cfg["data"].items() if k != "fold"}}
        recipe = (origin or {}).get("recipe")
        origin = origin and {**origin, "recipe": recipe and {**recipe, "data": {
            k: v for k, v in recipe["data"].items() if k != "fold"}}}
    return {
        "run": name, "kind": f"cv {len(per_fold)}/{summary['folds']}" if summary else
        "cv damaged" if cv.summary.exists() else "cv unfinished",
        "recipe": _recipe_name(origin), "base model": ((cfg or {}).get("model") or {}).get("path"),
        "changes": changes(cfg, origin), "train rows": sum(f["train rows"] for f in done) if done else None,
        "steps": sum(f["steps"] for f in done) if done else None,
        "global batch": first["global batch"] if first else None,
        "val ll": sum(f["log_loss"] * f["rows"] for f in per_fold) / rows if rows else None,
        "val ll tta": (summary or {}).get("oof_log_loss"), "val acc tta": (summary or {}).get("oof_accuracy"),
        "calibrated ll": _calibrated(cv, damaged),
        "wall min": sum(f["wall min"] for f in done) if done else None, "LB": latest_score(cv, damaged),
        **lb_columns(cv),
        "sweep": (origin or {}).get("sweep"), "point": (origin or {}).get("point"), "path": str(cv.root),
        "time": _created(cv), "damaged": damaged,
    }


def collect(runs_dir: str | Path, folds: bool = True) -> list[dict]:
    """Every run folder (finished or not) and CV folder under `runs_dir`; with `folds`, also the fold runs inside
    each CV folder (named `<cv folder>/<fold run>`)."""
    root = Path(runs_dir)
    if not root.is_dir():
        raise UserError(f"{root}: no runs folder (train a run first: make train)")
    rows = []
    for path in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if RunFolder(path).config.is_file():
            rows.append(run_row(RunFolder(path), path.name))
            continue
        fold_runs = [run_row(RunFolder(p), f"{path.name}/{p.name}") for p in sorted(path.iterdir())
                     if p.is_dir() and RunFolder(p).config.is_file()]
        if CVFolder(path).is_cv() or fold_runs:
            row = cv_row(CVFolder(path), path.name, fold_runs)
            rows.append(row)
            # Fold runs sort right after their CV folder, whatever the order.
            rows += [{**f, "time": row["time"], "fold_time": f["time"]} for f in fold_runs] if folds else []
    return rows


def damaged_files(rows: list[dict]) -> list[str]:
    """One line per damaged record file behind the rows of `collect` (printed beside the table)."""
    return [line for row in rows for line in row.get("damaged", [])]


def table(rows: list[dict], sort: str = "time") -> pd.DataFrame:
    if sort not in SORTS:
        raise UserError(f"--sort {sort}: one of {', '.join(SORTS)}")
    frame = pd.DataFrame(rows, columns=[*COLUMNS, "time", "fold_time", "path", "point", "recipe"])
    if SORTS[sort] is None:
        frame = frame.sort_values(["time", "fold_time"], kind="stable", na_position="first")
    else:
        frame = frame.sort_values(SORTS[sort], kind="stable", na_position="last")
    return frame[COLUMNS].reset_index(drop=True)


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value).replace("|", "\\|") or "-"


def render(frame: pd.DataFrame, fmt: str = "table") -> str:
    if fmt == "csv":
        return frame.to_csv(index=False)
    minutes = list(frame.columns).index("wall min") if "wall min" in frame.columns else None
    cells = [[f"{v:.1f}" if i == minutes and isinstance(v, float) and not math.isnan(v) else _cell(v)
              for i, v in enumerate(row)] for row in frame.itertuples(index=False)]
    if fmt == "md":
        lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in cells]) + "\n"
    if fmt != "table":
        raise UserError(f"--format {fmt}: one of table, csv, md")
    widths = [max(len(c), *(len(r[i]) for r in cells)) if cells else len(c) for i, c in enumerate(frame.columns)]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip()
                     for line in [list(frame.columns), *cells]) + "\n"


# ---- leaderboard scores -----------------------------------------------------------------------------

def find_folder(runs_dir: str | Path, run: str) -> RunFolder | CVFolder:
    """A run or CV folder: a path, or a name as `arena runs` shows it (under `runs_dir`)."""
    path = Path(run) if Path(run).is_dir() else Path(runs_dir) / run
    if RunFolder(path).config.is_file():
        return RunFolder(path)
    if CVFolder(path).is_cv():
        return CVFolder(path)
    matches = [p for p in Path(runs_dir).glob(f"*/{run}") if RunFolder(p).config.is_file()] \
        if Path(runs_dir).is_dir() else []
    if len(matches) == 1:
        return RunFolder(matches[0])
    raise UserError(f"{run}: not a run or CV folder (nor a run name under {runs_dir}; `arena runs` lists them)")


def record_score(folder: RunFolder | CVFolder, score: float, source: str = "manual", **details) -> bool:
    """Append a leaderboard score to the folder's leaderboard.json (rewritten atomically: every earlier score
    kept). A Kaggle submission (by `ref`) already recorded is not added again; returns whether it was added.
    A submission that errored (details status="error") is recorded without a score."""
    errored = details.get("status") == "error"
    if errored:
        score = None
    elif not _is_score(score):
        raise UserError(f"leaderboard score {score!r}: not a non-negative number")
    board = {"scores": scores(folder)}
    if board["scores"] is None:
        raise UserError(f"{folder.leaderboard}: not a leaderboard record from `arena runs` (fix or move it aside)")
    ref = details.get("ref")
    if ref is not None and any(s.get("ref") == ref for s in board["scores"]):
        return False
    board["scores"].append({"score": None if score is None else float(score), "source": source,
                            "recorded": datetime.now().isoformat(timespec="seconds"), **details})
    write_text(folder.leaderboard, json.dumps(board, indent=2) + "\n", overwrite=True)
    return True


def fetch_scores(runs_dir: str | Path, competition: str) -> list[str]:
    """Leaderboard scores of the competition's submissions whose message names a run here (`arena push` tags
    them); returns one line per score recorded. UserError before any network call without credentials."""

    submissions = leaderboard.fetch_submissions(competition)
    by_name = {}
    for row in collect(runs_dir):
        by_name.setdefault(Path(row["path"]).name, row["path"])
    lines = []
    # oldest first; submissions of the same second in the order Kaggle numbered them
    for sub in sorted(submissions, key=lambda s: (s["date"], int(s["ref"]) if str(s["ref"]).isdigit() else 0)):
        path = by_name.get(sub["run"])
        if path is None:
            lines.append(f"skipped: submission {sub['ref']} names run {sub['run']}, not under {runs_dir}")
            continue
        score = sub["private"] if sub["private"] is not None else sub["public"]
        if sub["status"] != "error" and score is None:
            continue  # pending: nothing to record yet
        if sub["status"] != "error" and not _is_score(score):  # recorded as an error naming it; the others go on
            sub = {**sub, "status": "error", "error": f"Kaggle reported the score {score!r}, not a number"}
        folder = RunFolder(path) if RunFolder(path).config.is_file() else CVFolder(path)
        if record_score(folder, score, "kaggle", ref=sub["ref"], date=sub["date"], description=sub["description"],
                        status=sub["status"], public=sub["public"], private=sub["private"], error=sub["error"]):
            where = f"submission {sub['ref']}, {sub['date']}"
            lines.append(f"recorded ERROR for {sub['run']} ({where}): {sub['error']}" if sub["status"] == "error" else
                         f"recorded {score:.5f} for {sub['run']} ({where}; public {sub['public']}, "
                         f"private {sub['private']})")
    return lines


def sweep_rows(runs_dir: str | Path, name: str) -> list[dict]:
    """The rows of one sweep's runs or CV folders (not the fold runs inside them)."""
    return [r for r in collect(runs_dir, folds=False) if r["sweep"] == name]
