"""Checks between keys, and against the base model's config.json (read as plain JSON: no model code, no weights)."""

from __future__ import annotations

import json

from arena import embedded, task
from arena.config.schema import Config


def model_positions(model_path: str) -> tuple[int, str] | None:
    """(max_position_embeddings, its config.json) of a base model on disk, read as plain JSON (no model code, no
    weights); None when the folder (or the embedded model's converted copy) is not there yet."""
    path = embedded.local_folder(model_path) / "config.json"
    try:
        hf = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # absent here (a Kaggle path), or damaged: the model checks name that
        return None
    hf = hf if isinstance(hf, dict) else {}
    limit = hf.get("max_position_embeddings", (hf.get("text_config") or {}).get("max_position_embeddings"))
    return (limit, str(path)) if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0 else None


def length_problems(cfg: Config, positions: int, source: str) -> list[tuple[str, str]]:
    """(key, problem) for prompt.max_length and infer.max_length beyond the model's `positions`."""
    return [(key, f"{length} is more than the {positions} positions the base model has (max_position_embeddings "
                  f"in {source})")
            for key, length in (("prompt.max_length", cfg.prompt.max_length), ("infer.max_length", cfg.infer.max_length))
            if length > positions]


def relations(cfg: Config) -> list[tuple[str, str]]:
    """(key, problem) for values that are fine alone but not together (and with the base model's config.json)."""
    problems = []
    positions = model_positions(cfg.model.path)
    if positions:
        problems += length_problems(cfg, *positions)
    floor = 3 * cfg.prompt.min_tokens
    for key, length in (("prompt.max_length", cfg.prompt.max_length), ("infer.max_length", cfg.infer.max_length)):
        if length < floor:
            problems.append((key, f"{length} cannot hold 3 parts of prompt.min_tokens={cfg.prompt.min_tokens} "
                                  f"tokens (needs at least {floor}, plus the format's scaffold)"))
    if cfg.prompt.prompt_share + cfg.prompt.response_share <= 0:
        problems.append(("prompt.prompt_share", "0 with prompt.response_share 0: no part of an example gets a share"))
    if cfg.data.fold >= cfg.data.folds:
        problems.append(("data.fold", f"{cfg.data.fold} is not in 0..{cfg.data.folds - 1} (data.folds={cfg.data.folds})"))
    if cfg.train.swap_augment == "paired":
        if cfg.train.per_device_batch_size % 2:
            problems.append(("train.per_device_batch_size", f"{cfg.train.per_device_batch_size} is odd: "
                             "train.swap_augment paired puts each row and its swapped twin in the same batch"))
        if cfg.train.sampling != "random":
            problems.append(("train.sampling", f"{cfg.train.sampling} would split the swapped twins of "
                             "train.swap_augment paired (use random)"))
    if cfg.train.teacher_weights is not None and len(cfg.train.teacher_weights) != len(cfg.data.teacher):
        problems.append(("train.teacher_weights", f"{len(cfg.train.teacher_weights)} weight(s) for "
                         f"{len(cfg.data.teacher)} teacher CSV(s) in data.teacher"))
    unset = [f"task.{k}" for k, v in vars(cfg.task).items() if v == "auto"]
    if cfg.kaggle.competition not in task.COMPETITIONS and unset:
        problems.append(("kaggle.competition", f"{cfg.kaggle.competition}: arena knows the task of "
                         f"{', '.join(task.COMPETITIONS)}; for another competition set {', '.join(unset)}"))
    if cfg.train.max_steps == 0:
        problems.append(("train.max_steps", "0 trains nothing (-1: as many as train.epochs take)"))
    return problems
