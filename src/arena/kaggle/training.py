"""`arena kaggle train`: the training bundle (the wheels dataset of the inference bundle, a data dataset with the
resolved config and the data files, and a thin training kernel for GPU T4x2, internet off) and its push; with
--resume the kernel attaches the previous version's output and continues its run; --dry-run prints every command."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

from arena import budget, data, embedded, planner, task
from arena import config as config_mod
from arena.config import SAMPLE, Config
from arena.errors import UserError
from arena.kaggle import bundle as bundle_mod
from arena.kaggle import published, training_time
from arena.kaggle import wheels as wheels_mod
from arena.kaggle.credentials import PLACEHOLDER_USER, find_credentials, require_credentials, warn_permissions
from arena.kaggle.push import _dataset_commands, check_model_access, kernel_state, push_dataset
from arena.kaggle.remote import kaggle_cli_user, kaggle_executable_display, run_kaggle
from arena.layout import DATASET_METADATA, KERNEL_FILE, KERNEL_METADATA, _At, _Layout, stamp
from arena.writes import atomic_folder, output_problems

TRAIN_KERNEL_TEMPLATE = bundle_mod.TEMPLATES / "train_kernel.py"


class TrainingBundle(_Layout):
    """What `arena kaggle train` builds: two datasets and the training kernel, each ready for the kaggle CLI."""

    PARTS = ("wheels-dataset", "data-dataset", "kernel")
    wheels = _At("wheels-dataset")  # as the inference bundle's (bundle.write_wheelhouse)
    wheel_requirements = _At("wheels-dataset", "requirements.txt")
    data = _At("data-dataset")
    config = _At("data-dataset", "config.yaml")  # the resolved config; the kernel sets the paths under /kaggle
    kernel = _At("kernel")
    kernel_script = _At("kernel", KERNEL_FILE)
    kernel_metadata = _At("kernel", KERNEL_METADATA)
    projection = _At("projection.json")  # the training projection and the sessions it needs

    def is_training_bundle(self) -> bool:
        return all((self.root / part).is_dir() for part in self.PARTS) and self.config.is_file()


def data_files(cfg: Config) -> tuple[dict, list[tuple[Path, str]], list[str]]:
    """(the kernel's TRAIN/EXTRA/TEACHER values, (local file, name in the data dataset) to copy, problems)."""
    copies, problems = [], []

    def ship(path: str, role: str) -> str:
        source = Path(path)
        if not source.is_file():
            problems.append(f"data.{role}: {path}: file not found, so it cannot be uploaded")
        name = f"{role}-{len(copies)}-{source.name}"
        copies.append((source, name))
        return name

    if cfg.data.train == SAMPLE:
        train = SAMPLE
    elif Path(cfg.data.train).name == task.of_config(cfg).train_file:  # the competition's own: read from its input
        train = f"competition:{Path(cfg.data.train).name}"
    else:
        train = ship(cfg.data.train, "train")
    values = {"TRAIN": train, "EXTRA": [ship(p, "extra") for p in cfg.data.extra],
              "TEACHER": [ship(p, "teacher") for p in cfg.data.teacher]}
    return values, copies, problems


def check_inputs(cfg: Config) -> list[str]:
    """What can be checked here before anything is uploaded: the training rows and teachers (unless data.train is
    the competition's file, not downloaded here), and the base model's adapter targets and prompt budget (when
    its folder is here, or it is the embedded model)."""
    from arena.train import check_base_model  # here, not at the top: arena.train loads transformers (seconds)

    problems = []
    if cfg.data.train == SAMPLE or Path(cfg.data.train).is_file():
        try:
            df = data.training_data(cfg.data, task.of_config(cfg))
            if cfg.data.teacher:
                data.read_teachers(cfg.data.teacher, df["id"], task.of_config(cfg))
        except UserError as exc:
            problems += exc.problems
    if embedded.is_embedded(cfg.model.path) or (Path(cfg.model.path).expanduser() / "config.json").is_file():
        try:
            check_base_model(cfg)
        except UserError as exc:
            problems += exc.problems
    return problems


def kernel_metadata(cfg: Config, user: str, resume: bool) -> dict:
    """The inference kernel's metadata (GPU T4x2, internet off, the competition, the base model) for the training
    kernel: its own id, the wheels and data datasets, and with `resume` its own previous output."""
    k = cfg.kaggle
    meta = bundle_mod.kernel_metadata(cfg, user)
    meta |= {"id": f"{user}/{k.train_kernel_slug}", "title": bundle_mod._title(k.train_kernel_slug),
             "dataset_sources": list(dict.fromkeys(
                 [f"{user}/{k.wheels_dataset_slug}", f"{user}/{k.train_data_dataset_slug}"]
                 + ([k.base_model_dataset] if k.base_model_dataset else []))),
             "kernel_sources": [f"{user}/{k.train_kernel_slug}"] if resume else []}
    return meta


def render_kernel_script(cfg: Config, files: dict) -> str:
    k = cfg.kaggle
    return bundle_mod.fill_template(TRAIN_KERNEL_TEMPLATE, {
        "COMPETITION": k.competition, "DATA_DATASET": k.train_data_dataset_slug, "WHEELS_DATASET": k.wheels_dataset_slug,
        "TRAIN_KERNEL": k.train_kernel_slug,
        "BASE_MODEL": bundle_mod.kernel_base_model(cfg),
        **files, "SESSION_HOURS": k.session_hours, "MARGIN_HOURS": k.session_margin_hours,
        "BUDGET_RECORD": budget.RECORD, "BUDGET_EXIT": budget.EXIT_CODE, **wheels_mod.kernel_image_values(cfg)})


def build(cfg: Config, out: Path, user: str, wheels: bool = True, resume: bool = False,
          projection: dict | None = None) -> TrainingBundle:
    """The training bundle at `out` (built aside, renamed into place; never over an existing folder)."""
    files, copies, problems = data_files(cfg)
    problems += bundle_mod.base_model_problems(cfg) + output_problems(out, "training bundle", folder=True)
    if not problems:
        problems = check_inputs(cfg)
    if problems:
        raise UserError(problems=problems)
    k = cfg.kaggle
    with atomic_folder(out, "training bundle") as staging:
        built = TrainingBundle(staging)
        built.data.mkdir()
        for source, name in copies:
            shutil.copy2(source, built.data / name)
        config_mod.dump(cfg, built.config)
        bundle_mod.write_wheelhouse(built, cfg, wheels)
        for folder, slug, terms in ((built.wheels, k.wheels_dataset_slug, published.wheels_licence([cfg])),
                                    (built.data, k.train_data_dataset_slug, published.training_data_licence())):
            bundle_mod.write_json(folder / DATASET_METADATA, bundle_mod.dataset_metadata(slug, user, terms))
        built.kernel.mkdir()
        built.kernel_script.write_text(render_kernel_script(cfg, files), encoding="utf-8")
        bundle_mod.write_json(built.kernel_metadata, kernel_metadata(cfg, user, resume))
        if projection is not None:
            bundle_mod.write_json(built.projection, projection)
    print(f"training bundle: {out} (kernel {user}/{k.train_kernel_slug}"
          f"{', resuming from its previous version' if resume else ''}; data.train "
          f"{'from the competition files' if files['TRAIN'].startswith('competition:') else files['TRAIN']})")
    return TrainingBundle(out)


def project(cfg: Config) -> dict:
    """The training projection on Kaggle's T4x2, printed before anything is pushed."""
    tokenizer, note = planner.tokenizer_for(cfg)
    projection = training_time.project_training(cfg, tokenizer, note, "t4", 2)
    print(training_time.format_training(projection))
    return projection


def push_training(config_path=None, overrides=(), resume: bool = False, dry_run: bool = False, wheels: bool = True,
                  out=None, message: str = "arena training") -> TrainingBundle:
    """`arena kaggle train`: project, build the training bundle, push both datasets and the kernel (its first
    version, or with --resume the next one, attaching the previous version's output). Without credentials:
    UserError before any network call; with --dry-run, every command printed and none run."""
    cfg = config_mod.load(config_path, overrides)
    if not (wheels or dry_run):
        raise UserError("--no-wheels: the offline kernel could not install transformers 5; push without it "
                        "(--no-wheels suits --dry-run and `arena kernel run-local`)")
    if dry_run:
        creds = find_credentials()
        warn_permissions(creds)
        user = creds.user or PLACEHOLDER_USER
    else:
        require_credentials()  # before anything reaches the network
        user = kaggle_cli_user()  # the account the CLI authenticates as
    projection = project(cfg)
    out = Path(out) if out else Path("kaggle-train") / f"{cfg.name}-{stamp()}"
    built = build(cfg, out, user, wheels, resume, projection)
    k = cfg.kaggle
    kernel_id = f"{user}/{k.train_kernel_slug}"
    datasets = ((built.wheels, f"{user}/{k.wheels_dataset_slug}"), (built.data, f"{user}/{k.train_data_dataset_slug}"))
    if dry_run:
        print(f"dry run: nothing is sent to Kaggle. `arena kaggle train` would run ({kaggle_executable_display()}):")
        for folder, dataset_id in datasets:
            status, create, version = _dataset_commands(folder, dataset_id, message)
            print(f"  kaggle {shlex.join(status)}\n  kaggle {shlex.join(create)}\n"
                  f"      # when the status check finds the dataset: kaggle {shlex.join(version)}")
        print(f"  kaggle {shlex.join(['kernels', 'push', '-p', str(built.kernel)])}")
        print(f"  kaggle kernels status {kernel_id}/<N>      # <N>: the version pushed")
        print(f"      # later: arena kaggle pull {kernel_id} --version <N>  "
              f"(kaggle kernels output {kernel_id}/<N> -p ...)")
        return built
    push_bundle(built, cfg, user, message, config_path)
    return built


def push_bundle(built: TrainingBundle, cfg: Config, user: str, message: str = "arena training",
                config_path=None) -> str:
    """Check the base model's access, create or version both datasets (waiting for those versions), push the
    kernel pinned to them, show its status; returns the kernel version pushed."""
    k = cfg.kaggle
    kernel_id = f"{user}/{k.train_kernel_slug}"
    if not any(w.name.startswith("transformers-") for w in built.wheels.glob("*.whl")):
        raise UserError(f"{built.wheels}: no wheelhouse; the offline kernel could not install transformers 5")
    meta = json.loads(built.kernel_metadata.read_text(encoding="utf-8"))
    check_model_access(meta.get("model_sources", []))
    pinned = [f"{user}/{slug}/{push_dataset(folder, f'{user}/{slug}', message)}"
              for folder, slug in ((built.wheels, k.wheels_dataset_slug), (built.data, k.train_data_dataset_slug))]
    meta["dataset_sources"] = pinned + [s for s in meta["dataset_sources"] if s == k.base_model_dataset]
    bundle_mod.write_json(built.kernel_metadata, meta)  # the versions just made
    pushed = run_kaggle(["kernels", "push", "-p", str(built.kernel)]).stdout
    match = re.search(r"Kernel version (\d+) successfully pushed", pushed)
    if not match:
        raise UserError("`kaggle kernels push` reported no kernel version; its output is above")
    version = match.group(1)
    state, _ = kernel_state(kernel_id, version, missing_ok=True)
    print(f"pushed {kernel_id} version {version} (status now: {state}): it trains for up to "
          f"{k.session_hours - k.session_margin_hours:g} h (kaggle.session_hours less kaggle.session_margin_hours), "
          f"then stops with a whole checkpoint.\n"
          f"  when it completes: arena kaggle pull {kernel_id} --version {version}\n"
          f"  if it stopped for time: arena kaggle train {'--config ' + str(config_path) + ' ' if config_path else ''}"
          f"--resume  (attaches this version's output)")
    return version


def bundle_inputs(bundle: TrainingBundle) -> tuple[Config, dict]:
    """The config and data-file map of a training bundle (for the rehearsal), checked."""
    if not bundle.is_training_bundle():
        raise UserError(f"{bundle.root}: not a training bundle from `arena kaggle train` "
                        f"(needs {', '.join(TrainingBundle.PARTS)}/ and {bundle.config.relative_to(bundle.root)})")
    cfg = config_mod.load(bundle.config)
    meta = json.loads(bundle.kernel_metadata.read_text(encoding="utf-8"))
    return cfg, meta
