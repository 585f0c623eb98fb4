"""The processes of one command under `accelerate launch` (or plain python: one process): decisions taken once by
the main process and shared with every rank, work dealt by tokens, and results gathered back in input order
(through a collective, or through shard files when the ranks may finish far apart); and the child processes arena
starts, none of which outlives it (stop_tree) nor leaves its temporary files behind (own_tmpdir)."""

from __future__ import annotations

import heapq
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import timedelta
from pathlib import Path
from typing import NoReturn, TypeVar

from arena.errors import UserError
from arena.writes import atomic_file

T = TypeVar("T")


# How long a collective waits for the slowest process. NCCL's default is 10 minutes and accelerate 1.15's
# PartialState passes none: processes that meet after long solo work (rank 0 writing a checkpoint, a longer shard)
# would be killed. The state is created once, early (train() does it before the model loads), with this timeout;
# a later PartialState(...) reuses it, whatever it is given.
COLLECTIVE_TIMEOUT = timedelta(hours=2)


def state(cpu: bool):
    """accelerate's process state, its process group waiting COLLECTIVE_TIMEOUT; `cpu`: gloo processes on CPU even
    where GPUs exist (model.device: cpu)."""
    from accelerate import PartialState

    return PartialState(cpu=cpu, timeout=COLLECTIVE_TIMEOUT)


def decided_by_main(decide: Callable[[], T], cpu: bool) -> T:
    """`decide()` run by the main process only (it may write: a run folder, a renamed checkpoint); every other
    process gets its result, or raises the same UserError."""
    from accelerate.utils import broadcast_object_list

    processes = state(cpu)
    holder = [None]
    if processes.is_main_process:
        try:
            holder = [("value", decide())]
        except UserError as exc:  # every process stops with the main one's message, none waits forever
            holder = [("error", exc.problems)]
    if processes.num_processes > 1:
        broadcast_object_list(holder)
    kind, value = holder[0]
    if kind == "error":
        raise UserError(problems=value)
    return value


def deal_by_tokens(lengths: list[int], n: int) -> list[list[int]]:
    """Row indices for `n` processes with token counts as equal as the rows allow: the longest rows first, each
    to the process with the fewest tokens so far (ties to the lower rank). Each shard keeps its rows sorted."""
    shards: list[list[int]] = [[] for _ in range(n)]
    loads = [(0, rank) for rank in range(n)]
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        tokens, rank = heapq.heappop(loads)
        shards[rank].append(i)
        heapq.heappush(loads, (tokens + lengths[i], rank))
    return [sorted(shard) for shard in shards]


def gather_to_main(part: T, cpu: bool) -> list[T] | None:
    """Every process's `part`, in rank order, on the main process (None on the others)."""
    from accelerate.utils import gather_object

    processes = state(cpu)
    if processes.num_processes == 1:
        return [part]
    parts = gather_object([part])
    return parts if processes.is_main_process else None


def shard_file(folder: str | Path, rank: int) -> Path:
    return Path(folder) / f"shard-{rank}.pkl"


def collect_shards(part: T, folder: str | Path, cpu: bool, deadline: float | None = None,
                   poll_s: float = 1.0) -> list[T | None] | None:
    """Every process's `part`, in rank order, on the main process (None on the others), with no collective: each
    process writes its part to its own file in `folder` (atomic) and the main process waits for the files, at most
    until `deadline` (epoch seconds; None: no bound). A rank whose file is not there by then is named and its part
    is None. Ranks may finish hours apart: nothing times out as NCCL's 10-minute collectives do."""
    processes = state(cpu)
    if processes.num_processes == 1:
        return [part]
    with atomic_file(shard_file(folder, processes.process_index)) as tmp:
        tmp.write_bytes(pickle.dumps(part, protocol=pickle.HIGHEST_PROTOCOL))
    if not processes.is_main_process:
        return None
    ranks = range(processes.num_processes)
    waited = time.time()
    while not all(shard_file(folder, r).is_file() for r in ranks):
        if deadline is not None and time.time() >= deadline:
            break
        time.sleep(poll_s)
    parts = []
    for rank in ranks:
        path = shard_file(folder, rank)
        if path.is_file():
            parts.append(pickle.loads(path.read_bytes()))
        else:
            print(f"WARNING: process {rank} wrote no predictions to {path} by the deadline (it died or is stuck); "
                  f"its rows are filled in as rows without a prediction", flush=True)
            parts.append(None)
    waited = time.time() - waited
    if waited > 60:
        print(f"waited {waited:.0f} s for the other processes' predictions", flush=True)
    return parts


