"""`arena kernel run-local`: the room its --work needs, processes that can meet and a cache the twin can be built in,
checked before any work; where its input test file may be; where it mounts the configured competition; a two-way
(WSDM Cup) bundle rehearsed with its test.parquet; a stopped rehearsal leaves no process of its kernel running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from arena import data, embedded
from arena.errors import UserError
from arena.kaggle import rehearsal, twin
from arena.kaggle.mounts import LAYOUTS, bundle_mounts
from arena.layout import Bundle, RunFolder
from arena.task import THREE_WAY
from tests.files import touch
from tests.kaggle_bundles import fake_bundle, kaggle_cfg

LABEL_COLUMNS = THREE_WAY.label_columns

REAL_CACHE = str(embedded.cache_dir())  # before a fixture moves HOME: the twin is built once per machine


def test_a_work_folder_on_a_disk_without_room_is_refused_before_any_work(tiny_run, tmp_path, small_disk,
                                                                        no_credentials):
    bundle = fake_bundle(tmp_path, kaggle_cfg(), adapter=RunFolder(tiny_run).adapter)
    (bundle / "wheels-dataset" / "big-1.0-py3-none-any.whl").write_bytes(b"\0" * (8 * 2**20))  # 3 x 8 + 64 > 72
    test_csv = tmp_path / "input" / "test.csv"
    data.write_csv(data.generate_sample(6, seed=1).drop(columns=LABEL_COLUMNS), test_csv)
    with pytest.raises(UserError, match=r"--work .*work: \d+ MiB free on its disk; the rehearsal needs about 88 MiB"):
        rehearsal.run_local(bundle, test_csv.parent, work_dir=small_disk / "work")
    assert list(small_disk.iterdir()) == []


@pytest.mark.parametrize("competition, name", [("llm-classification-finetuning", "test.csv"),
                                               ("wsdm-cup-multilingual-chatbot-arena", "test.parquet"),
                                               ("wsdm-cup-multilingual-chatbot-arena", "train.parquet")])
def test_rehearsal_input_may_be_the_file_its_folder_or_a_kaggle_input_root(work, competition, name):
    found = touch(work / "input" / competition / name)
    for given in (work / "input", found.parent, found):
        assert rehearsal.find_competition_file(given, competition, name) == found
    assert rehearsal.find_competition_file(work, competition, name) is None
    other = touch(work / "other" / "test.csv")  # the LMSYS data's file is not the WSDM Cup's test.parquet
    assert rehearsal.find_competition_file(other, competition, name) is (other if name == "test.csv" else None)


@pytest.mark.parametrize("competition", [None, "lmsys-chatbot-arena", "wsdm-cup-multilingual-chatbot-arena"])
def test_the_rehearsal_mounts_the_configured_competition_in_either_layout(tmp_path, competition):
    cfg = kaggle_cfg(**({"competition": competition} if competition else {}))
    slug = competition or "llm-classification-finetuning"  # the default
    bundle = Bundle(fake_bundle(tmp_path, cfg, user="alice"))
    mounts = {layout: bundle_mounts(bundle, cfg, [], layout) for layout in LAYOUTS}
    assert mounts["current"] == {f"competitions/{slug}": None, "datasets/alice/arena-adapter": bundle.adapter_dataset,
                                 "datasets/alice/arena-wheels": bundle.wheels}
    assert mounts["old"] == {slug: None, "arena-adapter": bundle.adapter_dataset, "arena-wheels": bundle.wheels}


@pytest.mark.e2e
def test_a_wsdm_cup_bundle_rehearses_with_its_test_parquet(tiny_model_dir, tmp_path, no_credentials, monkeypatch):
    """The WSDM Cup's task in the Kaggle twin (the bundle's real wheelhouse on the image's versions): the rehearsal
    mounts test.parquet where Kaggle mounts the competition, the kernel predicts it, and its `id,winner` submission
    is checked as Kaggle takes it."""
    import pandas as pd

    from arena import train
    from arena.kaggle import bundle as bundle_mod
    from arena.task import TWO_WAY
    from tests.tiny import tiny_cfg

    wsdm = "wsdm-cup-multilingual-chatbot-arena"
    data.write_csv(data.generate_sample(40, seed=2, task=TWO_WAY), tmp_path / "train.parquet")
    cfg = tiny_cfg(tiny_model_dir, name="wsdm", data={"train": str(tmp_path / "train.parquet")},
                   train={"max_steps": 1, "eval_steps": 1, "runs_dir": str(tmp_path / "runs")},
                   prompt={"max_length": 96, "min_tokens": 8}, infer={"max_length": 96},
                   kaggle={"competition": wsdm, "base_model_source": "someone/tiny-gemma2/transformers/default/1"})
    run = train.train(cfg)
    test = data.generate_sample(10, seed=3, task=TWO_WAY).drop(columns=TWO_WAY.label_columns)
    data.write_csv(test, tmp_path / "input" / "test.parquet")
    monkeypatch.setenv("ARENA_CACHE", REAL_CACHE)  # the twin is built once per machine (make test-caches)
    bundle = bundle_mod.package(run, out_dir=tmp_path / "bundle", test_csv=tmp_path / "input" / "test.parquet")
    work = tmp_path / "work"
    submission = rehearsal.run_local(bundle, tmp_path / "input", work_dir=work)
    mounted = work / "kaggle" / "input" / "competitions" / wsdm / "test.parquet"
    log = (work / "kernel.log").read_text()
    assert mounted.is_symlink() and f"--data {mounted}" in log
    assert "transformers==5.23.0" in log  # installed from the bundle's wheelhouse into the twin's venv
    frame = pd.read_csv(submission, dtype=str)
    assert frame.columns.tolist() == ["id", "winner"] and frame["id"].tolist() == test["id"].astype(str).tolist()
    assert set(frame["winner"]) <= {"model_a", "model_b"}


_KERNEL_WITH_A_RANK = """
import subprocess, sys, time
from pathlib import Path
# a rank as torch's elastic launcher starts one: in a session of its own, out of the kernel's process group
rank = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True)
Path(sys.argv[0]).with_name("rank.pid").write_text(str(rank.pid))
time.sleep(300)
"""

_REHEARSAL = """
import sys
from pathlib import Path
from arena import cli
from arena.kaggle import rehearsal, twin

