"""`arena package`: the offline kernel bundle of a trained run (adapter dataset, wheels dataset, thin kernel,
pre-flight projection), with the metadata files the kaggle CLI reads."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

from arena import calibration as calibration_mod
from arena import config as config_mod
from arena import model as model_mod
from arena import task
from arena.config import Config
from arena.embedded import is_embedded
from arena.errors import UserError
from arena.hardware import PROFILES
from arena.kaggle import image as image_mod
from arena.kaggle import preflight as preflight_mod
from arena.kaggle import published
from arena.kaggle import wheels as wheels_mod
from arena.kaggle.credentials import PLACEHOLDER_USER, kaggle_user
from arena.layout import DATASET_METADATA, KERNEL_FILE, KERNEL_METADATA, SOURCE_ROOT, Bundle, RunFolder
from arena.model import check_trained
from arena.writes import atomic_folder, discard_if_stale, inside_problems, output_problems, staging_owner

TEMPLATES = SOURCE_ROOT / "kernels"
# The machine every kernel is built for: Kaggle's "GPU T4 x2" (its machine_shape, GPU check and decisions).
KAGGLE_HARDWARE = PROFILES["t4x2"]


def needs_base_model(cfg: Config, merged: bool = False) -> bool:
    """Whether the kernel must attach a base model folder: not for the embedded model (installed from its wheel)
    nor for a merged model (`arena merge`), which carries its own weights."""
    return not (merged or is_embedded(cfg.model.path))


def base_model_problems(cfg: Config, merged: bool = False) -> list[str]:
    """A run on a local base model needs something that attaches its weights in the kernel: kaggle.base_model_source
    (a Kaggle model), kaggle.base_model_dataset (a dataset), or at least the old kaggle.base_model_kernel_path."""
    if not needs_base_model(cfg, merged):
        return []
    k = cfg.kaggle
    if not (k.base_model_source or k.base_model_dataset or k.base_model_kernel_path):
        return [f"kaggle.base_model_source: empty, and model.path is the local folder {cfg.model.path!r}, which the "
                f"kernel cannot see: set kaggle.base_model_source in the run's config.yaml to the Kaggle model that "
                f"holds these weights (e.g. google/gemma-2/transformers/gemma-2-9b-it/2), or kaggle.base_model_dataset "
                f"to a dataset of them"]
    if k.base_model_kernel_path and not (k.base_model_source or k.base_model_dataset):
        print("warning: neither kaggle.base_model_source nor kaggle.base_model_dataset is set: nothing attaches the "
              f"base weights at {k.base_model_kernel_path}", file=sys.stderr)
    return []


def kernel_base_model(cfg: Config, merged: bool = False) -> str:
    """How the kernel finds the base weights (kernel.py BASE_MODEL): the old kaggle.base_model_kernel_path when
    set (the kernel also looks for the same model in the other mount layout), else the Kaggle model or dataset
    as mounted in the current layout ("models/<source>", "datasets/<owner>/<slug>"); "" when none is needed."""
    if not needs_base_model(cfg, merged):
        return ""
    k = cfg.kaggle
    if k.base_model_kernel_path:
        return k.base_model_kernel_path
    if k.base_model_source:
        return f"models/{k.base_model_source}"
    return f"datasets/{k.base_model_dataset}" if k.base_model_dataset else ""


def kernel_config(run: RunFolder, cfg: Config, dest: Path) -> Config:
    """The run's config as the kernel reads it, written to `dest`: the run's own, except a compute dtype the
    kernel's machine lacks (bfloat16, trained on an A100 or H100: a T4 would emulate it or refuse it) becomes auto,
    float16 there (float32 for a model that overflows in float16), said in one line. Its local paths are reduced
    to what the kernel resolves once the bundle is built (published.keep_local_records)."""
    if model_mod.bf16_problem(cfg, KAGGLE_HARDWARE) is None:
        shutil.copy2(run.config, dest)
        return cfg
    kernel_cfg = config_mod.replace(cfg, {"model.compute_dtype": "auto"}, by="arena package")
    config_mod.dump(kernel_cfg, dest)
    print(f"model.compute_dtype: bfloat16 in {run.root} is auto in the bundle: the kernel's "
          f"{KAGGLE_HARDWARE.gpus} x {KAGGLE_HARDWARE.gpu_name} have no bfloat16 (auto computes in float16 there, "
          f"float32 for a model that overflows in float16)")
    return kernel_cfg


def _title(slug: str) -> str:
    """A title that Kaggle slugifies back to `slug` (it warns when the two disagree)."""
    return " ".join(word.capitalize() for word in slug.split("-"))


def kernel_metadata(cfg: Config, user: str, members: list[Config] = (), versions: dict[str, int] | None = None) -> dict:
    """The kernel's metadata; an ensemble's `members` (cfg among them) add every base model they need.
    `versions` (dataset slug -> version number, from `arena push`) pins the bundle's own datasets."""
    k = cfg.kaggle
    versions = versions or {}
    datasets = [f"{user}/{slug}" + (f"/{versions[slug]}" if slug in versions else "")
                for slug in (k.adapter_dataset_slug, k.wheels_dataset_slug)]
    members = list(members) or [cfg]
    values = {
        "__KERNEL_ID__": f"{user}/{k.kernel_slug}",
        "__TITLE__": _title(k.kernel_slug),
        "__COMPETITION_SOURCES__": [k.competition],
        "__DATASET_SOURCES__": list(dict.fromkeys(datasets + [m.kaggle.base_model_dataset for m in members
                                                              if m.kaggle.base_model_dataset])),
        "__MODEL_SOURCES__": list(dict.fromkeys(m.kaggle.base_model_source for m in members
                                                if m.kaggle.base_model_source)),
    }
    values["__DOCKER_IMAGE_PINNING__"] = image_mod.IMAGE["docker_image_pinning_type"]
    values["__MACHINE_SHAPE__"] = KAGGLE_HARDWARE.machine_shape
    template = json.loads((TEMPLATES / f"{KERNEL_METADATA}.template").read_text(encoding="utf-8"))
    return {key: values.get(value, value) if isinstance(value, str) else value for key, value in template.items()}


