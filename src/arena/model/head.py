"""The PreferenceHead (a logit per class of the task, from the last real token's hidden state, plus length
features), its initial bias, and head.json: the head's shape, feature scaling and class prior, written, read and
checked."""

from __future__ import annotations

import json
import math

import torch

from arena import task
from arena.config import Config
from arena.errors import UserError
from arena.layout import RunFolder
from arena.records import record_or_none


def num_labels(cfg: Config) -> int:
    """The head's outputs: one per class of the config's task (arena.task)."""
    return task.of_config(cfg).classes


# head.json's format: 2 since the model takes its features as a forward argument. Format 1 (no "format" key)
# saved the same weights under the same names, so it loads unchanged.
HEAD_FORMAT = 2


# The head's module name in PreferenceModel (as in transformers' sequence-classification classes, so peft's SEQ_CLS
# task keeps it trainable and saved); its tensors are "<...>.score.<name inside the head>" in state dicts.
HEAD_MODULE = "score"


def name_in_head(parameter: str) -> str | None:
    """The name inside the head of a full parameter or tensor name ("proj.weight"), None when it is not the head's."""
    marker = f".{HEAD_MODULE}."
    full = f".{parameter}"
    return full.split(marker, 1)[1] if marker in full else None


def head_bias(cfg: Config, class_prior) -> list[float] | None:
    """Initial bias of the score head: the log class prior, or None for a bias-free head."""
    if cfg.model.head_init != "prior":
        return None
    if class_prior is None:
        class_prior = [1 / num_labels(cfg)] * num_labels(cfg)
    prior = [max(float(p), 1e-4) for p in class_prior]
    total = sum(prior)
    return [math.log(p / total) for p in prior]


class PreferenceHead(torch.nn.Module):
    """Logits (n, classes) from the hidden state at each row's last real token, RMS-normalised, plus (optionally) a
    linear map of standardised length features of the full, untruncated texts.

    Gemma hidden states have norms in the hundreds, dominated by a few fixed outlier dimensions: fed raw,
    every optimizer step moves all logits together. Normalising makes one learning rate fit the head.
    """

    def __init__(self, hidden_size: int, num_features: int, bias: bool, dtype: torch.dtype, classes: int):
        super().__init__()
        self.proj = torch.nn.Linear(hidden_size, classes, bias=bias, dtype=dtype)
        self.features = torch.nn.Linear(num_features, classes, bias=False, dtype=dtype) if num_features else None

    def forward(self, hidden: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        h = hidden.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6)
        logits = self.proj(h.to(self.proj.weight.dtype))
        if self.features is not None:
            if features is None:
                raise ValueError(f"this head reads {self.features.in_features} length features: pass features=")
            logits = logits + self.features(features.to(device=logits.device, dtype=self.features.weight.dtype))
        return logits


def model_classes(model) -> int:
    """The logits per row of a model holding a PreferenceHead (its outputs: the task's classes)."""
    return next(m for m in model.modules() if isinstance(m, PreferenceHead)).proj.out_features


def init_feature_head(model, coef, intercept) -> None:
    """Start the head at a fitted length-feature logistic regression: weights on the features, its intercept
    as the bias (the hidden-state projection stays at zero, so the first forward reproduces the regression)."""
    for head in (m for m in model.modules() if isinstance(m, PreferenceHead)):
        with torch.no_grad():
            head.features.weight.copy_(torch.as_tensor(coef, dtype=head.features.weight.dtype))
            if head.proj.bias is not None:
                head.proj.bias.copy_(torch.as_tensor(intercept, dtype=head.proj.bias.dtype))


def new_head(backbone, cfg: Config, bias: list[float] | None, dtype: torch.dtype, num_features: int) -> PreferenceHead:
    """A fresh head: zero weights (a random init gives logits worse than uniform), the bias at `bias`."""
    head = PreferenceHead(backbone.config.hidden_size, num_features, bias is not None, dtype, num_labels(cfg))
    if cfg.model.head_init == "random":
        torch.nn.init.normal_(head.proj.weight, std=backbone.config.initializer_range)
    else:
        torch.nn.init.zeros_(head.proj.weight)
    if head.features is not None:
        torch.nn.init.zeros_(head.features.weight)
    if bias is not None:
        with torch.no_grad():
            head.proj.bias.copy_(torch.tensor(bias, dtype=dtype))
    return head