def run_local(args):
    work = Path(args.work)
    (work / "kaggle" / "working").mkdir(parents=True)
    rehearsal._run_kernel(Path(args.bundle), work / "kaggle", work, Path(args.input))

cli.cmd_kernel_run_local = run_local
sys.exit(cli.main(["kernel", "run-local", sys.argv[1], "--input", sys.argv[2], "--work", sys.argv[3]]))
"""


def test_a_terminated_rehearsal_leaves_no_process_of_its_kernel_running(tmp_path):
    """SIGTERM to `arena kernel run-local`: arena exits 143 and nothing its kernel started runs on, a rank that
    torch's launcher put in a session of its own included (it went on predicting after arena had exited)."""
    script, wheels = tmp_path / "kernel.py", tmp_path / "wheels"  # wheels: the arena wheel only, the quick mirror
    script.write_text(_KERNEL_WITH_A_RANK)
    touch(wheels / "arena-0.1.0-py3-none-any.whl")
    proc = subprocess.Popen([sys.executable, "-c", _REHEARSAL, str(script), str(wheels), str(tmp_path / "work")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pid_file = tmp_path / "rank.pid"
    deadline = time.time() + 120
    while not pid_file.is_file() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    rank = psutil.Process(int(pid_file.read_text()))
    try:
        proc.send_signal(signal.SIGTERM)
        err = proc.communicate(timeout=60)[1]
        assert proc.returncode == 143, err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1
        assert not rank.is_running() or rank.status() == psutil.STATUS_ZOMBIE
    finally:
        if rank.is_running():
            rank.kill()


def _rehearsal_inputs(tmp_path, tiny_run) -> tuple:
    """A bundle with a wheelhouse (so it runs in the Kaggle twin) and a test file, and an empty TMPDIR to watch."""
    bundle = fake_bundle(tmp_path, kaggle_cfg(), adapter=RunFolder(tiny_run).adapter)
    test_csv = tmp_path / "input" / "test.csv"
    data.write_csv(data.generate_sample(6, seed=1).drop(columns=LABEL_COLUMNS), test_csv)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    return bundle, test_csv.parent, scratch


def test_a_rehearsal_whose_processes_cannot_meet_is_refused_before_any_work(tiny_run, tmp_path, no_credentials,
                                                                           monkeypatch):
    """Loopback down (`unshare -n`): torch.distributed's store retried for 900 s and printed pages of C++ frames.
    Here the rendezvous address is one this machine does not have, as unreachable, without root."""
    bundle, input_dir, scratch = _rehearsal_inputs(tmp_path, tiny_run)
    monkeypatch.setattr("tempfile.tempdir", str(scratch))
    monkeypatch.setattr(rehearsal, "RENDEZVOUS_HOST", "192.0.2.1")  # TEST-NET-1: never this machine's
    with pytest.raises(UserError) as refused:
        rehearsal.run_local(bundle, input_dir, processes=2)
    (problem,) = refused.value.problems
    assert "the kernel's 2 processes meet over TCP at 192.0.2.1" in problem and "cannot connect to itself" in problem
    assert list(scratch.iterdir()) == []


def test_a_t4x2_rehearsal_with_loopback_down_exits_2_in_one_line(tiny_run, tmp_path):
    if subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode != 0:
        pytest.skip("unshare -n needs root here")
    bundle, input_dir, scratch = _rehearsal_inputs(tmp_path, tiny_run)
    proc = subprocess.run(["unshare", "-n", sys.executable, "-m", "arena.cli", "kernel", "run-local", str(bundle),
                           "--input", str(input_dir), "--hardware", "t4x2"], capture_output=True, text=True,
                          env={**os.environ, "TMPDIR": str(scratch)}, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [
        "error: the kernel's 2 processes meet over TCP at 127.0.0.1 (torch.distributed's rendezvous), and this machine "
        "cannot connect to itself there (Network is unreachable): bring the loopback interface up, or rehearse one "
        "process (--processes 1)"]
    assert list(scratch.iterdir()) == []


def test_a_twin_that_cannot_be_built_in_a_read_only_home_is_named_before_any_work(tiny_run, tmp_path, read_only,
                                                                                 monkeypatch):
    """HOME read-only and ARENA_CACHE unset: the twin's build ended in an OSError traceback and left the rehearsal's
    folder in TMPDIR."""
    bundle, input_dir, scratch = _rehearsal_inputs(tmp_path, tiny_run)
    monkeypatch.setenv("HOME", str(read_only))
    monkeypatch.delenv("ARENA_CACHE", raising=False)
    monkeypatch.setattr("tempfile.tempdir", str(scratch))
    with pytest.raises(UserError) as refused:
        rehearsal.run_local(bundle, input_dir)
    assert refused.value.problems == [
        f"the Kaggle twin is built once in the cache folder ({twin.image_dir()}), which cannot be written here: set "
        f"ARENA_CACHE to a folder that can (unset, the cache is ~/.cache/arena)"]
    assert list(scratch.iterdir()) == [] and list(read_only.iterdir()) == []
