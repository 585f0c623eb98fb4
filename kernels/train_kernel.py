"""Kaggle entry point that trains one arena run, rendered by `arena kaggle train` (the training bundle's kernel).

It only sets paths and the time budget: it installs the `arena` package (and the pinned wheels Kaggle's image
lacks) from the attached wheels dataset, offline; copies the run folder of an attached previous version's output,
if there is one, into /kaggle/working to resume it; then runs `arena train` under `accelerate launch`, one process
per GPU, with a wall-clock budget of the session limit less a margin and less the time this kernel has run. The
run folder lands in /kaggle/working/runs, which becomes this version's output. All training code lives in the
package. ARENA_KAGGLE_ROOT (default /kaggle) moves the whole layout for `arena kernel run-local`. Inputs are
found in Kaggle's current mount layout and in the older one, as kernels/kernel.py finds them.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

STARTED = time.time()

# Filled in by `arena kaggle train` from the config.
COMPETITION = "__COMPETITION__"
DATA_DATASET = "__DATA_DATASET__"
WHEELS_DATASET = "__WHEELS_DATASET__"
TRAIN_KERNEL = "__TRAIN_KERNEL__"  # this kernel's slug: a previous version's output is attached under it
# The base weights: "models/<owner>/<model>/<framework>/<variation>/<version>" (a Kaggle model),
# "datasets/<owner>/<slug>" (a dataset), a /kaggle/... path, or "" = as the config says (embedded).
BASE_MODEL = "__BASE_MODEL__"
# data.train: "competition:<file>" (the competition's own files), "sample" (generated here), or a file of the data
# dataset; data.extra and data.teacher: files of the data dataset.
TRAIN = "__TRAIN__"
EXTRA = "__EXTRA__"
TEACHER = "__TEACHER__"
SESSION_HOURS = "__SESSION_HOURS__"
MARGIN_HOURS = "__MARGIN_HOURS__"
BUDGET_RECORD = "__BUDGET_RECORD__"  # the run folder's record of its stops for time
BUDGET_EXIT = "__BUDGET_EXIT__"  # arena train's exit code after a stop for time (one process)

ROOT = Path(os.environ.get("ARENA_KAGGLE_ROOT", "/kaggle"))
INPUT = ROOT / "input"
RUNS = ROOT / "working" / "runs"
# @include kernel_inputs.py  (OFFLINE, fail, attached, find_input, find_base_model, on_root)
# @include kernel_image.py  (check_image)


def run(cmd: list, **kwargs) -> int:
    print("kernel: $", " ".join(str(c) for c in cmd), flush=True)
    return subprocess.run([str(c) for c in cmd], **kwargs).returncode


def gpu_count() -> int:
    """GPUs as `nvidia-smi -L` lists them (none where it is absent, as in the local rehearsal)."""
    try:
        probe = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
    except OSError:
        return 0
    return sum(line.startswith("GPU ") for line in probe.stdout.splitlines()) if probe.returncode == 0 else 0


def finished(run_dir: Path) -> bool:
    """The adapter and metrics.json, the finish's last write: an adapter alone is a finish cut short."""
    return (run_dir / "adapter").is_dir() and (run_dir / "metrics.json").is_file()


def previous_run() -> Path | None:
    """The unfinished run folder in an attached previous version's output (runs/<run>/ with checkpoints)."""
    roots = [p for p in INPUT.glob(f"**/{TRAIN_KERNEL}") if p.is_dir()]
    runs = [r for root in roots for r in sorted((root / "runs").glob("*")) if (r / "config.yaml").is_file()]
    unfinished = [r for r in runs if not finished(r) and (r / "checkpoints").is_dir()]
    if len(runs) > len(unfinished):
        print(f"kernel: the attached output holds a finished run ({[r.name for r in runs if r not in unfinished]}): "
              f"nothing to resume", flush=True)
    if len(unfinished) > 1:
        fail(f"the attached output holds several unfinished runs: {[str(r) for r in unfinished]}")
    return unfinished[0] if unfinished else None


def stops_for_time(run_dir: Path) -> int:
    record = run_dir / BUDGET_RECORD
    return len(json.loads(record.read_text(encoding="utf-8"))["stops"]) if record.is_file() else 0