def write_head(run: RunFolder, bias: bool, feature_scaler: dict | None, classes: int, class_prior=None,
               **extra) -> None:
    """head.json: the head's shape (a bias or not, its classes, length features and their scaling), the training
    rows' class prior (what predict gives a row without finite logits), and `extra` records (a merge's runs)."""
    head = {"format": HEAD_FORMAT, "bias": bias, "num_labels": classes, "feature_scaler": feature_scaler}
    if class_prior is not None:
        head["class_prior"] = [float(p) for p in class_prior]
    run.head.write_text(json.dumps({**head, **extra}, indent=1))


def read_head(run: RunFolder) -> dict:
    """head.json of a trained run; a clear error for a folder that is not one or comes from another version."""
    problems: list[str] = []
    head = load_head(run, problems)
    if problems:
        raise UserError(problems=problems)
    return head


def load_head(run: RunFolder, problems: list[str]) -> dict | None:
    head = record_or_none(run.head, problems, "the head's shape and feature scaling: an unfinished run, or one made "
                                              "by an older version of arena")
    found = _head_problems(run, head) if head is not None else []
    problems += found
    return None if found else head


def _head_problems(run: RunFolder, head: dict) -> list[str]:
    """Every problem of head.json's content (not only the first)."""
    problems = [f"{run.head}: no {key} key: not a head description made by arena" for key in ("bias", "num_labels")
                if key not in head]
    made = head.get("format", 1)
    if not isinstance(made, int) or made > HEAD_FORMAT:
        problems.append(f"{run.head}: made by a newer version of arena (head format {made}; this version reads up "
                        f"to {HEAD_FORMAT}): upgrade arena to load it")
    if "bias" in head and not isinstance(head["bias"], bool):
        problems.append(f"{run.head}: bias is {head['bias']!r}, expected true or false")
    classes = head.get("num_labels")
    if "num_labels" in head and classes not in (2, 3):
        problems.append(f"{run.head}: num_labels is {classes!r}, expected 2 (A / B) or 3 (A / B / tie)")
        classes = None
    prior = head.get("class_prior")
    if prior is not None and classes and not (isinstance(prior, list) and len(prior) == classes and all(
            isinstance(p, (int, float)) and p >= 0 for p in prior) and sum(prior) > 0):
        problems.append(f"{run.head}: class_prior is {prior!r}, expected {classes} non-negative numbers")
    scaler = head.get("feature_scaler")
    if scaler is not None:
        lengths = {len(scaler.get(k) or []) for k in ("names", "mean", "std")} if isinstance(scaler, dict) else {0}
        if len(lengths) != 1 or 0 in lengths:
            problems.append(f"{run.head}: feature_scaler needs names, mean and std of one length")
    return problems


def head_weight_problems(head: dict, score: dict[str, list[int]]) -> list[str]:
    """The head's tensors (names inside the head) against head.json."""
    problems = []
    scaler = head.get("feature_scaler")
    classes = head["num_labels"]
    expected = {"proj.weight": classes}
    if head["bias"]:
        expected["proj.bias"] = classes
    if scaler:
        expected["features.weight"] = classes
    for name, rows in expected.items():
        if name not in score:
            problems.append(f"no head tensor score.{name} (head.json describes one)")
        elif score[name][0] != rows:
            problems.append(f"head tensor score.{name} has shape {score[name]}, expected {rows} rows")
    if scaler and "features.weight" in score and score["features.weight"][-1] != len(scaler["mean"]):
        problems.append(f"head tensor score.features.weight reads {score['features.weight'][-1]} features, head.json "
                        f"scales {len(scaler['mean'])}")
    return problems
