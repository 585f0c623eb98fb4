"""The Kaggle twin: a Python environment that is Kaggle's GPU image (image.py) as far as this machine allows, for
`arena kernel run-local`. The image's preinstalled versions (transformers 5.0.0, peft 0.19.1, torchao 0.10.0, ...)
are pip-installed once, exactly the list (--no-deps), into a virtualenv cached under ARENA_CACHE
(kaggle-image-<hash of the list and this Python>), built in a staging folder and renamed when whole, so a killed
build is never taken for a good one. Each rehearsal gets a fresh, empty venv whose .pth puts the cached image's
site-packages under its own: the kernel's `pip install --no-index` sees the image's packages as installed, keeps or
shadows them exactly as on Kaggle, and writes only into the rehearsal's venv. Substitutions (image.TWIN): this
machine's Python and CPU torch.

A bundle without a wheelhouse (`arena package --no-wheels`: only the arena wheel) cannot run on Kaggle: the image's
transformers 5.0.0 and peft 0.19.1 do not run arena. It is rehearsed in the mirror instead (mirror_python: this
machine's packages, minus arena), a quick unit-level check of the kernel and the mount layout, said so in the log."""

from __future__ import annotations

import hashlib
import json
import re
import site
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

from arena.embedded import cache_dir
from arena.errors import UserError
from arena.kaggle import image as image_mod
from arena.processes import own_tmpdir
from arena.writes import atomic_folder, output_problems

RECIPE = 2  # bump when the way the twin is built changes (a new cache folder follows)
SPEC_FILE = "arena-twin.json"  # written last, inside the staging folder: a twin without it is not one
NOT_INSTALLED = {"triton", "torchtune"}  # image.TWIN says why


def _python() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def torch_version() -> str:
    """This machine's torch (its public version: 2.13.0 for 2.13.0+cpu), what the twin installs for the image's."""
    from packaging.version import Version

    try:
        return Version(metadata.version("torch")).public
    except metadata.PackageNotFoundError:
        raise UserError("torch is not installed here: the Kaggle twin takes this machine's torch "
                        "(pip install -r requirements.txt -c constraints.txt)") from None


def packages() -> dict[str, str]:
    """What the twin installs: the image's preinstalled versions, torch replaced by this machine's."""
    chosen = {n: image_mod.TWIN_VERSIONS.get(n, v) for n, v in image_mod.IMAGE["preinstalled"].items()
              if n not in NOT_INSTALLED}
    chosen["torch"] = torch_version()
    return chosen


def spec() -> dict:
    return {"recipe": RECIPE, "python": _python(), "image": image_mod.IMAGE["name"], "packages": packages()}


def image_dir() -> Path:
    digest = hashlib.sha256(json.dumps(spec(), sort_keys=True).encode()).hexdigest()[:12]
    return cache_dir() / f"kaggle-image-{digest}"


def site_packages(venv: Path) -> Path:
    return venv / "lib" / f"python{_python()}" / "site-packages"


def substitutions() -> list[str]:
    """The twin's departures from the image, one line each (the rehearsal's log states them)."""
    img = image_mod.IMAGE
    subs = {**image_mod.TWIN,
            "python": f"Python {_python()} stands in for {img['python_full']}: " + image_mod.TWIN["python"],
            "torch": f"torch {torch_version()} stands in for {img['preinstalled']['torch']}: " + image_mod.TWIN["torch"]}
    return [f"{name}: {why}" for name, why in subs.items()]


def ensure_image() -> Path:
    """The cached twin's site-packages, built first when absent (minutes: measure in README)."""
    folder = image_dir()
    if not (folder / SPEC_FILE).is_file():
        if problems := build_problems():
            raise UserError(problems=problems)
        _build(folder)
    return site_packages(folder)


def build_problems() -> list[str]:
    """Why the twin, not built yet, cannot be built where the cache is (checked before any work): one line."""
    folder = image_dir()
    if (folder / SPEC_FILE).is_file() or not output_problems(folder, "the Kaggle twin"):
        return []
    return [f"the Kaggle twin is built once in the cache folder ({folder}), which cannot be written here: set "
            f"ARENA_CACHE to a folder that can (unset, the cache is ~/.cache/arena)"]


