"""The installed torch against the minimum transformers declares, read from package metadata before either is
imported: transformers 5 silently disables an older torch ("Disabling PyTorch because PyTorch >= 2.6 is required"),
after which every model class fails far from the cause. `arena` checks at start; `python -m arena.versions` checks
an install (a kernel's, after its pip install)."""

from __future__ import annotations

import importlib.metadata as metadata
import sys

from arena.errors import UserError


def torch_minimum(requirements: list[str] | None = None) -> str | None:
    """The torch version transformers asks for in its `torch` extra (e.g. "2.6"), None if it declares none."""
    from packaging.requirements import Requirement

    if requirements is None:
        try:
            requirements = metadata.requires("transformers") or []
        except metadata.PackageNotFoundError:
            return None
    for line in requirements:
        requirement = Requirement(line)
        if requirement.name == "torch" and requirement.marker is not None and \
                requirement.marker.evaluate({"extra": "torch"}):
            floors = [s.version for s in requirement.specifier if s.operator in (">=", ">")]
            if floors:
                return floors[0]
    return None


def torch_problems(installed: str | None = None, minimum: str | None = None) -> list[str]:
    """Why the installed torch cannot run this transformers (an empty list when it can)."""
    from packaging.version import Version

    try:
        installed = installed or metadata.version("torch")
    except metadata.PackageNotFoundError:
        return ["torch is not installed: install the torch of your machine (CPU: pip install -c constraints.txt "
                "torch), then arena"]
    minimum = minimum or torch_minimum()
    if minimum is None or Version(Version(installed).base_version) >= Version(minimum):
        return []
    try:
        transformers = metadata.version("transformers")
    except metadata.PackageNotFoundError:
        transformers = "?"
    return [f"torch {installed} is installed, but transformers {transformers} needs torch >= {minimum} and "
            f"disables an older one without an error: install torch >= {minimum} (on Kaggle: use the image's "
            f"torch, or attach a newer wheel)"]


def check_torch() -> None:
    problems = torch_problems()
    if problems:
        raise UserError(problems=problems)


def peft_without_old_torchao() -> None:
    """Make peft treat a torchao it rejects as absent. Call after importing peft, before it wraps layers.

    Kaggle's image (kaggle/image.py PROBED) has torchao 0.10.0. peft 0.21.2's `is_torchao_available()` RAISES
    ImportError ("Found an incompatible version of torchao") for torchao < 0.16, and peft calls it for every layer
    that no other backend claims: in its LoRA dispatch (`dispatch_torchao`, so any LoRA over unquantized weights:
    model.quantization none, or inference with infer.quantization none) and when it looks for a quantization
    backend to merge. arena never uses torchao, and peft cannot use this one either, so "not available" is the
    true answer. The check runs only when peft would raise; with no torchao, or one peft accepts, nothing
    changes. The function is swapped in every peft module that imported it by name."""
    import peft.import_utils as peft_imports

    original = peft_imports.is_torchao_available
    if getattr(original, "arena_guard", False):
        return
    try:
        original()
        return
    except ImportError as exc:
        if "torchao" not in str(exc):
            raise

    def is_torchao_available() -> bool:
        return False

    is_torchao_available.arena_guard = True
    for name, module in list(sys.modules.items()):
        if (name == "peft" or name.startswith("peft.")) and getattr(module, "is_torchao_available", None) is original:
            module.is_torchao_available = is_torchao_available


if __name__ == "__main__":
    found = torch_problems()
    for problem in found:
        print(f"error: {problem}", file=sys.stderr)
    sys.exit(2 if found else 0)
