"""Kaggle entry point for the run's chatbot-arena code competition (kaggle.competition), rendered by `arena package`.

It only sets paths: it checks the image it runs on and its GPUs (on Kaggle: stops at once on the wrong machine),
installs the `arena` package (and the pinned wheels Kaggle's image lacks) from the attached wheels dataset, offline,
then runs `arena kernel predict` on the competition's test file, which runs `arena predict` under `accelerate launch`
with one process per GPU and survives a failed one (arena/kaggle/kernel_predict.py). All inference code lives in the
package. ARENA_KAGGLE_ROOT (default /kaggle) moves the whole layout for the local rehearsal, `arena kernel run-local`.
The kernel's start time is passed on: the deadline is kaggle.time_limit_hours less a margin after it.
Inputs are found in Kaggle's current layout (input/competitions/<slug>, input/datasets/<owner>/<slug>,
input/models/<owner>/<model>/<framework>/<variation>/<version>) and the older one (input/<slug>, input/<model>/...).
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

STARTED = time.time()

# Filled in by `arena package` from the run's config.
COMPETITION = "__COMPETITION__"
TEST_FILE = "__TEST_FILE__"  # the hidden test set: its task's file (arena.task: test.csv, or test.parquet)
ADAPTER_DATASET = "__ADAPTER_DATASET__"
WHEELS_DATASET = "__WHEELS_DATASET__"
# The base weights: "models/<owner>/<model>/<framework>/<variation>/<version>" (a Kaggle model),
# "datasets/<owner>/<slug>" (a dataset), a /kaggle/... path, or "" = as the run's config says (embedded).
BASE_MODEL = "__BASE_MODEL__"
TTA = "__TTA__"
# Set by `arena push` for each push; written to the output so that push knows the output is this version's.
PUSH_ID = ""
# An ensemble: [folder in the adapter dataset, base model, TTA, predictions file] per member, predicted in turn
# (one process each, so GPU memory is freed between them) and blended by `arena kernel blend`; [] = one run.
MEMBERS = "__MEMBERS__"

# What the bundle is built for (arena.hardware's Kaggle profile): kernel-metadata.json's machine_shape -> its GPUs.
MACHINE_SHAPE, MACHINES = "__MACHINE_SHAPE__", "__MACHINES__"

ROOT = Path(os.environ.get("ARENA_KAGGLE_ROOT", "/kaggle"))
INPUT = ROOT / "input"
SUBMISSION = ROOT / "working" / "submission.csv"
# @include kernel_inputs.py  (OFFLINE, fail, attached, find_input, find_base_model, on_root)
# @include kernel_image.py  (check_image)


def run(cmd: list, may_fail: bool = False, **kwargs) -> bool:
    print("kernel: $", " ".join(str(c) for c in cmd), flush=True)
    code = subprocess.run([str(c) for c in cmd], **kwargs).returncode
    if code != 0 and not may_fail:
        fail(f"exit code {code} from: {' '.join(str(c) for c in cmd)}")
    return code == 0


def list_gpus() -> list[str]:
    """GPUs as `nvidia-smi -L` lists them (none where it is absent, as in the local rehearsal)."""
    try:
        probe = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line for line in probe.stdout.splitlines() if line.startswith("GPU ")] if probe.returncode == 0 else []


def check_machine(gpus: list[str]) -> None:
    """On Kaggle (not in the rehearsal), stop at once when the GPUs are not the ones the bundle was built for:
    on one GPU or a P100 the rerun would run out of time after hours, and score nothing."""
    print("kernel: GPUs:", "; ".join(gpus) or "none", flush=True)
    name, count = MACHINES[MACHINE_SHAPE]
    if os.environ.get("KAGGLE_KERNEL_RUN_TYPE") and not os.environ.get("ARENA_SKIP_GPU_CHECK") and (
            len(gpus) != count or not all(name in gpu for gpu in gpus)):
        fail(f"this bundle is built for {count} x {name} (machine_shape {MACHINE_SHAPE}) but the session has "
             f"{len(gpus)} GPU(s): {gpus}. Set the accelerator to GPU T4 x2 and run again.")


def main() -> None:
    check_image(find_input(WHEELS_DATASET))  # what differs from the image it was built for
    check_machine(listed := list_gpus())
    if PUSH_ID:
        SUBMISSION.parent.mkdir(parents=True, exist_ok=True)
        (SUBMISSION.parent / "arena-push.txt").write_text(PUSH_ID + "\n")
    wheels = find_input(WHEELS_DATASET)
    run([sys.executable, "-m", "pip", "install", "--no-index", "--find-links", wheels, "--quiet", "--no-compile",
         "--disable-pip-version-check", "-r", wheels / "requirements.txt"])
    run([sys.executable, "-c", "import arena, importlib.metadata as m; print('kernel: arena from', arena.__file__); "
         "print('kernel:', *(n + '==' + m.version(n) for n in ('torch', 'transformers', 'peft', 'accelerate')))"])
    dataset, test = find_input(ADAPTER_DATASET), find_input(COMPETITION) / TEST_FILE
    cmd = [sys.executable, "-m", "arena.cli", "kernel", "predict", dataset, "--data", test, "--out", SUBMISSION,
           "--kernel-start", STARTED, "--gpus", len(listed), "--tta" if TTA else "--no-tta"]
    if BASE_MODEL:
        cmd += ["--base-model", find_base_model(BASE_MODEL)]
    if MEMBERS:  # each member's base model found in the mount layout here; arena predicts them in turn
        cmd += ["--members", json.dumps([[str(dataset / folder), str(find_base_model(base)) if base else "", tta,
                                          str(SUBMISSION.parent / out)] for folder, base, tta, out in MEMBERS])]
    run(cmd, env={**os.environ, **OFFLINE})
    if not SUBMISSION.is_file():
        fail(f"arena kernel predict wrote no {SUBMISSION}")
    print(f"kernel: wrote {SUBMISSION}", flush=True)

if __name__ == "__main__":
    main()
