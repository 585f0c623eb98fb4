"""Row sets: the A<->B swap of rows, deduplication, merging extra datasets, and the training rows a config names
(a CSV plus extras, or the generated sample)."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from arena.config import SAMPLE
from arena.data.cells import DataError
from arena.data.extra import read_extras
from arena.data.files import REQUIRED_COLUMNS, canonical, label_matrix, load, row_keys, write_csv
from arena.data.synthetic import generate_sample
from arena.embedded import cache_dir
from arena.errors import UserError
from arena.task import Task, of_columns, swap_classes
from arena.writes import output_problems

SAMPLE_DIR = Path("data/sample")


def swap_ab(df: pd.DataFrame) -> pd.DataFrame:
    """The rows seen from the other side: responses and models exchanged, labels and `label` swapped
    (arena.task.swap_classes). Ids are kept."""
    out = df.copy()
    for a, b in (("response_a", "response_b"), ("model_a", "model_b")):
        if a in df.columns and b in df.columns:
            out[a] = df[b]
            out[b] = df[a]
    labels = label_matrix(df)
    if labels is not None:
        out[of_columns(df.columns).label_columns] = swap_classes(labels)
    if "label" in df.columns:
        out["label"] = swap_classes(df["label"].to_numpy())
    return out


def dedup(df: pd.DataFrame) -> pd.DataFrame:
    """Drop rows whose (prompt, response_a, response_b) repeats an earlier row; index reset."""
    return df[~row_keys(df).duplicated()].reset_index(drop=True)


def merge(main: pd.DataFrame, extras: list[pd.DataFrame]) -> pd.DataFrame:
    """Append extra datasets after `main`. Extra rows that repeat a (prompt, response_a, response_b) already
    seen are dropped; ids that collide get a suffix. Only shared columns are kept (required ones must exist)."""
    if not extras:
        return main.reset_index(drop=True)
    required = list(REQUIRED_COLUMNS)
    if label_matrix(main) is not None:
        required += of_columns(main.columns).label_columns
    problems = []
    for i, extra in enumerate(extras, 1):
        missing = [c for c in required if c not in extra.columns]
        if missing:
            problems.append(f"extra dataset #{i}: missing column(s) {', '.join(missing)}")
    if problems:
        raise DataError(problems=problems)

    # a language any file has is kept (missing elsewhere): results by segment read it
    columns = [c for c in main.columns if all(c in e.columns for e in extras) or c in required]
    columns += [c for c in ("language",) if c not in columns and any(c in e.columns for e in [main, *extras])]
    seen_rows = set(row_keys(main))
    seen_ids = set(main["id"])
    parts = [main.reindex(columns=columns)]
    for i, extra in enumerate(extras, 1):
        keys = row_keys(extra)
        keep = []
        for key in keys:
            keep.append(key not in seen_rows)
            seen_rows.add(key)
        part = extra.loc[keep].reindex(columns=columns)
        new_ids = []
        for rid in part["id"]:
            new, n = rid, 1
            while new in seen_ids:
                new = f"{rid}_extra{i}" + (f"_{n}" if n > 1 else "")
                n += 1
            seen_ids.add(new)
            new_ids.append(new)
        part["id"] = new_ids
        parts.append(part)
    return canonical(pd.concat(parts, ignore_index=True))


def sample_path(rows: int, task: Task) -> Path:
    """The generated sample in the task's form: train-N.csv (three-way) or two-way-train-N.parquet (two-way), in
    data/sample/, or in the cache's sample/ folder when data/sample/ cannot be written (a read-only checkout)."""
    name = f"{task.labels}-train-{rows}" if task.labels == "two-way" else f"train-{rows}"
    local = SAMPLE_DIR / f"{name}.{task.data_format}"
    if local.exists() or not output_problems(local, "sample"):
        return local
    return cache_dir() / "sample" / local.name


def training_data(cfg_data, task: Task) -> pd.DataFrame:
    """The training rows a DataConfig names for the task: data.train (a CSV or parquet file, or "sample" for the
    generated sample in the task's form, written once to data/sample/), plus the data.extra files (any format
    arena.data.extra reads; rows repeating a training or test row dropped), deduplicated when data.dedup. Raises
    DataError listing the problems of every file."""
    if cfg_data.train == SAMPLE:
        path = sample_path(cfg_data.sample_rows, task)
        if not path.exists():
            if output_problems(path, "sample"):
                raise UserError(f"data.train=sample: the generated sample is written once to {SAMPLE_DIR}/, or to "
                                f"{path.parent}/ in the cache, and neither can be written here: set ARENA_CACHE to a "
                                f"folder that can, or data.train to a training file")
            try:
                write_csv(generate_sample(cfg_data.sample_rows, seed=0, task=task), path)
            except UserError:
                if not path.exists():  # not another process of the same launch writing the same sample
                    raise
        print(f"note: data.train is the generated sample {path} ({cfg_data.sample_rows} rows); for the "
              f"competition data run `make data` and set data.train=data/train.csv (see data/README.md)",
              file=sys.stderr)
    else:
        path = Path(cfg_data.train)
    main, problems = None, []
    try:
        main = load(path, require_labels=True, task=task)
    except DataError as exc:
        problems.extend(exc.problems)
    extras = None
    if cfg_data.extra:  # the test file beside is read only to drop extra rows that repeat it
        try:
            extras = read_extras(cfg_data.extra, task, [f for f in (main, test_beside(path, task)) if f is not None])
        except DataError as exc:
            problems.extend(exc.problems)
    if problems:
        raise DataError(problems=problems)
    df = merge(main, [extras] if extras is not None else [])
    return dedup(df) if cfg_data.dedup else df


def test_beside(train: Path, task: Task) -> pd.DataFrame | None:
    """The competition's test file beside data.train (where `make data` puts it), so that extra rows repeating a
    test row are dropped; None when there is none or it does not read."""
    path = train.with_name(task.test_file)
    if not path.is_file():
        return None
    try:
        return load(path, task=task)
    except DataError:
        return None