def render_kernel_script(cfg: Config, members: list[list] = (), merged: bool = False) -> str:
    """kernel.py for a run (`merged`: a model folder from `arena merge`, which carries its own weights), or for an
    ensemble whose `members` the kernel predicts with in turn (ensemble.kernel_members)."""
    values = {
        "MEMBERS": list(members),
        "COMPETITION": cfg.kaggle.competition,
        "TEST_FILE": task.of_config(cfg).test_file,
        "ADAPTER_DATASET": cfg.kaggle.adapter_dataset_slug,
        "WHEELS_DATASET": cfg.kaggle.wheels_dataset_slug,
        "BASE_MODEL": kernel_base_model(cfg, merged),
        "TTA": cfg.infer.tta,
        "MACHINE_SHAPE": KAGGLE_HARDWARE.machine_shape,
        "MACHINES": {KAGGLE_HARDWARE.machine_shape: (KAGGLE_HARDWARE.gpu_name, KAGGLE_HARDWARE.gpus)},
        **wheels_mod.kernel_image_values(cfg),
    }
    return fill_template(TEMPLATES / KERNEL_FILE, values)


INCLUDE = re.compile(r"^# @include (\S+).*$", re.M)
INCLUDED_FROM = "# ---- from here on, inserted into the kernel ----\n"


def _included(match: re.Match) -> str:
    """The part of kernels/<name> that a template's `# @include <name>` line stands for (a Kaggle script kernel
    is one file, so the kernels share code by inclusion when they are rendered)."""
    text = (TEMPLATES / match.group(1)).read_text(encoding="utf-8")
    return text.split(INCLUDED_FROM, 1)[1].rstrip("\n")


def fill_template(template: Path, values: dict) -> str:
    """A kernel template with its `# @include` lines expanded and each `"__KEY__"` replaced by the Python literal
    of values[KEY]; all must be filled."""
    text = INCLUDE.sub(_included, template.read_text(encoding="utf-8"))
    for key, value in values.items():
        text = text.replace(f'"__{key}__"', repr(value))
    left = re.findall(r'"__[A-Z_]+__"', text)
    if left:
        raise UserError(f"{template}: placeholders left unfilled: {left}")
    return text


def stamp_push_id(bundle: Bundle, push_id: str) -> None:
    """Set kernel.py's PUSH_ID (`arena push` does, per push): the kernel writes it to its output, which tells push
    that a "complete" status is this version's and not the previous one's."""
    text = bundle.kernel_script.read_text(encoding="utf-8")
    stamped, count = re.subn(r"^PUSH_ID = .*$", f"PUSH_ID = {push_id!r}", text, count=1, flags=re.M)
    if count != 1:
        raise UserError(f"{bundle.kernel_script}: no PUSH_ID line (a bundle from an older arena: package it again)")
    bundle.kernel_script.write_text(stamped, encoding="utf-8")


