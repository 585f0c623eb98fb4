"""A kernel that survives what a GPU session does (arena.faults injects it): a process that crashes, is killed, is
slow or gives NaN, and a time limit that arrives mid-pass. The processes share one list of batches
(budget.work_order, Claims), keep their logits as they go (inference/progress.py), and the kernel retries from them
(kernels/kernel.py predict_surviving)."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from arena import config, data, embedded, faults, hardware
from arena.budget import inference as budget
from arena.errors import UserError
from arena.inference import progress
from arena.kaggle import bundle as bundle_mod
from arena.kaggle import rehearsal
from arena.layout import RunFolder
from arena.task import THREE_WAY
from tests.launching import DDP_2, REPO, free_port

LABEL_COLUMNS = THREE_WAY.label_columns

REAL_CACHE = str(embedded.cache_dir())  # before no_credentials moves HOME: the twin is built once per machine

# ---- the pieces, in one process ---------------------------------------------------------------------------


def test_a_fault_is_named_as_arena_injects_it_and_refused_otherwise(monkeypatch):
    assert faults.parse("rank-crash", "--fault") == faults.Fault("rank-crash")
    assert faults.parse("nan-batch:0", "--fault") == faults.Fault("nan-batch", 0)
    for bad, said in [("oom", "not a fault arena injects"), ("session-limit:1", "only for rank-crash"),
                      ("slow-gpu:x", "a whole number")]:
        with pytest.raises(UserError, match=said):
            faults.parse(bad, "--fault")
    monkeypatch.setenv(faults.FAULT_ENV, "crash")
    with pytest.raises(UserError, match="ARENA_FAULT 'crash'"):
        faults.from_env()
    assert rehearsal.fault_problems("rank-crash", 1)[0].startswith("--fault rank-crash: strikes one of several")
    assert "no process 2 among 2" in rehearsal.fault_problems("rank-killed:2", 2)[0]
    assert rehearsal.fault_problems("session-limit", 1) == []
    assert faults.Fault("rank-crash").strikes(1, 2) and not faults.Fault("rank-crash").strikes(0, 2)
    assert not faults.Fault("rank-crash").strikes(0, 1)  # the kernel's one-process retry is not struck again


def two_processes(rows: int, per_batch: int = 2):
    """The batches of `rows` one-token rows dealt to 2 processes as passes.py deals them, and each one's work list."""
    from arena.processes import deal_by_tokens

    shares = deal_by_tokens([1] * rows, 2)
    dealt = [[budget.batches_of(view, [share[k:k + per_batch] for k in range(0, len(share), per_batch)],
                                [float(per_batch)] * ((len(share) + per_batch - 1) // per_batch), owner)
              for owner, share in enumerate(shares)] for view in (0, 1)]
    return [budget.work_order(dealt[0], dealt[1], rank) for rank in (0, 1)]


def test_a_process_that_fails_leaves_its_batches_to_the_other(tmp_path):
    """Process 1 fails at its first forward; process 0, running after it, takes every batch it left (the batch it
    failed on included) and every row gets both orders."""
    work = two_processes(12)
    claims = budget.Claims(tmp_path / "claims")

    def failing(view, batch):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    _, _, failed = budget.run_passes(failing, work[1], 12, 6, True, None, claims=claims, rank=1, classes=3)
    assert failed.failed.startswith("RuntimeError: CUDA error") and failed.ran == ([], [])
    assert "FAILED" in failed.describe()
    calls = []

    def forward(view, batch):
        calls.append((view, tuple(batch)))
        return np.full((len(batch), 3), float(view))

    plain, swapped, report = budget.run_passes(forward, work[0], 12, 6, True, None, claims=claims, rank=0, classes=3)
    assert np.isfinite(plain).all() and np.isfinite(swapped).all()
    assert report.taken == 6 and report.plain_rows == report.swapped_rows == 12
    assert [view for view, _ in calls] == [0] * 6 + [1] * 6  # every row's plain order before any swapped one
    assert "took 6 batch(es) of other processes" in report.describe()


def test_shared_batches_run_once_and_a_slow_process_does_fewer(tmp_path):
    """Two processes interleaved on one list: the fast one runs three batches for each of the slow one's; each
    batch runs once, and the fast one ends up taking some of the slow one's."""
    work = two_processes(24)
    claims = budget.Claims(tmp_path / "claims")
    ran = []
    order = iter([0, 0, 0, 1] * 20)

    def step(rank):  # one batch of `rank`'s list that no one has taken, run
        while work[rank]:
            batch = work[rank].pop(0)
            if claims.take(batch):
                ran.append((rank, batch.name))
                return True
        return False

    while any(work):
        step(next(order))
    assert len({name for _, name in ran}) == len(ran) == 24  # 12 batches of each order, each once
    fast = sum(rank == 0 for rank, _ in ran)
    assert fast > 12 and any(rank == 0 and name.split("-")[1] == "1" for rank, name in ran)


def test_kept_progress_is_read_for_the_same_rows_and_run_only(tiny_run, tmp_path, capsys):
    run = RunFolder(tiny_run)
    views = [([[1, 2, 3], [4, 5], [6]], None)]
    of = progress.key(views, run)
    assert of != progress.key([([[1, 2, 3], [4, 5], [7]], None)], run)
    plain = np.arange(9, dtype=np.float32).reshape(3, 3)
    swapped = np.full((3, 3), np.nan, dtype=np.float32)
    swapped[2] = 1.0
    progress.save(tmp_path / "call-a", 0, of, plain, swapped, ([0, 1], [2]))
    progress.save(tmp_path / "call-b", 1, "another run", plain, swapped, ([2], []))
    (tmp_path / "call-c").mkdir()
    (tmp_path / "call-c" / "progress-0.npz").write_bytes(b"cut short")
    kept_plain, kept_swapped, used, other = progress.kept(tmp_path, of, 3, 3, True)
    assert (used, other) == (1, 2)
    np.testing.assert_array_equal(kept_plain[:2], plain[:2])
    assert not np.isfinite(kept_plain[2]).any() and np.isfinite(kept_swapped).all(axis=1).tolist() == [0, 0, 1]
    assert progress.kept(tmp_path, of, 3, 3, True, skip=tmp_path / "call-a")[2] == 0


def test_a_one_gpu_machine_rehearses_t4x2_on_cpu_processes_and_says_so(monkeypatch, capsys):
    monkeypatch.setattr(hardware, "visible_gpus", lambda: 1)
    assert rehearsal.cpu_processes(2) == {"CUDA_VISIBLE_DEVICES": ""}
    assert "this machine has 1 GPU(s) for the kernel's 2 processes" in capsys.readouterr().out
    assert rehearsal.cpu_processes(1) == {}
    monkeypatch.setattr(hardware, "visible_gpus", lambda: 0)  # no CUDA: the profile is simulated anyway
    assert rehearsal.cpu_processes(2) == {}


# ---- arena predict in two processes, each fault ---------------------------------------------------------


@pytest.fixture(scope="module")
def rows(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("fault-rows") / "test.csv"
    data.write_csv(data.generate_sample(40, seed=6).drop(columns=LABEL_COLUMNS), path)
    return path


@pytest.fixture(scope="module")
def clean(tiny_run, rows, tmp_path_factory) -> pd.DataFrame:
    """The prediction of one process without a fault: what every retry must give back."""
    from arena import predict

    out = predict.predict_file(tiny_run, rows, tmp_path_factory.mktemp("clean") / "sub.csv", tta=True,
                               overrides=["infer.max_batch_size=4"])
    return pd.read_csv(out, dtype={"id": str})


def predict_in_two(fault: str, run, rows, out, *extra) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACCELERATE_", "LOCAL_RANK", "RANK", "WORLD_"))}
    env.update({faults.FAULT_ENV: fault, "PYTHONPATH": os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])})
    return subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(DDP_2),
                           "--main_process_port", str(free_port()), "-m", "arena.cli", "predict", "--run", str(run),
                           "--data", str(rows), "--out", str(out), "--tta", "--set", "model.device=cpu", "--set",
                           "infer.max_batch_size=4", *extra],
                          env=env, capture_output=True, text=True, timeout=300)


