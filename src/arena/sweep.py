"""`arena sweep`: a grid of `--set` values (times a list of recipes) trained one point after another, each a
normal run (or CV) folder tagged with the sweep in its recipe.json. Resumable: a point whose run finished is not
trained again, and a point killed mid-run continues from its last checkpoint."""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path

from arena import config as config_mod
from arena import tracking, train
from arena.errors import UserError
from arena.layout import CVFolder, RunFolder, Sweep
from arena.records import record_or_none
from arena.writes import write_text

SWEEPS_DIR = "sweeps"  # under the runs folder; a sweep's plan is kept there, its runs beside the others


def parse_grid(items: list[str]) -> list[tuple[str, list[str]]]:
    """`key=v1,v2,...` items -> (key, values) in order; every malformed item reported at once."""
    grid, problems = [], []
    for item in items:
        key, sep, values = item.partition("=")
        parts = [v.strip() for v in values.split(",")]
        if not sep or not key.strip() or not all(parts):
            problems.append(f"--grid {item!r}: expected key=value1,value2,... (no empty value)")
        elif key.strip() in {k for k, _ in grid}:
            problems.append(f"--grid {item!r}: {key.strip()} is already a grid axis")
        else:
            grid.append((key.strip(), parts))
    if problems:
        raise UserError(problems=problems)
    return grid


def plan_points(recipes: list[str | None], grid: list[tuple[str, list[str]]], overrides: list[str]) -> list[dict]:
    """Every (recipe, grid combination) in order: the recipe varies slowest."""
    combos = list(itertools.product(*(values for _, values in grid))) if grid else [()]
    return [{"recipe": str(Path(r) if r else config_mod.DEFAULT_CONFIG),
             "overrides": [*overrides, *(f"{k}={v}" for (k, _), v in zip(grid, combo))]}
            for r in recipes for combo in combos]


def sweep_name(points: list[dict], cv: int | None, only: list[int] | None) -> str:
    digest = hashlib.sha1(json.dumps([points, cv, only]).encode()).hexdigest()[:8]
    return f"{Path(points[0]['recipe']).stem}-sweep-{digest}"


def _configs(points: list[dict], name: str):
    """The checked config of every point (every problem of every point at once), named after the sweep."""
    cfgs, problems = [], []
    for i, point in enumerate(points):
        try:
            cfg = config_mod.load(point["recipe"], point["overrides"])
            cfgs.append(config_mod.replace(cfg, {"name": f"{name}-p{i}"}, by="arena sweep"))
        except UserError as exc:
            problems += [f"point {i} ({' '.join(point['overrides']) or point['recipe']}): {p}" for p in exc.problems]
    if problems:
        raise UserError(problems=problems)
    return cfgs


def _distinct(points: list[dict], cfgs: list, axes: int) -> list:
    """`cfgs`, UserError when two points resolve to the same config (a grid value or a recipe given twice, also
    spelled differently: 1e-4 and 0.0001): they would train the same run twice."""
    def label(point: dict) -> str:  # the grid's values, else the recipe
        return " ".join(point["overrides"][len(point["overrides"]) - axes:] if axes else []) or point["recipe"]

    seen, problems = {}, []
    for i, (point, cfg) in enumerate(zip(points, cfgs)):
        values = json.dumps({**cfg.to_dict(), "name": None}, sort_keys=True, default=str)
        if values in seen:
            j = seen[values]
            problems.append(f"point {i} ({label(point)}) is point {j} ({label(points[j])}) again: the same config "
                            f"(a value given twice); give each once")
        seen.setdefault(values, i)
    if problems:
        raise UserError(problems=problems)
    return cfgs


def _state(runs_dir: str, name: str, point: int, cv: bool) -> tuple[str, Path | None]:
    """('done' | 'resume' | 'new', the folder to resume): from the folders tagged with this sweep and point."""
    folders = []
    for path in sorted(Path(runs_dir).glob(f"{name}-p{point}-*")) if Path(runs_dir).is_dir() else []:
        layout = CVFolder(path) if cv else RunFolder(path)
        tag = record_or_none(layout.recipe) or {}
        if tag.get("sweep") == name and tag.get("point") == point:
            if (cv and layout.is_cv()) or (not cv and layout.metrics.is_file()):
                return "done", path
            folders.append(path)
    if not cv:
        for path in reversed(folders):
            if train.last_complete_checkpoint(RunFolder(path), quiet=True) is not None:
                return "resume", path
    return "new", None


def run_sweep(recipes: list[str | None], grid_items: list[str], overrides: list[str] = (), cv: int | None = None,
              only: list[int] | None = None, name: str | None = None) -> str:
    """Train every point not finished yet, then print the sweep's rows of the runs table, best first."""
    if only is not None and cv is None:
        raise UserError("--only selects folds of --cv K: give --cv too")
    grid = parse_grid(grid_items)
    points = plan_points(recipes or [None], grid, list(overrides))
    name = name or sweep_name(points, cv, only)
    config_mod.from_dict({"name": name})  # the sweep name must be a folder name too
    cfgs = _distinct(points, _configs(points, name), len(grid))
    runs_dir = cfgs[0].train.runs_dir
    sweep = Sweep(Path(runs_dir) / SWEEPS_DIR / name)
    plan = {"name": name, "points": points, "cv": cv, "only": only}
    if sweep.plan.is_file():
        if json.loads(sweep.plan.read_text(encoding="utf-8")) != plan:
            raise UserError(f"{sweep.plan}: a different sweep already has the name {name}; choose another --name")
    else:
        write_text(sweep.plan, json.dumps(plan, indent=2) + "\n")
    print(f"sweep {name}: {len(points)} point(s); plan in {sweep.plan}")
    for i, (point, cfg) in enumerate(zip(points, cfgs)):
        state, folder = _state(cfg.train.runs_dir, name, i, cv is not None)
        label = f"point {i + 1}/{len(points)} ({' '.join(point['overrides']) or Path(point['recipe']).name})"
        if state == "done":
            print(f"{label}: finished earlier in {folder}")
            continue
        origin = config_mod.origin(point["recipe"], point["overrides"], sweep=name, point=i)
        print(f"{label}: " + (f"resuming {folder}" if state == "resume" else "training"), flush=True)
        if cv is not None:
            train.cross_validate(cfg, folds=cv, only=only, origin=origin)
        else:
            train.train(cfg, resume=str(folder) if folder else None, origin=origin)
    frame = tracking.table(tracking.sweep_rows(runs_dir, name), "val")
    text = tracking.render(frame[frame["kind"] != "unfinished"].drop(columns=["sweep"]))
    print(f"sweep {name}, best first:\n{text}", end="")
    return text