def wait_for_main(written: str | Path, cpu: bool, poll_s: float = 1.0) -> None:
    """Every process but the main one waits until the main one has written `written`, with no collective: the
    main process may work alone for hours first (a DDP run's evaluation), past any collective's timeout. If the
    main process dies instead, the launcher ends the others."""
    if state(cpu).is_main_process:
        return
    while not Path(written).exists():
        time.sleep(poll_s)


def finish() -> bool:
    """Close this process's process group, if one was opened; True when it joined several processes. A gloo group
    left to the interpreter's exit can abort the process ("terminate called without an active exception") after
    its work is done."""
    dist = sys.modules.get("torch.distributed")  # never imported: never opened, and no torch import to pay for
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return False
    several = dist.get_world_size() > 1
    dist.destroy_process_group()
    return several


def leave(code: int) -> NoReturn:
    """End a process whose work is done and whose group `finish` closed, with `code`, without the interpreter's
    finalization. Once FSDP has sharded over a gloo group, torch keeps that group's worker threads past
    destroy_process_group; the interpreter tears them down at exit, and one still holding the last collective's
    tensors then takes the GIL from a finalizing interpreter and aborts the process (SIGABRT; pytorch/pytorch#179291).
    The launcher reports a rank that did all its work as failed, and ends the others. Output is flushed first."""
    import logging

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


# ---- child processes: none outlives arena ------------------------------------------------------------------

STOP_GRACE_S = 10.0  # after SIGTERM, how long a child tree has to stop (a launcher stops its ranks) before SIGKILL


def _alive(proc) -> bool:
    import psutil

    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _tree(pid: int) -> list:
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def stop_tree(proc: subprocess.Popen, grace_s: float = STOP_GRACE_S) -> None:
    """Stop `proc` (started with start_new_session) and every process under it, those that left its process group
    too: torch's elastic launcher (accelerate launch) starts each rank in a session of its own, so a signal to the
    group alone would leave the ranks running on after arena. SIGTERM first (a launcher stops its ranks, pip its
    download), then SIGKILL to whatever is left after `grace_s`; `grace_s=0`: SIGKILL at once (a session's time
    limit)."""
    tree = _tree(proc.pid)  # before any signal: a dead parent's children are no longer found under it
    for sig in ([signal.SIGTERM] if grace_s > 0 else []) + [signal.SIGKILL]:
        if sig == signal.SIGKILL:
            tree += [c for p in tree if _alive(p) for c in _tree(p.pid) if c not in tree]
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        for child in tree:
            with suppress(Exception):  # gone meanwhile
                child.send_signal(sig)
        deadline = time.time() + grace_s
        while sig == signal.SIGTERM and time.time() < deadline and (proc.poll() is None or any(map(_alive, tree))):
            time.sleep(0.05)
    proc.wait()


@contextmanager
def own_tmpdir(env: dict | None = None) -> Iterator[dict]:
    """The environment (`env`, else this process's) for a child whose temporary files must not outlive arena: its
    TMPDIR a fresh folder, removed when the block ends however it ends. pip killed by an interrupt (subprocess.run
    kills it) would leave its partial downloads and unpacked wheels in the shared TMPDIR."""
    with tempfile.TemporaryDirectory(prefix="arena-child-", ignore_cleanup_errors=True) as tmp:
        yield {**(os.environ if env is None else env), "TMPDIR": tmp}