def same_predictions(path, clean: pd.DataFrame) -> None:
    frame = pd.read_csv(path, dtype={"id": str})
    assert frame["id"].tolist() == clean["id"].tolist()
    np.testing.assert_allclose(frame[LABEL_COLUMNS].to_numpy(), clean[LABEL_COLUMNS].to_numpy(), atol=1e-5)


def test_a_crashed_process_leaves_its_rows_to_the_survivor(tiny_run, rows, clean, tmp_path):
    proc = predict_in_two("rank-crash", tiny_run, rows, tmp_path / "sub.csv")
    assert proc.returncode == 0, proc.stderr[-3000:]
    said = proc.stdout + proc.stderr
    assert "FAILED: InjectedCrash: CUDA out of memory" in said and "(process 0)" in said
    assert "1 process(es) failed during the passes" in said and "no finite prediction" not in said
    same_predictions(tmp_path / "sub.csv", clean)  # the survivor predicted every row, in both orders


def test_a_killed_process_stops_the_launch_and_one_process_finishes_from_the_kept_logits(tiny_run, rows, clean,
                                                                                         tmp_path):
    kept = tmp_path / "progress"
    proc = predict_in_two("rank-killed", tiny_run, rows, tmp_path / "sub.csv", "--progress", str(kept))
    assert proc.returncode != 0 and not (tmp_path / "sub.csv").exists()
    assert "SIGKILL" in proc.stdout + proc.stderr
    assert list(kept.glob("*/progress-0.npz"))  # the survivor kept what it predicted before the launcher stopped it
    from arena.cli import main

    fill = tmp_path / "fill.csv"
    assert main(["predict", "--run", str(tiny_run), "--data", str(rows), "--out", str(fill), "--tta",
                 "--progress", str(tmp_path / "nothing-kept"), "--fill-only"]) == 2  # a prior-only file scores nothing
    assert not fill.exists() and not (tmp_path / "nothing-kept").exists()
    assert main(["predict", "--run", str(tiny_run), "--data", str(rows), "--out", str(fill), "--tta",
                 "--progress", str(kept), "--fill-only"]) == 0
    data.validate_submission(data.read_columns(fill, "submission"), clean["id"])
    assert main(["predict", "--run", str(tiny_run), "--data", str(rows), "--out", str(tmp_path / "retry.csv"),
                 "--tta", "--set", "infer.max_batch_size=4", "--progress", str(kept)]) == 0
    same_predictions(tmp_path / "retry.csv", clean)


