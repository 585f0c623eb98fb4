"""Faults a GPU session meets, injected on purpose so that a rehearsal can show what the kernel does about them
(`arena kernel run-local --fault NAME`, which sets ARENA_FAULT for the kernel's processes). Nothing here runs
unless ARENA_FAULT is set; a real session meets the same faults without being asked.

A fault is `NAME` or `NAME:RANK` (the rank it strikes; default: the last one). The rank faults strike only a
command running as several processes (the kernel's T4x2 launch): the kernel's retry after a crash runs as one
process, on the surviving GPU, and is not struck again."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from arena import environment
from arena.errors import UserError

FAULT_ENV = environment.FAULT
FAULTS = {
    "rank-crash": "one rank raises mid-pass, as a CUDA out-of-memory does",
    "rank-killed": "one rank is killed by a signal (SIGKILL) mid-pass",
    "nan-batch": "one batch's logits are NaN",
    "slow-gpu": "one rank runs at a third of the other's speed",
    "session-limit": "the session's time limit arrives mid-pass (prediction: its deadline; training: during the "
                     "run's finish, when the session is killed)",
}
RANK_FAULTS = ("rank-crash", "rank-killed", "nan-batch", "slow-gpu")


class InjectedCrash(RuntimeError):
    """What ARENA_FAULT=rank-crash raises: a stand-in for torch.cuda.OutOfMemoryError."""


@dataclass(frozen=True)
class Fault:
    name: str
    rank: int | None = None  # None: the last rank

    def strikes(self, rank: int, processes: int) -> bool:
        if self.name == "session-limit":
            return True  # the session's end comes to every process
        if processes < 2:
            return False
        return rank == (processes - 1 if self.rank is None else self.rank)

    def __str__(self) -> str:
        return self.name if self.rank is None else f"{self.name}:{self.rank}"


def parse(value: str, origin: str) -> Fault:
    """`NAME` or `NAME:RANK`; UserError naming `origin` (the flag or the environment variable)."""
    name, _, rank = value.strip().partition(":")
    problems = []
    if name not in FAULTS:
        problems.append(f"{origin} {value!r}: not a fault arena injects; one of {', '.join(FAULTS)}")
    elif rank and (name not in RANK_FAULTS or not rank.isdigit()):
        problems.append(f"{origin} {value!r}: a rank (NAME:RANK, RANK a whole number) is only for "
                        f"{', '.join(RANK_FAULTS)}")
    if problems:
        raise UserError(problems=problems)
    return Fault(name, int(rank) if rank else None)


def from_env() -> Fault | None:
    found = environment.setting(FAULT_ENV)
    return parse(found.value, FAULT_ENV) if found and found.value else None


def strike_prediction(forward: Callable[[int, list[int]], np.ndarray], fault: Fault | None, rank: int,
                      processes: int, jump_to_deadline: Callable[[], None], folder: Path | None):
    """`forward(view, batch)` with `fault` injected, or `forward` itself where there is none. The rank faults
    strike at the struck rank's first batch (slow-gpu: every batch of it takes three times as long); the other
    processes begin their first batch once it has begun, in the processes' shared `folder`, and a crash or kill
    waits until each of them has kept a batch, so that it strikes mid-pass (the processes share one list of
    batches: a rank whose model loads last could otherwise find every batch taken). session-limit makes the deadline arrive after each process's first batch (`jump_to_deadline`:
    the budget clock moves to it)."""
    if fault is None or (fault.name in RANK_FAULTS and processes < 2):
        return forward
    begun = Path(folder) / "fault-begun" if folder is not None else None
    if not fault.strikes(rank, processes):
        return _after_struck_rank_begins(forward, begun)
    calls = [0]
    said = f"(injected: {FAULT_ENV}={fault}, process {rank})"

    def struck(view: int, batch: list[int]) -> np.ndarray:
        due = calls[0] == 0
        calls[0] += 1
        if due and begun is not None and fault.name != "session-limit":
            begun.touch()
            if fault.name in ("rank-crash", "rank-killed"):  # mid-pass: once the others have predicted a batch
                _wait_for([begun.with_name(f"progress-{r}.npz") for r in range(processes) if r != rank])
        if due:
            print(f"fault: {FAULTS[fault.name]} {said}", flush=True)
        if fault.name == "slow-gpu":
            start = time.perf_counter()
            logits = forward(view, batch)
            time.sleep(2 * (time.perf_counter() - start))
            return logits
        if not due:
            return forward(view, batch)
        if fault.name == "rank-crash":
            raise InjectedCrash(f"CUDA out of memory. Tried to allocate 2.00 GiB {said}")
        if fault.name == "rank-killed":
            os.kill(os.getpid(), signal.SIGKILL)
        if fault.name == "nan-batch":
            return np.full_like(forward(view, batch), np.nan)
        jump_to_deadline()  # session-limit
        return forward(view, batch)

    return struck


def _after_struck_rank_begins(forward, begun: Path | None):
    """`forward` whose first call waits until the struck rank has begun its first batch."""
    first = [True]

    def waiting(view: int, batch: list[int]) -> np.ndarray:
        if first[0] and begun is not None:
            first[0] = False
            _wait_for([begun])
        return forward(view, batch)

    return waiting


def _wait_for(paths: list[Path], wait_s: float = 120.0) -> None:
    """Until every one of `paths` exists, at most `wait_s` (a process that never gets there does not hang the rest)."""
    until = time.time() + wait_s
    while not all(p.exists() for p in paths) and time.time() < until:
        time.sleep(0.05)


def training_callbacks() -> list:
    """The TrainerCallback injecting ARENA_FAULT into `arena train` (none without one). The rank faults strike the
    struck rank at the first optimizer step after the run's first checkpoint of a trained step (so the run has one
    to resume from): rank-crash raises, rank-killed is SIGKILLed, nan-batch makes that step's forward NaN, slow-gpu
    makes every step of that rank three times as long. session-limit is the rehearsal's: it kills the whole session."""
    fault = from_env()
    if fault is None or fault.name == "session-limit":
        return []
    from transformers import TrainerCallback

    class Strike(TrainerCallback):
        def __init__(self):
            self.saved, self.struck, self.mark = False, False, time.perf_counter()

        def on_save(self, args, state, control, **kwargs):
            self.saved = self.saved or state.global_step > 0  # the start's checkpoint-0 holds no trained step

        def on_step_begin(self, args, state, control, model=None, **kwargs):
            if fault.name != "nan-batch" or not self._due(args):
                return
            said = f"(injected: {FAULT_ENV}={fault}, process {args.process_index}, step {state.global_step + 1})"
            print(f"fault: {FAULTS[fault.name]} {said}", flush=True)
            handle = model.register_forward_hook(lambda module, inputs, output: (handle.remove(), output * np.nan)[1])

        def on_step_end(self, args, state, control, **kwargs):
            if fault.name == "slow-gpu" and fault.strikes(args.process_index, args.world_size):
                now = time.perf_counter()
                time.sleep(2 * (now - self.mark))
                self.mark = time.perf_counter()
                return
            if fault.name not in ("rank-crash", "rank-killed") or not self._due(args):
                return
            said = f"(injected: {FAULT_ENV}={fault}, process {args.process_index}, after step {state.global_step})"
            print(f"fault: {FAULTS[fault.name]} {said}", flush=True)
            if fault.name == "rank-killed":
                os.kill(os.getpid(), signal.SIGKILL)
            raise InjectedCrash(f"CUDA out of memory. Tried to allocate 2.00 GiB {said}")

        def _due(self, args) -> bool:
            due = self.saved and not self.struck and fault.strikes(args.process_index, args.world_size)
            self.struck = self.struck or due
            return due

    return [Strike()]
