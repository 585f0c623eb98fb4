"""Kaggle entry point for the LMSYS Chatbot Arena code competition, rendered by `arena package`.

It only sets paths: it installs the `arena` package (and the pinned wheels Kaggle's image lacks) from the
attached wheels dataset, offline, then runs `arena predict` on the competition's test.csv: under `accelerate
launch` with one process per GPU when the machine has several, as one process otherwise. All inference
code lives in the package. ARENA_KAGGLE_ROOT (default /kaggle) moves the whole layout for the local
rehearsal, `arena kernel run-local`. It first checks the GPUs (on Kaggle: stops at once on the wrong machine)
and gives `arena predict` its start time: the deadline is kaggle.time_limit_hours less a margin after it.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

STARTED = time.time()

# Filled in by `arena package` from the run's config.
COMPETITION = "__COMPETITION__"
ADAPTER_DATASET = "__ADAPTER_DATASET__"
WHEELS_DATASET = "__WHEELS_DATASET__"
BASE_MODEL = "__BASE_MODEL__"  # base weights under /kaggle/input; "" = as the run's config says (embedded)
TTA = "__TTA__"
# An ensemble: [folder in the adapter dataset, base model, TTA, predictions file] per member, predicted in turn
# (one process each, so GPU memory is freed between them) and blended by `arena kernel blend`; [] = one run.
MEMBERS = "__MEMBERS__"

# What the bundle is built for: kernel-metadata.json's machine_shape (a test keeps them equal) -> the GPUs it gives.
MACHINE_SHAPE, MACHINES = "NvidiaTeslaT4", {"NvidiaTeslaT4": ("Tesla T4", 2)}

ROOT = Path(os.environ.get("ARENA_KAGGLE_ROOT", "/kaggle"))
INPUT = ROOT / "input"
SUBMISSION = ROOT / "working" / "submission.csv"
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}


def fail(message: str) -> None:
    sys.exit(f"kernel: FAILED: {message}")


def find_input(name: str) -> Path:
    """An attached input folder: /kaggle/input/<name>, or deeper if Kaggle mounts it under a sub-folder."""
    if (INPUT / name).is_dir():
        return INPUT / name
    found = sorted(p for p in INPUT.glob(f"**/{name}") if p.is_dir())
    if not found:
        fail(f"input {name!r} not found under {INPUT} (attached: {sorted(p.name for p in INPUT.iterdir())})")
    return found[0]


def on_root(path: str) -> Path:
    """A /kaggle/... path from the config, moved under ROOT."""
    path = Path(path)
    return ROOT / path.relative_to("/kaggle") if path.is_relative_to("/kaggle") else INPUT / path


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
    listed = list_gpus()
    check_machine(listed)
    wheels = find_input(WHEELS_DATASET)
    run([sys.executable, "-m", "pip", "install", "--no-index", "--find-links", wheels, "--quiet",
         "--disable-pip-version-check", "-r", wheels / "requirements.txt"])
    run([sys.executable, "-c", "import arena, importlib.metadata as m; print('kernel: arena from', arena.__file__); "
         "print('kernel:', *(n + '==' + m.version(n) for n in ('torch', 'transformers', 'peft', 'accelerate')))"])
    gpus = len(listed)
    # Two GPUs (T4x2): one process per GPU through accelerate, each with its own model copy and half the tokens.
    launch = ([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", gpus,
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "arena.cli"]
              if gpus > 1 else [sys.executable, "-m", "arena.cli"])
    dataset, test = find_input(ADAPTER_DATASET), find_input(COMPETITION) / "test.csv"
    members = [[dataset / folder, base, tta, SUBMISSION.parent / out] for folder, base, tta, out in MEMBERS]

    def predict(run_dir, base, out, *flags) -> bool:
        cmd = [*launch, "predict", "--run", run_dir, "--data", test, "--out", out, "--kernel-start", STARTED, *flags]
        if base:
            if not on_root(base).is_dir():
                fail(f"base model folder {on_root(base)} not found: attach it (kernel-metadata.json model_sources)")
            cmd += ["--base-model", on_root(base)]
        return run(cmd, may_fail=bool(members), env={**os.environ, **OFFLINE})

    if not members:
        predict(dataset, BASE_MODEL, SUBMISSION, "--tta" if TTA else "--no-tta")
    # An ensemble: every member's plain order first (its logits kept), then the swapped orders in the time left.
    done = {}  # member -> its predictions; a member whose plain predict failed is left out of the blend
    for index, (run_dir, base, tta, out) in enumerate(members):
        plain = out.with_name(f"{out.stem}-plain.csv") if tta else out
        if predict(run_dir, base, plain, "--no-tta", "--logits", out.with_suffix(".npz")):
            done[index] = plain
        else:
            print(f"kernel: WARNING: ensemble member {index} ({run_dir}) FAILED: it is left out of the blend", flush=True)
    if members and not done:
        fail(f"every one of the {len(members)} ensemble members failed: no submission")
    for index, (run_dir, base, tta, out) in enumerate(members):
        if tta and index in done:
            if predict(run_dir, base, out, "--tta", "--logits", out.with_suffix(".npz")):
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
    print(f"kernel: wrote {SUBMISSION}", flush=True)


if __name__ == "__main__":
    main()