def _build(folder: Path) -> None:
    chosen = packages()
    print(f"building the Kaggle twin {folder} once: {len(chosen)} packages at the image's versions", flush=True)
    started = time.time()
    try:
        with atomic_folder(folder, "Kaggle twin") as staging:
            subprocess.run([sys.executable, "-m", "venv", str(staging)], check=True, stdout=subprocess.DEVNULL)
            constraints = staging / "constraints.txt"  # torch only from here: never a CUDA build from the index
            constraints.write_text(f"torch=={chosen['torch']}\n", encoding="utf-8")
            with own_tmpdir() as env:
                proc = subprocess.run(
                    [str(staging / "bin" / "python"), "-m", "pip", "install", "--no-deps", "--only-binary=:all:",
                     "--disable-pip-version-check", "--quiet", "-c", str(constraints),
                     *(f"{name}=={version}" for name, version in chosen.items())],
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
            if proc.returncode != 0:
                raise UserError(f"the Kaggle twin did not build (pip exit {proc.returncode}); the image's versions are "
                                f"in src/arena/kaggle/image.py. pip said:\n{proc.stdout[-3000:]}")
            found = _installed(site_packages(staging))
            wrong = {n: found.get(_canon(n)) for n, v in chosen.items() if found.get(_canon(n), "").split("+")[0] != v}
            if wrong:
                raise UserError(f"the Kaggle twin holds other versions than asked: {wrong}")
            (staging / SPEC_FILE).write_text(json.dumps({**spec(), "built_s": round(time.time() - started, 1)},
                                                        indent=1) + "\n", encoding="utf-8")
    except UserError as exc:
        if (folder / SPEC_FILE).is_file() and "appeared while it was built" in str(exc):
            return  # another rehearsal built the same twin meanwhile: use it
        raise
    print(f"built the Kaggle twin in {time.time() - started:.0f} s", flush=True)


def _canon(name: str) -> str:
    from packaging.utils import canonicalize_name

    return canonicalize_name(name)


def _installed(folder: Path) -> dict[str, str]:
    """name -> version of every distribution in a site-packages folder."""
    return {_canon(d.metadata["Name"]): d.version for d in metadata.distributions(path=[str(folder)])}


def fingerprint(folder: Path) -> list[str]:
    """The distributions in the cached image (a rehearsal checks that its kernel left them alone)."""
    return sorted(p.name for p in folder.glob("*.dist-info"))


def kernel_python(work: Path) -> tuple[Path, Path]:
    """A fresh venv in `work` over the cached twin: returns (its python, the twin's site-packages). pip comes from
    the image (24.1.2, as on Kaggle); whatever the kernel installs lands in this venv and shadows the image's."""
    image = ensure_image()
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    (site_packages(venv) / "_kaggle_image.pth").write_text(
        f"import site; site.addsitedir({str(image)!r})\n", encoding="utf-8")
    return venv / "bin" / "python", image


# ---- the mirror: this machine's packages (bundles without a wheelhouse) -----------------------------------

# site-packages entries of arena itself (the kernel must install it from the bundle).
_OWN_ENTRIES = re.compile(r"^(arena|arena-[^-]+\.dist-info|__editable__[._]+arena[-_].*)$")


def has_wheelhouse(wheelhouse: Path) -> bool:
    """Whether the bundle's wheels dataset ships more than the arena wheel (`arena package` without --no-wheels)."""
    return any(not p.name.startswith("arena-") for p in wheelhouse.glob("*.whl"))


def _shipped_entries(wheelhouse: Path) -> set[str]:
    """Top-level site-packages entries of the installed distributions that the wheelhouse ships."""
    entries = set()
    for wheel in wheelhouse.glob("*.whl"):
        try:
            files = metadata.distribution(wheel.name.split("-")[0]).files or []
        except metadata.PackageNotFoundError:
            continue
        entries.update(f.parts[0] for f in files if f.parts and f.parts[0] not in ("..", "__pycache__"))
    return entries


def mirror_python(work: Path, wheelhouse: Path) -> Path:
    """A Python that sees this environment's packages except arena and whatever the wheelhouse ships (the kernel
    must install those from it): a venv whose .pth adds a mirror of site-packages made of symlinks."""
    hidden = _shipped_entries(wheelhouse)
    mirror = work / "site-packages-mirror"
    mirror.mkdir()
    for folder in site.getsitepackages():
        folder = Path(folder)
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            if not (_OWN_ENTRIES.match(entry.name) or entry.name in hidden or (mirror / entry.name).exists()):
                (mirror / entry.name).symlink_to(entry)
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    (site_packages(venv) / "_kaggle_image.pth").write_text(
        f"import site; site.addsitedir({str(mirror)!r})\n", encoding="utf-8")
    return venv / "bin" / "python"
