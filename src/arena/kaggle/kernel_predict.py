"""`arena kernel predict`: what the submission kernel runs once it has installed arena and found its inputs. One
run's `arena predict` (or each ensemble member's, in turn: one process tree each, so GPU memory is freed between
them) under `accelerate launch` with one process per GPU; the ensemble's plain orders before any swapped one, then
the blend. Whatever one GPU does, a file is written: the processes share their batches (a failed one leaves its
rows to the others), and when the launcher stops them all (a killed process), one process predicts the rest from
the logits they kept, then, if that fails too, the kept logits alone make the file (never the prior alone)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from arena import data, environment, hardware
from arena.errors import UserError
from arena.inference.submission import prediction_frame
from arena.kaggle import ensemble, gates
from arena.layout import EnsembleDataset
from arena.writes import atomic_file

PROCESSES_ENV = environment.KERNEL_PROCESSES  # the rehearsal's processes, instead of one per GPU
PORT_ENV = environment.KERNEL_PORT  # where those processes meet (the rehearsal's free port)


def launch_line(gpus: int) -> list[str]:
    """`arena.cli` as one process, or under accelerate with one process per GPU (T4x2: each its own model copy and
    half the tokens); PROCESSES_ENV overrides the count (the rehearsal's 2 CPU processes, gloo)."""
    processes = environment.whole(PROCESSES_ENV) or gpus
    if processes <= 1:
        return [sys.executable, "-m", "arena.cli"]
    port = ["--main_process_port", str(environment.whole(PORT_ENV))] if environment.text(PORT_ENV) else []
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", *port, "-m", "arena.cli"]


def _run(cmd: list) -> bool:
    print("kernel: $", " ".join(str(c) for c in cmd), flush=True)
    return subprocess.run([str(c) for c in cmd]).returncode == 0


def predict_surviving(launch: list[str], args: list, out: Path) -> bool:
    """`arena predict ARGS` writing `out`, whatever one GPU does (see the module); every step says so."""
    single = [sys.executable, "-m", "arena.cli"]
    if _run([*launch, *args]) or out.is_file():
        return True
    if launch != single:
        print("kernel: WARNING: a prediction process failed and the launcher stopped the others: one process "
              "predicts the rows they had not, from the logits they kept", flush=True)
        if _run([*single, *args]) or out.is_file():
            return True
    print("kernel: WARNING: the prediction failed again: the submission is written from the logits kept so far, "
          "the run's class prior for every other row", flush=True)
    return _run([*single, *args, "--fill-only"]) or out.is_file()


def kernel_predict(dataset, test, out, kernel_start: float, gpus: int, base_model: str | None = None,
                   tta: bool = True, members: list | None = None) -> Path:
    """The kernel's submission `out` of `test` from the adapter dataset `dataset` (one run), or from `members`
    ([run folder, base model folder or "", TTA, predictions file] each: an ensemble), its deadline counted from
    `kernel_start`; `gpus`: the GPUs the kernel listed."""
    out, test = Path(out), Path(test)
    if not test.is_file():  # before any launch: each would fail on it, and so would the retries after it
        held = sorted(p.name for p in test.parent.iterdir()) if test.parent.is_dir() else []
        raise UserError(f"--data {test}: the competition's test file is not there ({test.parent} holds: "
                        f"{', '.join(held) or 'nothing'})")
    launch = launch_line(gpus)
    progress = out.with_name(".arena-progress")
    print(f"kernel: {hardware.current().describe()}; launch: {' '.join(launch[1:])}", flush=True)

    def predict(run_dir, base, predictions, folder, *flags, rows=test) -> bool:
        args = ["predict", "--run", run_dir, "--data", rows, "--out", predictions, "--kernel-start", kernel_start,
                "--progress", folder, *flags, *(["--base-model", base] if base else [])]
        return predict_surviving(launch, args, Path(predictions))

    if not members:
        if not predict(dataset, base_model, out, progress, "--tta" if tta else "--no-tta"):
            raise UserError(f"arena predict wrote no {out}, even from the logits kept so far")
        shutil.rmtree(progress, ignore_errors=True)
        return out
    folders = [progress.with_name(f"{progress.name}-member-{i}") for i in range(len(members))]
    weights, gated = ensemble.read_members(EnsembleDataset(dataset))
    the_task = ensemble.read_task(EnsembleDataset(dataset))
    expected, classes = data.load_test(test, the_task)["id"].astype(str), the_task.classes
    rows_of = {}  # a gated member's rows: the file it predicts (those its gate admits)
    # Every member's plain order first (its logits kept), then the swapped orders in the time left.
    done = {}  # member -> its predictions; a member whose plain predict failed is left out of the blend
    for index, (run_dir, base, member_tta, predictions) in enumerate(members):
        predictions = Path(predictions)
        if gated[index] is not None:
            rows_of[index] = gated_rows(index, gated[index], {j: (done[j], weights[j], gated[j]) for j in done},
                                        test, expected, classes, predictions)
            if rows_of[index] is None:  # its gate admits no row: it scores none
                done[index] = predictions.with_name(f"{predictions.stem}-scored.csv")
                with atomic_file(done[index], overwrite=True) as tmp:
                    prediction_frame([], np.zeros((0, classes))).to_csv(tmp, index=False)
                continue
        plain = predictions.with_name(f"{predictions.stem}-plain.csv") if member_tta else predictions
        if predict(run_dir, base, plain, folders[index], "--no-tta", "--logits", predictions.with_suffix(".npz"),
                   rows=rows_of.get(index, test)):
            done[index] = scored(plain, predictions, index in rows_of)
        else:
            print(f"kernel: WARNING: ensemble member {index} ({run_dir}) FAILED: it is left out of the blend", flush=True)
    if not done:
        raise UserError(f"every one of the {len(members)} ensemble members failed: no submission")
    for index, (run_dir, base, member_tta, predictions) in enumerate(members):
        if member_tta and index in done and rows_of.get(index, test) is not None:
            predictions = Path(predictions)
            if predict(run_dir, base, predictions, folders[index], "--tta", "--logits", predictions.with_suffix(".npz"),
                       rows=rows_of.get(index, test)):
                done[index] = scored(predictions, predictions, index in rows_of)
            else:
                print(f"kernel: WARNING: member {index}'s swap TTA failed: its plain predictions are blended", flush=True)
    left_out = [i for i in range(len(members)) if i not in done]
    ensemble.blend_members(dataset, [done.get(i, m[3]) for i, m in enumerate(members)], test, out, left_out=left_out)
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)
    return out


