"""The typed run configuration, by concern: schema.py (every setting on one page), constraints.py (the check engine:
types, choices, ranges, typos), relations.py (checks between keys and against the base model's config.json), io.py
(YAML recipes, `--set` overrides, a run's config and its origin). Every problem is reported at once, each naming
the key's dotted path and where its value came from. `from arena import config; config.load(...)` and every name
below keep working from `arena.config`."""

from arena.config.constraints import ConfigError, NonEmpty, Pattern, Range, all_keys
from arena.config.io import (
    CONFIG_DIR,
    DEFAULT_CONFIG,
    dump,
    flat,
    from_dict,
    load,
    load_run,
    load_runs,
    origin,
    replace,
)
from arena.config.relations import length_problems, model_positions
from arena.config.schema import (
    SAMPLE,
    SLUG_PATTERN,
    Competition,
    Config,
    Count,
    DataConfig,
    Family,
    InferConfig,
    KaggleConfig,
    LearningRate,
    ModelConfig,
    PeftConfig,
    Probability,
    PromptConfig,
    Quantization,
    RunName,
    Scheduler,
    Slug,
    TaskConfig,
    TrainConfig,
)

__all__ = ["CONFIG_DIR", "DEFAULT_CONFIG", "SAMPLE", "SLUG_PATTERN", "Competition", "Config", "ConfigError", "Count",
           "DataConfig", "Family", "InferConfig", "KaggleConfig", "LearningRate", "ModelConfig", "NonEmpty", "Pattern",
           "PeftConfig", "Probability", "PromptConfig", "Quantization", "Range", "RunName", "Scheduler", "Slug", "TaskConfig",
           "TrainConfig", "all_keys", "dump", "flat", "from_dict", "length_problems", "load", "load_run", "load_runs",
           "model_positions", "origin", "replace"]