def test_a_nan_batch_and_a_slow_process_still_give_every_row(tiny_run, rows, clean, tmp_path):
    proc = predict_in_two("nan-batch", tiny_run, rows, tmp_path / "nan.csv")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "non-finite logits in 4 row(s) of the plain order" in proc.stdout
    assert "no finite prediction" not in proc.stdout  # those rows took their swapped order's prediction
    data.validate_submission(data.read_columns(tmp_path / "nan.csv", "submission"), clean["id"])
    proc = predict_in_two("slow-gpu", tiny_run, rows, tmp_path / "slow.csv")
    assert proc.returncode == 0, proc.stderr[-3000:]
    same_predictions(tmp_path / "slow.csv", clean)


def test_two_processes_spend_the_time_left_on_their_least_certain_rows(tiny_run, rows, clean, tmp_path,
                                                                      monkeypatch):
    """infer.tta_order uncertain in two processes whose batches each count 400 s against a 1 h budget: they run
    the plain batches, each that ends its plain pass publishes its rows least certain first, and they swap them until
    the deadline; the log says the cut reached, and every row whose plain top probability is below it got both
    orders."""
    monkeypatch.setenv(budget.SLOW_BATCH_ENV, "400")
    kept = tmp_path / "progress"
    proc = predict_in_two("", tiny_run, rows, tmp_path / "sub.csv", "--budget-hours", "1", "--progress", str(kept),
                          "--set", "infer.tta_order=uncertain")
    assert proc.returncode == 0, proc.stderr[-3000:]
    said = proc.stdout
    swapped = [int(n) for n in re.findall(r"budget \(process \d\): plain order: \d+ .*?swap TTA: (\d+)", said)]
    # Which process runs which batch depends on how soon each starts: one that starts first takes the other's plain
    # batches and may meet the deadline before its swapped pass (seen under load). Together they ran every plain
    # batch and swapped the least certain rows until the deadline.
    assert len(swapped) == 2 and sum(swapped) > 0, said[-3000:]
    assert "plain order: 40 of 40 rows; swap TTA: " in said and "uncertain rows first); stopped by the deadline" in said
    cut = float(re.search(r"swap TTA reached the uncertainty cut (\S+):", said).group(1))
    published = {p.name for p in next(kept.iterdir()).glob("swap-order-*.json")}  # by each that ended its plain pass
    assert published and published <= {"swap-order-0.json", "swap-order-1.json"}
    data.validate_submission(data.read_columns(tmp_path / "sub.csv", "submission"), clean["id"])
    assert 0 < cut < 1