def write_metadata(bundle: Bundle, cfg: Config, user: str, versions: dict[str, int] | None = None) -> None:
    """The three metadata files, for `user` (push rewrites them when the bundle was made for another user, and
    with `versions` to pin the dataset versions it just created)."""
    k = cfg.kaggle
    runs = bundle.member_runs()
    cfgs = [config_mod.load_run(run) for run in runs]
    terms = {k.adapter_dataset_slug: published.adapter_licence([published.base_family(c, r) for c, r in zip(cfgs, runs)]),
             k.wheels_dataset_slug: published.wheels_licence(cfgs)}
    for folder, slug in ((bundle.adapter_dataset, k.adapter_dataset_slug), (bundle.wheels, k.wheels_dataset_slug)):
        write_json(folder / DATASET_METADATA, dataset_metadata(slug, user, terms[slug]))
    members = cfgs if bundle.ensemble.is_file() else []
    write_json(bundle.kernel_metadata, kernel_metadata(cfg, user, members, versions))


def dataset_metadata(slug: str, user: str, terms: dict) -> dict:
    """A dataset-metadata.json: its title, id and the licence `terms` (published.*_licence)."""
    return {"title": _title(slug), "id": f"{user}/{slug}", **terms}


def write_json(path: Path, payload: dict) -> None:
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


def package(run_dir, out_dir=None, wheels: bool = True, test_csv=None, calibrate: bool = True) -> Path:
    """`arena package`: build the offline kernel bundle of a run; never overwrites an existing folder. The run's
    calibration (its own or its CV folder's) travels in the adapter dataset unless `calibrate=False`."""
    run = RunFolder(run_dir)
    cfg = config_mod.load_run(run)
    out = Path(out_dir) if out_dir else run.new_bundle_path()
    problems = (base_model_problems(cfg, run.is_merged()) + check_trained(run)
                + (inside_problems(out, [run.adapter], "bundle") or output_problems(out, "bundle", folder=True)))
    if test_csv is not None and not Path(test_csv).is_file():
        problems.append(f"--test-csv {test_csv}: file not found")
    if problems:
        raise UserError(problems=problems)
    user = kaggle_user()
    with atomic_folder(out, "bundle") as staging:
        build = Bundle(staging)
        build.adapter_dataset.mkdir()
        cfg = kernel_config(run, cfg, build.run.config)
        shutil.copytree(run.adapter, build.run.adapter)
        calibration = calibration_mod.file_for_run(run) if calibrate else None
        if calibration is not None:  # the kernel's `arena predict` applies it, once
            calibration_mod.read(calibration)
            shutil.copy2(calibration, build.run.calibration)
        problems = check_trained(build.run)  # the copy the kernel will load
        if problems:
            raise UserError(problems=problems)
        published.keep_local_records(build, [(build.run, cfg, kernel_base_model(cfg, run.is_merged()))])
        write_wheelhouse(build, cfg, wheels)
        build.kernel.mkdir()
        build.kernel_script.write_text(render_kernel_script(cfg, merged=run.is_merged()), encoding="utf-8")
        write_metadata(build, cfg, user)
        pf = preflight_mod.preflight(build.run, cfg, test_csv)
        write_json(build.preflight, pf)
    bundle = Bundle(out)
    print(preflight_mod.format_preflight(pf))
    print(f"bundle: {out}\n  {bundle.adapter_dataset.name}/ {_size_mb(bundle.adapter_dataset):.1f} MB, "
          f"{bundle.wheels.name}/ {_size_mb(bundle.wheels):.1f} MB ({len(list(bundle.wheels.glob('*.whl')))} wheel "
          f"files), {bundle.kernel.name}/ for {user}/{cfg.kaggle.kernel_slug}")
    if user == PLACEHOLDER_USER:
        print(f"  kaggle user: {PLACEHOLDER_USER} (placeholder: no Kaggle credentials found; `arena push` fills in yours)")
    if bundle.run.calibration.is_file():
        print(f"  calibrated: {bundle.run.calibration} (from {calibration}) is applied by the kernel's predict")
    print(f"rehearse it offline: arena kernel run-local {out} --input data")
    return out


