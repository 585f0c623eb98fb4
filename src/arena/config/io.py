"""Configs in and out: YAML recipes, dotted `--set a.b=value` overrides, older spellings, a run's config and where
it came from."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import yaml

from arena.config.constraints import ConfigError, Origins, all_keys, build, did_you_mean
from arena.config.relations import relations
from arena.config.schema import Config
from arena.layout import SOURCE_ROOT
from arena.writes import write_text

CONFIG_DIR = SOURCE_ROOT / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "default.yaml"


def read_yaml(text: str, source: str):
    """The one YAML reader of the package (recipes, run configs, `--set` values): PyYAML's safe loader, except that
    a key given twice in one mapping is an error naming it (dotted) and both lines, as a `--set` of it twice would
    be; yaml.safe_load keeps the last value silently. ConfigError, one line, for any YAML error."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        problems = _duplicate_keys(node, "") if node is not None else []
        if problems:
            raise ConfigError(problems=[f"{source}: {p}" for p in problems])
        return loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{source}: invalid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None
    finally:
        loader.dispose()


def _duplicate_keys(node, prefix: str) -> list[str]:
    """Every key given twice in a mapping of the node tree (a merge key `<<` is not a key), with its lines."""
    problems = []
    if isinstance(node, yaml.MappingNode):
        first = {}
        for key, value in node.value:
            if key.tag == "tag:yaml.org,2002:merge":
                continue
            name = f"{prefix}{key.value}" if isinstance(key, yaml.ScalarNode) else f"{prefix}{key.start_mark}"
            if name in first:
                problems.append(f"line {key.start_mark.line + 1}: {name} is given twice (first at line "
                                f"{first[name]}); give it once")
            first.setdefault(name, key.start_mark.line + 1)
            problems += _duplicate_keys(value, f"{name}.")
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            problems += _duplicate_keys(item, f"{prefix}{i}.")
    return problems


def set_dotted(data: dict, key: str, raw: str) -> None:
    parts = key.split(".")
    node = data
    cls = Config
    for i, part in enumerate(parts):
        field_names = {f.name: f for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}
        if part not in field_names:
            known = f" (known here: {', '.join(sorted(field_names))})" if field_names else ""
            raise ConfigError(f"--set: unknown key '{'.'.join(parts[: i + 1])}'{did_you_mean(key, all_keys(Config))}{known}")
        if i == len(parts) - 1:
            node[part] = read_yaml(raw, f"--set {key}={raw}") if raw != "" else ""
            return
        cls = typing.get_type_hints(cls)[part]
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set: '{'.'.join(parts[: i + 1])}' is not a section")


def upgrade(data: dict) -> None:
    """Older spellings of keys, so that earlier run folders still load: swap_augment was true/false."""
    train = data.get("train")
    if isinstance(train, dict) and isinstance(train.get("swap_augment"), bool):
        train["swap_augment"] = "random" if train["swap_augment"] else "none"


def from_dict(data: dict | None, overrides: list[str] | tuple[str, ...] = (), source: str = "<dict>") -> Config:
    """A checked Config from a mapping plus `--set key=value` overrides; ConfigError lists every problem."""
    data = dict(data or {})
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    problems, overridden = [], set()
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            problems.append(f"--set {item!r}: expected key=value")
            continue
        try:
            set_dotted(data, key.strip(), raw)
            overridden.add(key.strip())
        except ConfigError as exc:
            problems.append(str(exc))
    upgrade(data)
    return _checked(data, Origins(source, overridden), problems)


def replace(cfg: Config, changes: dict[str, object], by: str = "arena") -> Config:
    """`cfg` with typed values at dotted keys, `{"data.fold": 1, "train.runs_dir": path}`, checked once as a whole:
    how arena's own callers derive a config (a path is a value here, never YAML to parse as a `--set` string is).
    A problem names the changed key as set `by` the caller."""

    def put(node, parts: list[str], value):
        inner = value if len(parts) == 1 else put(getattr(node, parts[0]), parts[1:], value)
        return dataclasses.replace(node, **{parts[0]: inner})

    for key, value in changes.items():
        cfg = put(cfg, key.split("."), value)
    return _checked(cfg.to_dict(), Origins("the config", set(changes), by=f"set by {by}"), [])


def _checked(data: dict, origin: Origins, problems: list[str]) -> Config:
    """The Config built from `data`, its every value and relation checked; ConfigError lists `problems` and
    every one found."""
    try:
        cfg = build(Config, data, "", origin)
    except ConfigError as exc:
        raise ConfigError(problems=problems + exc.problems) from None
    problems = problems + [f"{origin(key)}: {key}: {problem}" for key, problem in relations(cfg)]
    if problems:
        raise ConfigError(problems=problems)
    return cfg


def load(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load a YAML config (configs/default.yaml when `path` is None) and apply `--set` overrides."""
    path = Path(path) if path else DEFAULT_CONFIG
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start})") from None
    data = read_yaml(text, str(path))
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    if not data:
        raise ConfigError(f"{path}: an empty recipe (no keys): it would train on the schema's defaults, which are not "
                          f"{DEFAULT_CONFIG.name}'s; write the keys to train with (copy {DEFAULT_CONFIG} to start)")
    return from_dict(data, overrides, source=str(path))


def origin(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (), **tags) -> dict:
    """Where a config came from, as a run stores it (layout.RunFolder.recipe): the recipe file, the --set
    overrides, the recipe's own resolved values (to list the keys a run changed), and tags such as a sweep's."""
    path = Path(path) if path else DEFAULT_CONFIG
    try:
        recipe = load(path).to_dict()
    except ConfigError:  # valid only with its overrides: the run lists those instead of a comparison
        recipe = None
    return {"file": str(path), "overrides": list(overrides), "recipe": recipe, **tags}


def load_run(run, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """The resolved config of a trained run folder (a layout.RunFolder; a bundle's adapter dataset has the same
    layout), with `--set` overrides."""
    if not run.is_trained():
        raise ConfigError(f"{run.root}: not a run folder from `arena train` (needs {run.config.name} and "
                          f"{run.adapter.name}/)")
    return load(run.config, overrides)


def flat(values: dict, prefix: str = "") -> dict:
    """A config's values (Config.to_dict() or a stored recipe) by dotted key: {"train.learning_rate": 0.0002, ...}."""
    out = {}
    for key, value in values.items():
        out.update(flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


def load_runs(runs) -> tuple[list, list[str]]:
    """([(run, its config)] of the runs whose config loads, every problem of the others): for commands that check
    several runs at once and report every problem."""
    loaded, problems = [], []
    for run in runs:
        try:
            loaded.append((run, load_run(run)))
        except ConfigError as exc:
            problems += exc.problems
    return loaded, problems


def dump(cfg: Config, path: str | Path) -> None:
    """The config as YAML, written atomically; never over an existing file."""
    write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
