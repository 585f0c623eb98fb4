"""A prediction that always finishes and always scores: the deadline and time-aware swap TTA
(arena.budget.inference), rows without finite logits filled in, identical responses set to a tie."""

import json
import pickle
import time
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest
import torch

from arena import config, data, predict
from arena import model as model_mod
from arena.budget import inference as budget
from arena.errors import UserError
from arena.inference import uncertainty
from arena.inference.uncertainty import SwapQueues
from arena.layout import RunFolder
from arena.task import THREE_WAY

LABEL_COLUMNS = THREE_WAY.label_columns


def test_deadline_from_epoch_iso_time_or_budget_and_clear_errors():
    now = 1_800_000_000.0
    assert budget.parse_deadline(None, None, now) is None
    assert budget.parse_deadline(str(now + 60), None, now) == now + 60
    iso = datetime.fromtimestamp(now + 3600, timezone.utc).isoformat()
    assert budget.parse_deadline(iso, None, now) == pytest.approx(now + 3600)
    assert budget.parse_deadline(None, 0.5, now) == now + 1800
    for deadline, hours, message in [("soon", None, "expected epoch seconds"), (str(now - 1), None, "already passed"),
                                     (str(now + 60), 1.0, "not both"), (None, 0.0, "positive"),
                                     ("nan", None, "not a time"), ("inf", None, "not a time"),
                                     ("-inf", None, "not a time"), (None, float("inf"), "finite")]:
        with pytest.raises(UserError, match=message):
            budget.parse_deadline(deadline, hours, now)


def fake_forward(calls):
    def forward(view, batch):
        calls.append((view, list(batch)))
        return np.zeros((len(batch), 3), dtype=np.float32)
    return forward


def one_process(batches, costs):
    """The work list of a single process: its plain batches, then its swapped ones shortest first."""
    return budget.work_order([budget.batches_of(0, batches, costs)], [budget.batches_of(1, batches, costs)], 0)


def test_swap_tta_covers_the_rows_the_measured_speed_fits_shortest_first():
    batches = [[i] for i in range(10)]  # longest first, as sorted_batches gives them
    clock = budget.Clock(extra_per_batch=1.0)  # every batch takes a (simulated) second
    calls = []
    deadline = time.time() + budget.FINISH_RESERVE_S + 14.5  # the plain pass (10 s) and 4 swapped batches fit
    plain, swapped, report = budget.run_passes(fake_forward(calls), one_process(batches, [1.0] * 10), 10, 10, True,
                                               deadline, clock, classes=3)
    assert np.isfinite(plain).all()
    assert [b for view, b in calls if view == 1] == [[9], [8], [7], [6]]  # shortest rows first
    assert np.isfinite(swapped).all(axis=1).tolist() == [False] * 6 + [True] * 4
    assert (report.plain_rows, report.swapped_rows) == (10, 4)
    assert "during the swapped pass" in report.stopped
    assert "swap TTA: 4 of 10 rows (40%)" in report.describe()


def certain_forward(calls, top_logit):
    """Plain logits whose certainty grows with `top_logit[row]` (row r's top probability rises with it)."""
    def forward(view, batch):
        calls.append((view, list(batch)))
        out = np.zeros((len(batch), 3), dtype=np.float32)
        out[:, 0] = [top_logit[i] for i in batch]
        return out
    return forward


def uncertain_queue(rank, processes, folder, dealt, rows, time_left=lambda: True, finished=lambda r: False):
    return SwapQueues(rank, processes, folder, dealt, np.ones(rows, dtype=bool), [1] * rows, 1, 1, time_left, finished)


