"""`python -m benchmarks.split_config --work DIR [--all-rows]`: the benchmark's split written into a work folder,
and the default config that trains on it as `make bench` trains: what the measurements beside `make bench` (head_lr,
probe, tta_order, an `arena train` or `sweep` against `benchmarks.versus_start`) share. Writes that config as
DIR/recipe.yaml, for `arena train --config DIR/recipe.yaml`. --all-rows: the same held-out rows, and every
arena-like row outside their prompts to train on (the plan samples some of them, and data.max_rows caps the rest)."""

from __future__ import annotations

import argparse
import dataclasses
import filecmp
import shlex
import tempfile
from pathlib import Path

from arena import config
from benchmarks.measure import human_sources, load_sources, write_split
from benchmarks.plan import FULL, QUICK
from benchmarks.split import build_split


def benchmark_overrides(work: Path, overrides: list[str] = (), quick: bool = False, name: str | None = "bench",
                        all_rows: bool = False) -> list[str]:
    """Writes the benchmark's split into `work` (the human-labelled files; quick: the quick plan's rows; all_rows:
    every arena-like training row) and returns the overrides that train the default config (with `overrides`) on
    its training file, as `make bench` does."""
    seed = config.load(None, list(overrides)).seed
    frames, plan = load_sources(QUICK, True)[:2] if quick else human_sources(FULL)
    if all_rows:
        plan = dataclasses.replace(plan, max_rows=None, sources=[
            dataclasses.replace(s, train=None) if s.main_eval else s for s in plan.sources])
    write_same_split(build_split(frames, plan, seed), work)
    return [*([f"name={name}"] if name else []), *(plan.overrides if quick else []), *overrides,
            f"data.train={work / 'train.csv'}", "data.extra=[]", f"data.folds={plan.folds}", "data.fold=0",
            f"data.max_rows={'null' if plan.max_rows is None else plan.max_rows}", f"train.runs_dir={work / 'runs'}"]


def benchmark_config(work: Path, overrides: list[str] = (), quick: bool = False, name: str = "bench"):
    return config.load(None, benchmark_overrides(work, overrides, quick, name))


def write_same_split(split, work: Path) -> None:
    """The split's files in `work`; a folder that has them already keeps them when they are the same files (a
    rerun), and is refused when they differ (another seed or plan)."""
    if not (work / "train.csv").exists():
        write_split(split, work)
        return
    with tempfile.TemporaryDirectory(dir=work) as fresh:
        write_split(split, Path(fresh))
        differ = [p.name for p in Path(fresh).iterdir()
                  if not (work / p.name).is_file() or not filecmp.cmp(p, work / p.name, shallow=False)]
    if differ:
        raise SystemExit(f"{work}: holds another split ({', '.join(sorted(differ))} differ); use a new --work folder")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.split_config", description=__doc__.split("\n")[0])
    parser.add_argument("--work", required=True, help="folder for the split (train.csv, eval.csv, eval_*.csv)")
    parser.add_argument("--all-rows", action="store_true", help="train on every arena-like row outside the held-out "
                                                                 "prompts")
    args = parser.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    overrides = benchmark_overrides(work, name=None, all_rows=args.all_rows)  # the name is the user's
    cfg, recipe = config.load(None, overrides), work / "recipe.yaml"
    if not recipe.exists():
        config.dump(cfg, recipe)
    elif config.load(recipe).to_dict() != cfg.to_dict():
        raise SystemExit(f"{recipe}: holds another recipe; use a new --work folder")
    print(f"{recipe}: the default config with {' '.join(shlex.quote(o) for o in overrides)}\n"
          f"train on it: arena train --config {shlex.quote(str(recipe))} --set name=NAME [--set KEY=VALUE ...]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