def test_a_time_limit_arriving_mid_pass_stops_both_processes_with_a_valid_file(tiny_run, rows, clean, tmp_path,
                                                                              monkeypatch, capsys):
    proc = predict_in_two("session-limit", tiny_run, rows, tmp_path / "sub.csv", "--budget-hours", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("stopped: the deadline, during the plain pass") == 2
    assert "have no finite prediction in either order" in proc.stdout  # the rows no process reached: the prior
    data.validate_submission(data.read_columns(tmp_path / "sub.csv", "submission"), clean["id"])
    from arena.cli import main

    monkeypatch.setenv(faults.FAULT_ENV, "session-limit")  # no deadline to bring forward: refused, nothing written
    assert main(["predict", "--run", str(tiny_run), "--data", str(rows), "--out", str(tmp_path / "x.csv")]) == 2
    assert "ARENA_FAULT=session-limit: the prediction has no deadline" in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()


# ---- the kernel, rehearsed in the Kaggle twin with each fault ---------------------------------------------


@pytest.fixture(scope="module")
def t4x2_bundle(tiny_run, rows, tmp_path_factory):
    """The tiny run packaged with its real wheelhouse (the kernel installs it in the twin), and its input folder."""
    root = tmp_path_factory.mktemp("fault-bundle")
    input_dir = root / "input"
    input_dir.mkdir()
    shutil.copy(rows, input_dir / "test.csv")
    run = root / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("config.yaml", "predictions", "kaggle-bundle-*"))
    raw = config.load_run(RunFolder(tiny_run)).to_dict()
    raw["kaggle"]["base_model_source"] = "someone/tiny-gemma2/transformers/default/1"  # mounted from model.path
    raw["infer"]["max_batch_size"] = 4  # 10 batches in each order
    config.dump(config.from_dict(raw), run / "config.yaml")
    return bundle_mod.package(run, out_dir=root / "bundle", test_csv=input_dir / "test.csv"), input_dir


def test_the_kernel_retries_in_one_process_then_fills_from_the_kept_logits(tmp_path, monkeypatch, capsys):
    from arena.kaggle import kernel_predict

    launch = ["python", "-m", "accelerate.commands.launch", "--num_processes", "2", "-m", "arena.cli"]
    out = tmp_path / "submission.csv"
    for answers, expected in [([True], 1), ([False, True], 2), ([False, False, True], 3), ([False] * 3, 3)]:
        ran = []
        monkeypatch.setattr(kernel_predict, "_run",
                            lambda cmd, ran=ran, answers=answers: ran.append(cmd) or answers[len(ran) - 1])
        assert kernel_predict.predict_surviving(launch, ["predict", "--out", out], out) == answers[-1]
        assert len(ran) == expected
        assert all(cmd[1:3] == ["-m", "arena.cli"] for cmd in ran[1:])  # the retries: one process
        assert ran[2:] == [] or ran[2][-1] == "--fill-only"
    said = capsys.readouterr().out
    assert "the launcher stopped the others: one process predicts" in said and "written from the logits kept" in said
    ran = []  # one process from the start: no retry in one process, the kept logits next
    monkeypatch.setattr(kernel_predict, "_run", lambda cmd: ran.append(cmd) or False)
    kernel_predict.predict_surviving([sys.executable, "-m", "arena.cli"], ["predict"], out)
    assert [cmd[-1] for cmd in ran] == ["predict", "--fill-only"]


