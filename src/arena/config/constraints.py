"""The check engine of the config: each value against its type hint, its choices (`Literal`) and the constraints
written on the field (`Annotated[..., Range | Pattern | NonEmpty]`), every problem naming its key and where its
value came from (the YAML file or --set), with the nearest known keys for a typo."""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Literal

from arena.errors import UserError


class ConfigError(UserError):
    """A configuration problem; each line names the key path and where its value came from."""


@dataclass(frozen=True)
class Range:
    """Bounds of a number, with the reason where it is not obvious. NaN and infinities are never in range."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    why: str = ""

    def problem(self, value) -> str | None:
        if isinstance(value, float) and not math.isfinite(value):
            return f"{value!r} is not a finite number"
        checks = ((self.ge, lambda b: value >= b, "at least"), (self.gt, lambda b: value > b, "above"),
                  (self.le, lambda b: value <= b, "at most"), (self.lt, lambda b: value < b, "below"))
        for bound, holds, words in checks:
            if bound is not None and not holds(bound):
                return f"{value!r} must be {words} {bound:g}" + (f" ({self.why})" if self.why else "")
        return None


@dataclass(frozen=True)
class Pattern:
    """A string that must match `regex` in full; `what` says what it must be."""

    regex: str
    what: str

    def problem(self, value) -> str | None:
        return None if re.fullmatch(self.regex, value) else f"{value!r} is not {self.what}"


@dataclass(frozen=True)
class NonEmpty:
    what: str = "at least one item"

    def problem(self, value) -> str | None:
        return None if value else f"needs {self.what}"


class WrongType(ConfigError):
    """The value is not of the field's type at all (as opposed to out of range or not a choice)."""


class Origins:
    """Where each key's value came from: the YAML file, or --set (`by`) for the keys (and sections) it overrode."""

    def __init__(self, source: str, overridden: set[str], by: str = "--set"):
        self.source = source
        self.overridden = overridden
        self.by = by

    def __call__(self, key: str) -> str:
        for k in self.overridden:
            if key == k or key.startswith((k + ".", k + "[")):
                return self.by
        return self.source


def coerce(value, tp, path: str, origin: Origins, root=None):
    """Check `value` against the type hint `tp` (its choices and range included), converting only where
    lossless (int -> float). Raises ConfigError naming the key and where the value came from."""
    where = origin(path)
    kind = typing.get_origin(tp)
    if kind is Annotated:
        base, *constraints = typing.get_args(tp)
        value = coerce(value, base, path, origin, root)
        for constraint in constraints:
            problem = constraint.problem(value)
            if problem:
                raise ConfigError(f"{where}: {path}: {problem}")
        return value
    if kind is Literal:
        choices = typing.get_args(tp)
        if isinstance(value, bool) and {"on", "off"} <= set(choices):  # YAML 1.1 reads a bare on/off as true/false
            value = "on" if value else "off"
        if value not in choices:
            allowed = ", ".join(str(c) for c in choices)
            raise ConfigError(f"{where}: {path}: {value!r} is not one of {allowed}")
        return value
    if kind in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, path, origin, root)
            except ConfigError as exc:
                errors.append(exc)
        # An alternative whose type matched explains best: "must be at least 1" beats "expected int".
        raise next((e for e in errors if not isinstance(e, WrongType)), errors[0])
    if kind is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise WrongType(f"{where}: {path}: expected a list, got {type(value).__name__} {value!r}")
        return [coerce(v, item_tp, f"{path}[{i}]", origin, root) for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise WrongType(f"{where}: {path}: expected a mapping, got {type(value).__name__} {value!r}")
        return build(tp, value, path, origin, root)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:
            return float(value)  # YAML 1.1 reads "1e-4" (no dot) as a string
        except ValueError:
            pass
    if tp is bool and not isinstance(value, bool):
        raise WrongType(f"{where}: {path}: expected true/false, got {value!r}")
    if tp is int and isinstance(value, bool):
        raise WrongType(f"{where}: {path}: expected an integer, got {value!r}")
    if not isinstance(value, tp):
        raise WrongType(f"{where}: {path}: expected {tp.__name__}, got {type(value).__name__} {value!r}")
    return value


def all_keys(cls, prefix: str = "") -> list[str]:
    """Every dotted key of the schema (sections and leaves), e.g. model, model.path, train.learning_rate."""
    keys = []
    for f in dataclasses.fields(cls):
        full = f"{prefix}{f.name}"
        keys.append(full)
        tp = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(tp):
            keys += all_keys(tp, full + ".")
    return keys


def did_you_mean(key: str, keys: list[str]) -> str:
    """' (did you mean a.b?)' for the nearest known keys: by the whole path, else by its last part anywhere."""
    near = difflib.get_close_matches(key, keys, n=3, cutoff=0.75)
    if not near:
        leaf = key.rsplit(".", 1)[-1]
        near = [k for k in keys if k.rsplit(".", 1)[-1] in difflib.get_close_matches(
            leaf, [k.rsplit(".", 1)[-1] for k in keys], n=3, cutoff=0.75)][:3]
    return f" (did you mean {' or '.join(near)}?)" if near else ""


def build(cls, data: dict, prefix: str, origin: Origins, root=None):
    """The dataclass `cls` from a mapping; raises ConfigError listing the problem of every key."""
    hints = typing.get_type_hints(cls, include_extras=True)
    known = {f.name for f in dataclasses.fields(cls)}
    problems, kwargs = [], {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else key
        if key not in known:
            problems.append(f"{origin(full)}: unknown key '{full}'{did_you_mean(full, all_keys(root or cls))} (known here: "
                            f"{', '.join(sorted(known))})")
            continue
        try:
            kwargs[key] = coerce(value, hints[key], full, origin, root or cls)
        except ConfigError as exc:
            problems.extend(exc.problems or [str(exc)])
    if problems:
        raise ConfigError(problems=problems)
    return cls(**kwargs)