def test_uncertain_swap_tta_covers_the_least_certain_rows_first():
    """infer.tta_order uncertain: the swapped batches are formed from the plain pass's logits, least certain
    first; the report says the cut it reached."""
    top_logit = [3.0, 0.1, 2.0, 0.0, 5.0, 0.3, 4.0, 1.0, 0.2, 6.0]
    clock = budget.Clock(extra_per_batch=1.0)
    calls = []
    deadline = time.time() + budget.FINISH_RESERVE_S + 14.5  # the plain pass (10 s) and 4 swapped batches fit
    work = budget.work_order([budget.batches_of(0, [[i] for i in range(10)], [1.0] * 10)], [[]], 0)
    plain, swapped, report = budget.run_passes(certain_forward(calls, top_logit), work, 10, 10, True, deadline, clock,
                                               classes=3, then=uncertain_queue(0, 1, None, list(range(10)), 10))
    assert [b for view, b in calls if view == 1] == [[3], [1], [8], [5]]  # the lowest top probabilities first
    assert report.swapped_rows == 4 and "during the swapped pass" in report.stopped
    both, cut = uncertainty.reached(plain, swapped)
    assert both == 4 and cut == pytest.approx(uncertainty.certainty(plain[[7]])[0])  # row 7: the next least certain
    np.testing.assert_array_equal(uncertainty.certainty(np.array([[0.0, 0.0], [np.nan, 0.0]])), [0.5, 0.0])