@pytest.mark.e2e
def test_the_t4x2_kernel_writes_a_valid_submission_when_a_process_is_killed(t4x2_bundle, clean, tmp_path,
                                                                            no_credentials, monkeypatch):
    """The kernel's own launch in the twin: the launcher stops the survivor too, and the kernel predicts the rest in
    one process from the kept logits. (The other faults act inside `arena predict` alone: the tests above run them
    through the same two-process launch.)"""
    fault = "rank-killed"
    bundle, input_dir = t4x2_bundle
    monkeypatch.setenv("ARENA_CACHE", REAL_CACHE)
    monkeypatch.setenv(hardware.PROFILE_ENV, "t4x2")
    work = tmp_path / "work"
    submission = rehearsal.run_local(bundle, input_dir, work_dir=work, processes=2, fault=fault)
    data.validate_submission(data.read_columns(submission, "submission"), clean["id"])
    log = (work / "kernel.log").read_text()
    assert f"(injected: ARENA_FAULT={fault}" in log and "--num_processes 2" in log
    assert "a prediction process failed and the launcher stopped the others" in log, log[-3000:]
    assert "kept by earlier calls" in log and "--fill-only" not in log
    assert "no finite prediction in either order" not in log  # the killed GPU's rows were predicted by the retry
    assert not (work / "kaggle" / "working" / ".arena-progress").exists()  # removed once the file was written


# ---- arena train, struck ------------------------------------------------------------------------------


def test_training_is_struck_on_its_rank_after_its_first_checkpoint(monkeypatch):
    """faults.training_callbacks: nothing before the run's first save, nothing on another rank; then a crash, a
    kill, one NaN forward, or every step three times as long."""
    import signal
    import time
    from types import SimpleNamespace

    import torch

    def struck(name):
        monkeypatch.setenv(faults.FAULT_ENV, name)
        (strike,) = faults.training_callbacks()
        return strike

    rank0, rank1 = SimpleNamespace(process_index=0, world_size=2), SimpleNamespace(process_index=1, world_size=2)
    state = SimpleNamespace(global_step=3)
    crash = struck("rank-crash")
    crash.on_step_end(rank1, state, None)  # no checkpoint yet: nothing to resume from, not struck
    crash.on_save(rank1, state, None)
    crash.on_step_end(rank0, state, None)
    with pytest.raises(faults.InjectedCrash, match="CUDA out of memory"):
        crash.on_step_end(rank1, state, None)
    crash.on_step_end(rank1, state, None)  # once
    killed, signals = struck("rank-killed"), []
    monkeypatch.setattr(os, "kill", lambda pid, sig: signals.append(sig))
    killed.on_save(rank1, state, None)
    with pytest.raises(faults.InjectedCrash):  # the kill is recorded, not sent: the process goes on to the crash
        killed.on_step_end(rank1, state, None)
    assert signals == [signal.SIGKILL]
    nan, model = struck("nan-batch"), torch.nn.Linear(2, 3)
    nan.on_save(rank1, state, None)
    nan.on_step_begin(rank1, state, None, model=model)
    assert torch.isnan(model(torch.ones(1, 2))).all() and torch.isfinite(model(torch.ones(1, 2))).all()
    slow, naps = struck("slow-gpu"), []
    monkeypatch.setattr(time, "sleep", naps.append)
    slow.on_step_end(rank0, state, None)
    slow.on_step_end(rank1, state, None)
    assert len(naps) == 1 and naps[0] >= 0
    monkeypatch.setenv(faults.FAULT_ENV, "session-limit")  # the rehearsal's: it kills the session itself
    assert faults.training_callbacks() == []
