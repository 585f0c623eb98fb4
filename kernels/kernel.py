"""Kaggle entry point for the LMSYS Chatbot Arena code competition, rendered by `arena package`.

It only sets paths: it installs the `arena` package (and the pinned wheels Kaggle's image lacks) from the
attached wheels dataset, offline, then runs `arena predict` on the competition's test.csv: under `accelerate
launch` with one process per GPU when the machine has several, as one process otherwise. All inference
code lives in the package. ARENA_KAGGLE_ROOT (default /kaggle) moves the whole layout for the local
rehearsal, `arena kernel run-local`, where ARENA_KERNEL_PROCESSES sets the processes (else one per listed GPU)
and ARENA_KERNEL_PORT their port. It first checks the GPUs (on Kaggle: stops at once on the wrong machine) and
gives `arena predict` its start time: the deadline is kaggle.time_limit_hours less a margin after it.
Inputs are found in Kaggle's current layout (input/competitions/<slug>, input/datasets/<owner>/<slug>,
input/models/<owner>/<model>/<framework>/<variation>/<version>) and the older one (input/<slug>, input/<model>/...).
"""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

STARTED = time.time()

# Filled in by `arena package` from the run's config.
COMPETITION = "__COMPETITION__"
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
PROGRESS = ROOT / "working" / ".arena-progress"  # each prediction process's logits, kept as it goes
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


def launch_line(gpus: int) -> list:
    """`arena.cli` as one process, or under accelerate with one process per GPU (T4x2: each its own model copy
    and half the tokens); ARENA_KERNEL_PROCESSES overrides the count (the rehearsal's 2 CPU processes, gloo)."""
    processes = int(os.environ.get("ARENA_KERNEL_PROCESSES") or gpus)
    if processes <= 1:
        return [sys.executable, "-m", "arena.cli"]
    port = ["--main_process_port", os.environ["ARENA_KERNEL_PORT"]] if os.environ.get("ARENA_KERNEL_PORT") else []
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", processes,
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", *port, "-m", "arena.cli"]


def main() -> None:
    check_image(find_input(WHEELS_DATASET))  # what differs from the image it was built for
    check_machine(listed := list_gpus())
    if PUSH_ID:
        SUBMISSION.parent.mkdir(parents=True, exist_ok=True)
        (SUBMISSION.parent / "arena-push.txt").write_text(PUSH_ID + "\n")
    wheels = find_input(WHEELS_DATASET)
    run([sys.executable, "-m", "pip", "install", "--no-index", "--find-links", wheels, "--quiet",
         "--disable-pip-version-check", "-r", wheels / "requirements.txt"])
    run([sys.executable, "-c", "import arena, importlib.metadata as m; print('kernel: arena from', arena.__file__); "
         "print('kernel:', *(n + '==' + m.version(n) for n in ('torch', 'transformers', 'peft', 'accelerate')))"])
    launch = launch_line(len(listed))
    dataset, test = find_input(ADAPTER_DATASET), find_input(COMPETITION) / "test.csv"
    members = [[dataset / folder, base, tta, SUBMISSION.parent / out] for folder, base, tta, out in MEMBERS]

    def predict(run_dir, base, out, progress, *flags) -> bool:
        args = ["predict", "--run", run_dir, "--data", test, "--out", out, "--kernel-start", STARTED,
                "--progress", progress, *flags]
        if base:
            args += ["--base-model", find_base_model(base)]
        return predict_surviving(launch, args, out)

    if not members:
        if not predict(dataset, BASE_MODEL, SUBMISSION, PROGRESS, "--tta" if TTA else "--no-tta"):
            fail(f"arena predict wrote no {SUBMISSION}, even from the logits kept so far")
    # An ensemble: every member's plain order first (its logits kept), then the swapped orders in the time left.
    done = {}  # member -> its predictions; a member whose plain predict failed is left out of the blend
    for index, (run_dir, base, tta, out) in enumerate(members):
        plain = out.with_name(f"{out.stem}-plain.csv") if tta else out
        if predict(run_dir, base, plain, member_progress(index), "--no-tta", "--logits", out.with_suffix(".npz")):
            done[index] = plain
        else:
            print(f"kernel: WARNING: ensemble member {index} ({run_dir}) FAILED: it is left out of the blend", flush=True)
    if members and not done:
        fail(f"every one of the {len(members)} ensemble members failed: no submission")
    for index, (run_dir, base, tta, out) in enumerate(members):
        if tta and index in done:
            if predict(run_dir, base, out, member_progress(index), "--tta", "--logits", out.with_suffix(".npz")):
                done[index] = out
            else:
                print(f"kernel: WARNING: member {index}'s swap TTA failed: its plain predictions are blended", flush=True)
    if members:
        left_out = [i for i in range(len(members)) if i not in done]
        run([sys.executable, "-m", "arena.cli", "kernel", "blend", dataset, "--data", test, "--out", SUBMISSION,
             "--preds", *(done.get(i, m[3]) for i, m in enumerate(members)),
             *(["--left-out", *left_out] if left_out else [])], env={**os.environ, **OFFLINE})
    if not SUBMISSION.is_file():
        fail(f"arena predict wrote no {SUBMISSION}")
    for folder in [PROGRESS, *(member_progress(i) for i in range(len(members)))]:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"kernel: wrote {SUBMISSION}", flush=True)


def member_progress(index: int) -> Path:
    return PROGRESS.with_name(f"{PROGRESS.name}-member-{index}")


def predict_surviving(launch: list, args: list, out: Path) -> bool:
    """`arena predict ARGS` writing `out`, whatever one GPU does. Its processes share their batches, so one that
    fails leaves its rows to the others; but when one is killed (or dies outside its passes) the launcher stops
    them all: then one process predicts what they had not, from the logits they kept in --progress (on GPU 0: a
    CUDA out-of-memory or a device error strikes one card), and if that fails too the file is written from those
    logits alone, the run's class prior for the rest. Every step says so in the log."""
    env = {**os.environ, **OFFLINE}
    single = [sys.executable, "-m", "arena.cli"]
    if run([*launch, *args], may_fail=True, env=env) or out.is_file():
        return True
    if launch != single:
        print("kernel: WARNING: a prediction process failed and the launcher stopped the others: one process "
              "predicts the rows they had not, from the logits they kept", flush=True)
        if run([*single, *args], may_fail=True, env=env) or out.is_file():
            return True
    print("kernel: WARNING: the prediction failed again: the submission is written from the logits kept so far, "
          "the run's class prior for every other row", flush=True)
    return run([*single, *args, "--fill-only"], may_fail=True, env=env) or out.is_file()

if __name__ == "__main__":
    main()