def test_two_processes_publish_their_uncertain_lists_and_take_each_others(tmp_path):
    """Each process orders the rows it ran in the plain order and publishes that list; the one that ends its own
    list first takes the other's unclaimed batches: every row gets both orders once, and each process's own
    swapped batches run least certain first."""
    import threading

    rows, top_logit = 16, [float((7 * i) % 16) for i in range(16)]
    shares = [list(range(0, 16, 2)), list(range(1, 16, 2))]
    plain_lists = [budget.batches_of(0, [[i] for i in share], [1.0] * len(share), owner)
                   for owner, share in enumerate(shares)]
    claims = budget.Claims(tmp_path / "claims")
    calls = [[], []]
    results = [None, None]

    def run(rank):
        slow = rank == 1  # process 1 takes 20 ms a batch: process 0 ends first and takes some of its batches
        forward = certain_forward(calls[rank], top_logit)
        timed = (lambda view, batch: time.sleep(0.02) or forward(view, batch)) if slow else forward
        results[rank] = budget.run_passes(
            timed, budget.work_order(plain_lists, [[], []], rank), rows, 8, True, None, claims=claims, rank=rank,
            classes=3, then=uncertain_queue(rank, 2, tmp_path, shares[rank], rows))

    threads = [threading.Thread(target=run, args=(r,)) for r in (1, 0)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    swapped_runs = [b[0] for rank in (0, 1) for view, b in calls[rank] if view == 1]
    assert sorted(swapped_runs) == list(range(rows))  # every row's swapped order once
    assert results[0][2].swapped_rows > 8 and results[0][2].taken > 0
    for rank in (0, 1):
        own = [b[0] for view, b in calls[rank] if view == 1 and b[0] in set(results[rank][2].ran[0])]
        assert own == sorted(own, key=lambda i: top_logit[i])  # least certain first
    assert (tmp_path / "swap-order-0.json").is_file() and (tmp_path / "swap-order-1.json").is_file()


def test_the_plain_pass_stops_at_the_deadline_and_without_one_everything_runs():
    clock = budget.Clock(extra_per_batch=1.0)
    deadline = time.time() + budget.FINISH_RESERVE_S + 5.5
    plain, swapped, report = budget.run_passes(fake_forward([]), one_process([[i] for i in range(10)], [1.0] * 10), 10,
                                               10, True, deadline, clock, classes=3)
    assert report.plain_rows == 5 and report.swapped_rows == 0 and "during the plain pass" in report.stopped
    assert np.isfinite(plain).all(axis=1).sum() == 5 and not np.isfinite(swapped).any()
    _, swapped, report = budget.run_passes(fake_forward([]), one_process([[0, 1], [2]], [2.0, 1.0]), 3, 3, True, None,
                                           budget.Clock(extra_per_batch=1e6), classes=3)
    assert report.stopped is None and np.isfinite(swapped).all()


def test_rows_without_finite_logits_take_the_other_order_else_the_prior():
    plain = np.array([[1.0, 0.0, 0.0], [np.nan, 0.0, 0.0], [np.inf, 0.0, 0.0], [0.0, 1.0, 0.0]])
    swapped = np.array([[0.0, 1.0, 0.0], [0.0, 2.0, 0.0], [np.nan, 0.0, 0.0], [np.nan] * 3])
    probs, counts = predict.probabilities(plain, swapped, "prob")
    assert counts == {"tta": 1, "plain_only": 1, "swapped_only": 1, "prior": 1}
    np.testing.assert_allclose(probs[0], predict.softmax(plain[:1])[0])  # both orders agree
    np.testing.assert_allclose(probs[1], predict.softmax(np.array([[2.0, 0.0, 0.0]]))[0])  # swapped back
    np.testing.assert_allclose(probs[3], predict.softmax(plain[3:])[0])
    np.testing.assert_allclose(probs[2], probs[[0, 1, 3]].mean(axis=0))  # the prior of the other rows
    trained, _ = predict.probabilities(plain, swapped, "prob", prior=[0.25, 0.25, 0.5])  # the run's, in head.json
    np.testing.assert_allclose(trained[2], [0.25, 0.25, 0.5])
    np.testing.assert_allclose(trained[[0, 1, 3]], probs[[0, 1, 3]])
    nothing, counts = predict.probabilities(np.full((2, 3), np.nan), None, "prob")
    np.testing.assert_allclose(nothing, 1 / 3)
    assert counts["prior"] == 2


@pytest.fixture(scope="module")
def test_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("deadline-test") / "test.csv"
    df = data.generate_sample(20, seed=5).drop(columns=LABEL_COLUMNS)
    for i in range(3):  # the same text as response_a, spaced differently
        df.at[df.index[i], "response_b"] = [f"  {' '.join(t.split())}\n" for t in df["response_a"].iloc[i]]
    data.write_csv(df, path)
    return path


def with_nan_logits(monkeypatch, bad_calls: set[int]):
    """Every model the prediction loads emits NaN logits for all rows of the forward calls numbered `bad_calls`
    (0-based, plain pass first)."""
    load = model_mod.load_trained
    calls = []

    def poison(module, args, kwargs, output):
        calls.append(len(calls))
        return output.masked_fill(torch.ones_like(output, dtype=torch.bool), float("nan")) \
            if calls[-1] in bad_calls else output

    def load_poisoned(*args, **kwargs):
        loaded = load(*args, **kwargs)
        loaded[0].register_forward_hook(poison, with_kwargs=True)
        return loaded

    monkeypatch.setattr(model_mod, "load_trained", load_poisoned)
    return calls


def test_nan_logits_still_give_a_valid_submission_with_the_counts_printed(tiny_run, test_csv, tmp_path,
                                                                           monkeypatch, capsys):
    overrides = ["infer.max_batch_size=4", "infer.tta_order=shortest"]  # 20 rows: 5 batches per order
    calls = with_nan_logits(monkeypatch, {0, 1, 5 + 3})  # plain batches 0 and 1; swapped batch 1 (shortest first)
    path = predict.predict_file(tiny_run, test_csv, tmp_path / "sub.csv", tta=True, overrides=overrides)
    assert len(calls) == 10
    sub = pd.read_csv(path, dtype={"id": str})
    assert sub["id"].tolist() == data.load(test_csv)["id"].tolist()
    assert np.isfinite(sub[LABEL_COLUMNS].to_numpy()).all()
    out = capsys.readouterr().out
    assert "swap TTA: 12 of 20 rows (60%, shortest rows first)" in out
    assert "non-finite logits in 8 row(s) of the plain order and 4 of the swapped order: 4 took the swapped " \
           "order's prediction" in out
    assert "4 row(s) have no finite prediction in either order" in out
    prior = json.loads(RunFolder(tiny_run).head.read_text())["class_prior"]  # the training rows' class frequencies
    assert abs(sum(prior) - 1) < 1e-6
    took_prior = np.isclose(sub[LABEL_COLUMNS].to_numpy(), prior, atol=1e-6).all(axis=1).sum()
    assert 1 <= took_prior <= 4  # the 4 rows without a prediction, less any identical pair set to a tie


def test_identical_responses_are_found_after_whitespace_normalisation_and_set_to_a_tie(tiny_run, test_csv, tmp_path,
                                                                                      capsys):
    df = data.load(test_csv)
    assert predict.identical_responses(df).tolist() == [True] * 3 + [False] * 17
    path = predict.predict_file(tiny_run, test_csv, tmp_path / "sub.csv", tta=False)  # 0.8 by default
    probs = pd.read_csv(path)[LABEL_COLUMNS].to_numpy()
    np.testing.assert_allclose(probs[:3], [[0.1, 0.1, 0.8]] * 3)
    assert "identical responses: 3 row(s) set to P(tie) = 0.8" in capsys.readouterr().out
    path = predict.predict_file(tiny_run, test_csv, tmp_path / "half.csv", tta=False,
                                overrides=["infer.identical_tie=0.5"])
    np.testing.assert_allclose(pd.read_csv(path)[LABEL_COLUMNS].to_numpy()[:3], [[0.25, 0.25, 0.5]] * 3)
    off = pd.read_csv(predict.predict_file(tiny_run, test_csv, tmp_path / "off.csv", tta=False,
                                           overrides=["infer.identical_tie=null"]))
    assert not np.allclose(off[LABEL_COLUMNS].to_numpy()[:3], [[0.1, 0.1, 0.8]] * 3)
    np.testing.assert_allclose(off[LABEL_COLUMNS].to_numpy()[3:], probs[3:], atol=1e-6)  # the other rows as predicted


def test_a_bad_deadline_is_refused_before_any_model_loads(tiny_run, test_csv, tmp_path, monkeypatch):
    monkeypatch.setattr(model_mod, "load_trained", lambda *a, **k: pytest.fail("a model was loaded"))
    with pytest.raises(UserError, match="--deadline yesterday"):
        predict.predict_file(tiny_run, test_csv, tmp_path / "sub.csv", deadline="yesterday")
    assert not (tmp_path / "sub.csv").exists()


def test_a_kernel_whose_deadline_has_passed_writes_prior_filled_rows_loudly(tiny_run, test_csv, tmp_path,
                                                                          monkeypatch, capsys):
    """kaggle.time_limit_hours 0.01, which package accepts, with the kernel started an hour ago: no model loads, no
    row is predicted, and the file is still a valid submission of the run's class prior."""
    monkeypatch.setattr(model_mod, "load_trained", lambda *a, **k: pytest.fail("a model was loaded"))
    out = predict.predict_file(tiny_run, test_csv, tmp_path / "sub.csv", tta=True,
                               overrides=["kaggle.time_limit_hours=0.01"], kernel_start=time.time() - 3600)
    said = capsys.readouterr()
    assert "the deadline passed" in said.err and "NO row is predicted" in said.err
    frame = data.read_columns(out, "submission")
    data.validate_submission(frame, data.load_test(test_csv)["id"])
    prior = json.loads((tiny_run / "adapter" / "head.json").read_text())["class_prior"]
    rows = frame[LABEL_COLUMNS].to_numpy(dtype=float)[3:]  # the first 3 have identical responses: a set tie
    assert np.allclose(rows, np.array(prior) / sum(prior), atol=1e-6)


# ---- the kernel: the machine check, and a rehearsal that runs out of time ----------------------------------

def kernel_module(tmp_path):
    """The rendered kernel.py, imported as a module (its main() is not run)."""
    import importlib.util

    from arena.kaggle import bundle as bundle_mod

    path = tmp_path / "kernel.py"
    path.write_text(bundle_mod.render_kernel_script(config.from_dict({})), encoding="utf-8")
    spec = importlib.util.spec_from_file_location("rendered_kernel", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_on_kaggle_the_kernel_stops_at_once_on_the_wrong_machine(tmp_path, monkeypatch, capsys):

    from arena.kaggle import bundle as bundle_mod

    kernel = kernel_module(tmp_path)
    metadata = bundle_mod.kernel_metadata(config.from_dict({}), "someone")
    assert kernel.MACHINE_SHAPE == metadata["machine_shape"]  # what the kernel expects is what the bundle asks for
    t4x2 = ["GPU 0: Tesla T4 (UUID: GPU-a)", "GPU 1: Tesla T4 (UUID: GPU-b)"]
    monkeypatch.delenv("ARENA_SKIP_GPU_CHECK", raising=False)
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Batch")
    kernel.check_machine(t4x2)
    for wrong in ([t4x2[0]], ["GPU 0: Tesla P100-PCIE-16GB (UUID: GPU-c)"], []):
        with pytest.raises(SystemExit, match="built for 2 x Tesla T4 .*Set the accelerator to GPU T4 x2"):
            kernel.check_machine(wrong)
    monkeypatch.setenv("ARENA_SKIP_GPU_CHECK", "1")  # the rehearsal
    kernel.check_machine([])
    monkeypatch.delenv("ARENA_SKIP_GPU_CHECK")
    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE")  # not on Kaggle: listed, never refused
    kernel.check_machine([])
    assert "kernel: GPUs: none" in capsys.readouterr().out


@pytest.mark.e2e
def test_a_rehearsal_whose_budget_cannot_fit_both_passes_writes_partial_tta(tiny_run, tmp_path, no_credentials,
                                                                           monkeypatch, capfd):
    """30 rows in batches of 2 (15 per order), each batch counted as 100 s: the plain pass takes 1500 s of the
    kernel's 2300 s, and the swapped pass gets what is left (about 7 of its 15 batches; start-up is real time)."""
    import re

    from arena.kaggle import bundle as bundle_mod
    from arena.kaggle import rehearsal
    from arena.layout import RunFolder

    run = tmp_path / "run"
    shutil_copy_run(tiny_run, run, {"kaggle": {"time_limit_hours": 2300 / 3600, "deadline_margin_minutes": 0,
                                               "base_model_kernel_path": "/kaggle/input/tiny-gemma2/1",
                                               "base_model_dataset": "someone/tiny-gemma2"},
                                    "infer": {"max_batch_size": 2, "tta": True, "tta_order": "uncertain"}})
    test = data.generate_sample(30, seed=11).drop(columns=LABEL_COLUMNS)
    data.write_csv(test, tmp_path / "input" / "test.csv")
    bundle = bundle_mod.package(RunFolder(run).root, out_dir=tmp_path / "bundle", wheels=False)
    monkeypatch.setenv(budget.SLOW_BATCH_ENV, "100")
    submission = rehearsal.run_local(bundle, tmp_path / "input", work_dir=tmp_path / "work")
    frame = pd.read_csv(submission, dtype={"id": str})
    assert frame["id"].tolist() == test["id"].astype(str).tolist()
    log = (tmp_path / "work" / "kernel.log").read_text()
    assert "kernel: GPUs: none" in log and "--kernel-start" in log
    assert "deadline: " in log and "kaggle.time_limit_hours 0.638889 h - kaggle.deadline_margin_minutes 0 min" in log
    tta_rows = int(re.search(r"swap TTA: (\d+) of 30 rows", log).group(1))
    assert 0 < tta_rows < 30, log
    assert "stopped by the deadline, during the swapped pass" in log
    assert "plain order: 30 of 30 rows" in log and "uncertain rows first" in log
    assert "swap TTA reached the uncertainty cut" in log
    assert "no finite prediction" not in log  # every row has its plain prediction


def shutil_copy_run(source, target, changes: dict) -> None:
    """A copy of a trained run with some config values changed."""
    import shutil

    from arena.layout import RunFolder

    shutil.copytree(source, target, ignore=shutil.ignore_patterns("config.yaml", "predictions", "kaggle-bundle-*"))
    raw = config.load_run(RunFolder(source)).to_dict()
    for section, values in changes.items():
        raw[section] |= values
    config.dump(config.from_dict(raw), target / "config.yaml")


def test_the_preflight_shows_the_projected_swap_tta_share():
    from arena.kaggle import preflight

    fits = preflight.project_runtime(500, 25000, True, 2000, 9.0)  # 1.74 h of each order against 9 h
    assert budget.projected_tta_share(fits, 20) == 1.0
    slow = preflight.project_runtime(500, 25000, True, 600, 9.0)  # 5.79 h per order: 2.63 h left for the second
    one_pass = 12.5e6 / 600 / 3600
    expected = (9 - 20 / 60 - preflight.LOAD_ALLOWANCE_S / 3600 - one_pass) / one_pass
    assert budget.projected_tta_share(slow, 20) == pytest.approx(expected, abs=1e-3)
    assert "projected swap TTA share: 45% of rows" in preflight.format_preflight(
        slow | {"method": "m", "tta_share": budget.projected_tta_share(slow, 20)})
    assert budget.projected_tta_share(preflight.project_runtime(500, 25000, True, 300, 9.0), 20) == 0.0
    assert budget.projected_tta_share(preflight.project_runtime(500, 25000, False, 2000, 9.0), 20) is None


def test_the_main_process_waits_for_shards_until_the_deadline_and_names_a_rank_that_never_wrote(tmp_path, monkeypatch,
                                                                                                capsys):
    from types import SimpleNamespace

    from arena import processes

    main = SimpleNamespace(num_processes=3, process_index=0, is_main_process=True)
    monkeypatch.setattr(processes, "state", lambda cpu: main)
    late = processes.shard_file(tmp_path, 1)  # rank 1 wrote before the deadline; rank 2 never does
    late.write_bytes(pickle.dumps("rank 1's rows"))
    start = time.time()
    parts = processes.collect_shards("rank 0's rows", tmp_path, cpu=True, deadline=time.time() + 1.5, poll_s=0.1)
    assert parts == ["rank 0's rows", "rank 1's rows", None]
    assert 1.4 < time.time() - start < 10
    assert "process 2 wrote no predictions" in capsys.readouterr().out
    worker = SimpleNamespace(num_processes=3, process_index=2, is_main_process=False)
    monkeypatch.setattr(processes, "state", lambda cpu: worker)
    assert processes.collect_shards("rank 2's rows", tmp_path, cpu=True) is None
    assert processes.shard_file(tmp_path, 2).is_file()


def test_kept_plain_logits_are_not_predicted_again(tiny_run, test_csv, tmp_path, monkeypatch, capsys):
    """The kernel's ensembles: a plain-only predict keeps its logits; the later swap-TTA predict runs only the
    swapped order and gives what one predict with TTA gives."""
    logits = tmp_path / "member.npz"
    plain = predict.predict_file(tiny_run, test_csv, tmp_path / "plain.csv", tta=False, logits_file=logits)
    assert f"logits of 20 rows kept in {logits}" in capsys.readouterr().out
    calls = with_nan_logits(monkeypatch, set())  # nothing poisoned: it counts the forward calls
    both = predict.predict_file(tiny_run, test_csv, tmp_path / "both.csv", tta=True, logits_file=logits)
    swapped_only = len(calls)
    once = predict.predict_file(tiny_run, test_csv, tmp_path / "once.csv", tta=True)
    assert swapped_only > 0 and len(calls) == 3 * swapped_only  # one pass, then both passes
    np.testing.assert_allclose(pd.read_csv(both)[LABEL_COLUMNS].to_numpy(), pd.read_csv(once)[LABEL_COLUMNS].to_numpy(),
                               atol=1e-5)
    again = predict.predict_file(tiny_run, test_csv, tmp_path / "again.csv", tta=False, logits_file=logits)
    assert len(calls) == 3 * swapped_only  # every plain logit known and no TTA: no model ran
    np.testing.assert_allclose(pd.read_csv(again)[LABEL_COLUMNS].to_numpy(),
                               pd.read_csv(plain)[LABEL_COLUMNS].to_numpy())
    other = tmp_path / "other.csv"
    data.write_csv(data.generate_sample(5, seed=9).drop(columns=LABEL_COLUMNS), other)
    with pytest.raises(UserError, match="other rows than 5 rows"):
        predict.predict_file(tiny_run, other, tmp_path / "bad.csv", tta=True, logits_file=logits)


def test_an_unwritable_logits_path_is_refused_before_any_model_loads(tiny_run, test_csv, tmp_path, monkeypatch):
    (tmp_path / "a-file").write_text("")
    monkeypatch.setattr(model_mod, "load_trained", lambda *a, **k: pytest.fail("a model was loaded"))
    with pytest.raises(UserError, match="a-file is a file, not a folder, so the logits file"):
        predict.predict_file(tiny_run, test_csv, tmp_path / "sub.csv", logits_file=tmp_path / "a-file" / "x.npz")
    assert not (tmp_path / "sub.csv").exists()