def data_path(name: str) -> str:
    if name.startswith("competition:"):
        return str(find_input(COMPETITION) / name.removeprefix("competition:"))
    return name if name == "sample" else str(find_input(DATA_DATASET) / name)


def main() -> None:
    check_image(find_input(WHEELS_DATASET))  # what differs from the image it was built for
    wheels = find_input(WHEELS_DATASET)
    if run([sys.executable, "-m", "pip", "install", "--no-index", "--find-links", wheels, "--quiet", "--no-compile",
            "--disable-pip-version-check", "-r", wheels / "requirements.txt"]):
        fail("pip install from the wheels dataset failed")
    dataset = find_input(DATA_DATASET)
    # Two GPUs (T4x2): one process per GPU (DDP), each with its own model copy and its share of every batch; the
    # rehearsal's ARENA_KERNEL_PROCESSES runs them on the CPU (gloo), meeting at ARENA_KERNEL_PORT.
    gpus = int(os.environ.get("ARENA_KERNEL_PROCESSES") or gpu_count())
    port = ["--main_process_port", os.environ["ARENA_KERNEL_PORT"]] if os.environ.get("ARENA_KERNEL_PORT") else []
    launch = ([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", gpus,
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", *port, "-m", "arena.cli"]
              if gpus > 1 else [sys.executable, "-m", "arena.cli"])
    cmd = [*launch, "train", "--config", dataset / "config.yaml"]
    previous, stops_before = previous_run(), 0
    if previous is not None:
        stops_before = stops_for_time(previous)
        # The input is read-only: the run continues in a copy, which becomes this version's output.
        RUNS.mkdir(parents=True, exist_ok=True)
        shutil.copytree(previous, RUNS / previous.name)
        print(f"kernel: resuming {previous.name} from the attached output {previous}", flush=True)
        cmd += ["--resume", RUNS / previous.name]
    overrides = [f"train.runs_dir={RUNS}", f"data.train={data_path(TRAIN)}",
                 "data.extra=[" + ",".join(repr(data_path(f)) for f in EXTRA) + "]",
                 "data.teacher=[" + ",".join(repr(data_path(f)) for f in TEACHER) + "]"]
    if BASE_MODEL:
        overrides.append(f"model.path={find_base_model(BASE_MODEL)}")
    for override in overrides:
        cmd += ["--set", override]
    # The budget counts from this kernel's start (pip install and the copy above included).
    hours = max(SESSION_HOURS - MARGIN_HOURS - (time.time() - STARTED) / 3600, 1e-6)
    cmd += ["--max-wall-hours", f"{hours:.6g}"]
    code = run(cmd, env={**os.environ, **OFFLINE})
    runs = sorted(p for p in RUNS.glob("*") if (p / "config.yaml").is_file()) if RUNS.is_dir() else []
    if len(runs) != 1:
        fail(f"arena train exited {code} and left {len(runs)} run folders in {RUNS}")
    done = finished(runs[0]) and code == 0
    stopped = stops_for_time(runs[0]) > stops_before and not finished(runs[0])
    if done:
        print(f"kernel: training finished: {runs[0]}; pull it with `arena kaggle pull`", flush=True)
    elif stopped and code in (BUDGET_EXIT, 1):  # under accelerate launch the launcher exits 1 for any rank's 75
        print(f"kernel: stopped for time (see {runs[0] / BUDGET_RECORD}); push the next version with "
              f"`arena kaggle train --resume`", flush=True)
    elif whole := sorted((c for c in (runs[0] / "checkpoints").glob("checkpoint-*")
                          if (c / "trainer_state.json").is_file()), key=lambda c: int(c.name.split("-")[1])):
        # a crashed or killed process (a CUDA error, an out-of-memory): the session's training is not lost
        print(f"kernel: WARNING: arena train FAILED (exit code {code}); this version's output keeps the run with its "
              f"last whole checkpoint, {whole[-1].name}: push the next version with `arena kaggle train --resume`",
              flush=True)
    else:
        fail(f"exit code {code} from arena train, and the run has no whole checkpoint to resume from")


if __name__ == "__main__":
    main()