def _size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def write_wheelhouse(bundle: Bundle, cfg: Config, wheels: bool) -> None:
    """The arena wheel, the pinned wheels and what the Kaggle image lacks (unless --no-wheels), the requirements.txt
    the kernel installs, and the proof that they resolve offline on the image (wheels.prove_resolves)."""
    arena_wheel = wheels_mod.build_arena_wheel(bundle.wheels)
    requirements = [f"arena=={arena_wheel.name.split('-')[1]}"]
    if wheels:
        print(f"target: {image_mod.IMAGE['name']}, Python {image_mod.IMAGE['python']}; "
              f"{wheels_mod.check_image_torch()}")
        roles = wheels_mod.wheel_roles(cfg)
        versions = wheels_mod.installed_versions(roles)
        wheels_mod.download_wheels(versions, bundle.wheels)
        requirements += [f"{name}=={versions[name]}" for name, role in roles.items() if role == "pin"]
        lacks = sorted(name for name, role in roles.items() if role == "dep")
        print("shipped because the Kaggle image lacks them or has them too old: " + (", ".join(lacks) or "none"))
        print("taken from the Kaggle image: " + ", ".join(wheels_mod.image_requirements(roles)))
    bundle.wheel_requirements.write_text(
        "# installed by kernel.py: pip install --no-index --find-links <this folder> -r requirements.txt\n"
        + "\n".join(requirements) + "\n", encoding="utf-8")
    if wheels:
        would = wheels_mod.prove_resolves(bundle.wheels, bundle.wheel_requirements)
        print(f"resolves offline on the Kaggle image (pip --dry-run --no-index, Python {image_mod.IMAGE['python']}, "
              f"the image's packages as stand-ins): would install {len(would)} distributions")
    else:
        print("--no-wheels: the wheels dataset holds only the arena wheel (enough for `arena kernel run-local` with "
              "this machine's packages; not in the Kaggle twin, nor on Kaggle, whose image has transformers "
              f"{image_mod.preinstalled('transformers')}, not the "
              f"{wheels_mod.installed_versions(['transformers'])['transformers']} tested here)")


def built_from_problems(bundle: Bundle, run: RunFolder) -> list[str]:
    """`arena push --run R --bundle B`: B must hold R's adapter (one of its members, for an ensemble), or the
    push would submit another run's predictions under R's name (and --fetch-lb credit R with their score)."""
    if not run.is_trained():
        return [f"--run {run.root}: not a trained run folder (config.yaml and adapter/)"]
    members = bundle.member_runs()
    try:
        ours = run.fingerprint()
        theirs = [m.fingerprint() for m in members]
    except OSError as exc:
        return [f"cannot compare --run {run.root} with the bundle {bundle.root}: {exc}"]
    if ours in theirs:
        return []
    return [f"--bundle {bundle.root} was not packaged from --run {run.root} (their adapters differ): the push would "
            f"submit another run's predictions under {run.root.name}'s name; push with the --run it was packaged from, "
            f"or package this run: arena package --run {run.root}"]


def bundle_problems(bundle: Bundle) -> list[str]:
    """Every check `arena package` makes, on a bundle it made earlier (for `arena push --bundle`), before any
    kaggle call: not a staging folder of an interrupted package (removed when its process is gone), every part
    there, each member run whole (adapter, head, tokenizer, weights, calibration) with its base model reachable
    from the kernel, the pre-flight projection and the kernel's files readable."""
    root = bundle.root
    pid = staging_owner(root)
    if pid is not None:
        fate = "removed it" if discard_if_stale(root) else f"process {pid} may still be building it"
        return [f"{root}: the staging folder of an interrupted `arena package`, not a bundle ({fate}); package again"]
    if not root.is_dir():
        return [f"{root}: not found (a bundle from `arena package`)"]
    missing = bundle.missing_parts()
    if missing:
        return [f"{root}: not a bundle from `arena package` (no {', '.join(p + '/' for p in missing)})"]
    runs = bundle.member_runs()
    if not runs:
        return [f"{bundle.ensemble}: an ensemble bundle without members in {bundle.dataset.members}"]
    loaded, problems = config_mod.load_runs(runs)
    for run, cfg in loaded:
        problems += base_model_problems(cfg, run.is_merged()) + check_trained(run)
        if run.calibration.exists():
            try:
                calibration_mod.read(run.calibration)
            except UserError as exc:
                problems += exc.problems
    for path, what in ((bundle.preflight, "the pre-flight projection"), (bundle.kernel_metadata, "the kernel's metadata")):
        try:
            if not isinstance(json.loads(path.read_text(encoding="utf-8")), dict):
                problems.append(f"{path}: not a JSON object ({what}); the bundle is damaged: package again")
        except FileNotFoundError:
            problems.append(f"{path}: missing ({what}); the bundle is incomplete: package again")
        except (OSError, ValueError) as exc:
            problems.append(f"{path}: not valid JSON ({exc}; {what}); the bundle is damaged: package again")
    for path in (bundle.kernel_script, bundle.wheel_requirements):
        if not path.is_file():
            problems.append(f"{path}: missing; the bundle is incomplete: package again")
    return problems


def bundle_config(bundle: Bundle) -> Config:
    """The run config inside a bundle from `arena package` (an ensemble's first member's: its kaggle section
    names the datasets and kernel)."""
    missing = bundle.missing_parts()
    if missing:
        raise UserError(f"{bundle.root}: not a bundle from `arena package` (no {missing[0]}/)")
    runs = bundle.member_runs()
    if not runs:
        raise UserError(f"{bundle.ensemble}: an ensemble bundle without members in {bundle.dataset.members}")
    return config_mod.load_run(runs[0])

