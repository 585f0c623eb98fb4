"""The suite's pytest-xdist workers share the machine's cores (tests/conftest.py): a worker's torch, and every process
it starts, gets cores // workers threads, unless the caller set OMP_NUM_THREADS."""

import os
import subprocess
import sys

from tests.conftest import REPO

SHOW_THREADS = "import tests.conftest, os, torch; print(os.environ.get('OMP_NUM_THREADS'), torch.get_num_threads())"


def _threads(**env) -> list[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "PYTEST_XDIST_WORKER_COUNT")}
    out = subprocess.run([sys.executable, "-c", SHOW_THREADS], env={**clean, **env}, cwd=REPO, check=True,
                         capture_output=True, text=True).stdout
    return out.split()


def test_each_worker_and_its_processes_take_their_share_of_the_cores():
    share = str(max(1, len(os.sched_getaffinity(0)) // 2))
    assert _threads(PYTEST_XDIST_WORKER_COUNT="2") == [share, share]


def test_one_process_keeps_every_core_and_a_set_value_wins():
    assert _threads()[0] == "None"
    assert _threads(PYTEST_XDIST_WORKER_COUNT="2", OMP_NUM_THREADS="3")[0] == "3"