def gated_rows(index: int, gate, before: dict, test: Path, expected, classes: int, predictions: Path) -> Path | None:
    """The file of rows a gated member predicts: those its `gate` admits from the blend of the members `before` it
    (index -> (their predictions so far, weight, gate)); None when it admits none."""
    probs = [ensemble.member_probabilities(path, expected, g is not None, []) for path, _, g in before.values()]
    probs = [np.full((len(expected), classes), np.nan) if p is None else p for p in probs]
    blended = gates.blend(probs, [w for _, w, _ in before.values()], [np.isfinite(p).all(axis=1) for p in probs]) \
        if probs else np.full((len(expected), classes), np.nan)
    admitted = gate.rows(blended)
    print(f"kernel: member {index} is gated ({gate.describe()} of the members before it): it predicts "
          f"{int(admitted.sum())} of {len(expected)} rows", flush=True)
    return gate_file(test, expected[admitted], predictions.with_name(f"{predictions.stem}-rows")) if admitted.any() \
        else None


def gate_file(test: Path, ids, stem: Path) -> Path:
    """The rows of `test` (csv or parquet, as the competition gives it) whose id is in `ids`, in a file of the same
    form beside the member's predictions: what a gated member predicts."""
    wanted = set(map(str, ids))
    out = stem.with_suffix(test.suffix)
    if test.suffix == ".parquet":
        frame = pd.read_parquet(test)
        with atomic_file(out, overwrite=True) as tmp:
            frame[frame["id"].astype(str).isin(wanted)].to_parquet(tmp, index=False)
    else:
        # undecodable bytes become U+FFFD here, as data.load_test repairs them: an odd row never stops the kernel
        frame = pd.read_csv(test, dtype=str, keep_default_na=False, encoding_errors="replace")
        with atomic_file(out, overwrite=True) as tmp:
            frame[frame["id"].isin(wanted)].to_csv(tmp, index=False)
    return out


def scored(written: Path, predictions: Path, is_gated: bool) -> Path:
    """A member's predictions for the blend: as written, or for a gated member only the rows it predicted (finite
    logits kept beside them; a row the deadline left out takes the blend of the members before it)."""
    if not is_gated:
        return written
    try:
        with np.load(predictions.with_suffix(".npz")) as kept:
            ids = kept["ids"].astype(str)
            ok = np.isfinite(kept["plain"]).all(axis=1) | np.isfinite(kept["swapped"]).all(axis=1)
    except (OSError, KeyError, ValueError) as exc:  # no logits kept (a filled file): every row it wrote counts
        print(f"kernel: member predictions {written.name}: no kept logits ({exc}); all its rows are blended",
              flush=True)
        return written
    frame, _ = data.read_probabilities(written, "member prediction")
    out = written.with_name(f"{written.stem}-scored.csv")
    with atomic_file(out, overwrite=True) as tmp:
        frame[frame["id"].astype(str).isin(set(ids[ok]))].to_csv(tmp, index=False)
    return out
