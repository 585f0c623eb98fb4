"""Inserted by `arena package` and `arena kaggle train` where a kernel template says `# @include kernel_inputs.py`
(a Kaggle script kernel is one file): the offline environment, failing loudly, and finding the attached inputs in
Kaggle's current mount layout and the older one. Uses ROOT and INPUT, which the including kernel defines."""

import sys
from pathlib import Path

ROOT: Path
INPUT: Path

# ---- from here on, inserted into the kernel ----
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}


def fail(message: str) -> None:
    sys.exit(f"kernel: FAILED: {message}")


def attached() -> list[str]:
    """What is mounted under /kaggle/input, down to the folders that name an input (for failure messages)."""
    found = []
    for top in sorted(INPUT.iterdir()) if INPUT.is_dir() else []:
        if top.name == "competitions":
            found += [f"competitions/{p.name}" for p in sorted(top.iterdir())]
        elif top.name == "datasets":
            found += [f"datasets/{o.name}/{p.name}" for o in sorted(top.iterdir()) for p in sorted(o.iterdir())]
        elif top.name == "models":
            found += [str(p.relative_to(INPUT)) for p in sorted(top.glob("*/*/*/*/*"))]
        else:
            found.append(top.name)
    return found


def find_input(name: str) -> Path:
    """An attached competition or dataset: /kaggle/input/competitions/<name>, /kaggle/input/datasets/*/<name>,
    (the older layout) /kaggle/input/<name>, or /kaggle/input/*/<name> (there, inputs whose slugs clash)."""
    candidates = [INPUT / "competitions" / name, *sorted(INPUT.glob(f"datasets/*/{name}")), INPUT / name,
                  *sorted(INPUT.glob(f"*/{name}"))]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    fail(f"input {name!r} not found under {INPUT}; attached: {attached() or 'nothing'}")


def model_candidates(spec: str) -> list[Path]:
    """Where a base model spec (see BASE_MODEL) may be mounted, current layout first, then the older one."""
    parts = spec.strip("/").split("/")
    if spec.startswith("/"):  # a path: as given, and the same model in the other layout
        path = on_root(spec)
        rel = path.relative_to(INPUT).parts if path.is_relative_to(INPUT) else ()
        if len(rel) == 6 and rel[0] == "models":  # models/<owner>/<model>/<fw>/<var>/<ver> -> older layout
            return [path, INPUT.joinpath(*rel[2:])]
        if rel and rel[0] not in ("models", "datasets", "competitions"):  # older layout -> <kind>/<any owner>/...
            return [path, *sorted(INPUT.glob("models/*/" + "/".join(rel))),
                    *sorted(INPUT.glob("datasets/*/" + "/".join(rel)))]
        return [path]
    if parts[0] == "models" and len(parts) == 6:
        owner, model, framework, variation, version = parts[1:]
        return [INPUT.joinpath("models", owner, model, fw, variation, version) for fw in dict.fromkeys(
                (framework.lower(), framework))] + [INPUT.joinpath(model, framework.lower(), variation, version)]
    if parts[0] == "datasets" and len(parts) == 3:
        return [INPUT / spec, INPUT / parts[2]]
    return [INPUT / spec]


def find_base_model(spec: str) -> Path:
    candidates = model_candidates(spec)
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    fail(f"base model {spec!r} not found (looked in {', '.join(map(str, candidates))}): attach it "
         f"(kernel-metadata.json model_sources / dataset_sources); attached: {attached() or 'nothing'}")


def on_root(path: str) -> Path:
    """A /kaggle/... path from the config, moved under ROOT."""
    path = Path(path)
    return ROOT / path.relative_to("/kaggle") if path.is_relative_to("/kaggle") else INPUT / path
