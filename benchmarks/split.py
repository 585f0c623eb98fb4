"""Splitting the shared files by prompt into training and held-out rows, and the measured composition of each."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from arena import data
from benchmarks.plan import Plan


def prompt_keys(df: pd.DataFrame) -> pd.Series:
    return pd.Series([json.dumps(list(p), ensure_ascii=False) for p in df["prompt"]], index=df.index)


def split_by_prompt(df: pd.DataFrame, held_out_rows: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rest, held_out): whole prompt groups, in a seeded random order, go to the held-out part until it has
    at least `held_out_rows` rows. No prompt is in both parts."""
    keys = prompt_keys(df)
    groups = keys.unique()
    order = np.random.default_rng(seed).permutation(len(groups))
    sizes = keys.value_counts()
    chosen, count = set(), 0
    for i in order:
        if count >= held_out_rows:
            break
        chosen.add(groups[i])
        count += int(sizes[groups[i]])
    held = keys.isin(chosen).to_numpy()
    return df[~held].reset_index(drop=True), df[held].reset_index(drop=True)


@dataclass
class Split:
    train: pd.DataFrame  # every source's training rows, with a `source` column
    main_eval: pd.DataFrame  # held-out rows of the arena-like sources
    side_eval: dict[str, pd.DataFrame]  # held-out rows of sources kept out of the main evaluation
    dropped_for_leaks: int


def source_name(file: str) -> str:
    return Path(file).stem


def build_split(frames: dict[str, pd.DataFrame], plan: Plan, seed: int) -> Split:
    """Hold out whole prompts per source, sample the training rows from the rest, and drop any training row
    whose prompt is held out anywhere (sources could share prompts)."""
    train_parts, main_parts, side = [], [], {}
    held_keys: set[str] = set()
    for i, sp in enumerate(plan.sources):
        df = frames[sp.file].copy()
        df["source"] = source_name(sp.file)
        rest, held = split_by_prompt(df, sp.held_out, seed + i)
        held_keys |= set(prompt_keys(held))
        if sp.train is not None and sp.train < len(rest):
            rest = rest.sample(n=sp.train, random_state=seed + i).reset_index(drop=True)
        train_parts.append(rest)
        if sp.main_eval:
            main_parts.append(held)
        else:
            side[source_name(sp.file)] = held
    dropped = 0
    for j, part in enumerate(train_parts):
        leak = prompt_keys(part).isin(held_keys).to_numpy()
        dropped += int(leak.sum())
        train_parts[j] = part[~leak].reset_index(drop=True)
    train_df = data.merge(train_parts[0], train_parts[1:])
    main_eval = data.merge(main_parts[0], main_parts[1:]) if main_parts else pd.DataFrame()
    return Split(train_df, main_eval, side, dropped)


def _tie_rate(df: pd.DataFrame) -> float | None:
    return float((df["label"] == 2).mean()) if len(df) else None


def file_stats(df: pd.DataFrame) -> dict:
    """A whole file as measured: rows, distinct prompts, rows per prompt, tie rate (and task scenarios, when
    the file has that column)."""
    prompts = int(prompt_keys(df).nunique())
    stats = {"rows": len(df), "prompts": prompts, "rows_per_prompt": len(df) / max(prompts, 1),
             "tie_rate": _tie_rate(df)}
    if "scenario" in df.columns:
        stats["scenarios"] = int(df["scenario"].nunique())
    return stats


def composition(frames: dict[str, pd.DataFrame], plan: Plan, train_df: pd.DataFrame, val_df: pd.DataFrame,
                held_out: dict[str, pd.DataFrame]) -> list[dict]:
    """Per source: the whole file, the rows the model trained and selected its checkpoint on (and their share of
    the training rows), the held-out rows and where they are scored, tie rates."""
    rows = []
    for sp in plan.sources:
        src = source_name(sp.file)

        def part(df, src=src):
            return df[df["source"] == src] if len(df) else df

        held = part(held_out["held-out" if sp.main_eval else src])
        trained = part(train_df)
        rows.append({"source": src, "file": file_stats(frames[sp.file]), "train": len(trained),
                     "train_share": len(trained) / max(len(train_df), 1), "checkpoint_val": len(part(val_df)),
                     "held_out": len(held), "main_eval": sp.main_eval, "tie_train": _tie_rate(trained),
                     "tie_held_out": _tie_rate(held)})
    return rows
