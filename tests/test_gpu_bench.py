"""benchmarks/gpu.py: its CPU mode (`--device cpu --tiny`) runs every unit and renders the report, so the GPU run is
known to work before a GPU is lent; what travels to the GPU machine fits in one carry; the GPU call fits twice in
a session's device time; the time model projects the GPU run within its limit with a margin, and the gate skips a
unit that would end past it; memory is counted as a T4 holds it (context included); results survive a unit that
fails half-way."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def tracked_bytes() -> int:
    """Bytes of the repository's tracked files as they are in the working tree (what travels besides the carry)."""
    names = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True, check=True).stdout
    paths = [REPO / name for name in names.decode().split("\0") if name]
    return sum(os.stat(p).st_size for p in paths if p.is_file())


def test_the_wheels_and_the_tracked_files_fit_in_one_carry():
    from benchmarks import gpu

    command = gpu.download_command()
    # the table holds exactly the wheels the command downloads, each file named for its package and version
    assert command.split(f"-d {gpu.WHEEL_DIR} ")[1].split() == list(gpu.WHEELS)
    for requirement, (filename, size) in gpu.WHEELS.items():
        name, version = requirement.split("==")
        assert filename.startswith(f"{name}-{version}-") and filename.endswith(".whl") and size > 0
        platform = filename.removesuffix(".whl").rsplit("-", 1)[1]
        # pip matches a manylinux tag exactly: each platform wheel's own tag is among those the command lists
        assert platform == "any" or platform in gpu.PLATFORMS, (filename, gpu.PLATFORMS)
        assert f"--platform {platform}" in command or platform == "any"
    wheels = sum(size for _, size in gpu.WHEELS.values())
    total = wheels + tracked_bytes()
    assert total < gpu.CARRY_LIMIT_BYTES, (f"carry {total / 2**20:.1f} MiB (wheels {wheels / 2**20:.1f} MiB) "
                                           f"over {gpu.CARRY_LIMIT_BYTES / 2**20:.0f} MiB")
    # neither what the machine has nor what the measurement never imports travels
    assert not {"accelerate", "kaggle", "scikit-learn"} & {r.split("==")[0] for r in gpu.WHEELS}


def test_the_documented_commands_are_the_constants_and_fit_twice_in_a_session():
    from benchmarks import gpu

    doc = " ".join(gpu.__doc__.split())
    assert gpu.download_command() in doc
    args = gpu.run_arguments()
    assert (f'run(carry={json.dumps(args["carry"])}, timeout_s={args["timeout_s"]}, '
            f'command="{args["command"]}")') in doc
    assert args["carry"] == [gpu.WHEEL_DIR] and f"{gpu.WHEEL_DIR}/*.whl" in args["command"]
    inner = int(re.search(r"timeout (\d+) python3 -m benchmarks.gpu", args["command"]).group(1))
    assert inner <= 300 and inner < args["timeout_s"]
    start_up = 120  # a machine's start, out of the session's device time
    assert 2 * args["timeout_s"] + start_up <= 15 * 60 and len(args["command"]) <= 2000


def test_a_figure_at_two_layer_counts_extends_to_42_along_its_line():
    from benchmarks.gpu_steps import extrapolate

    fit = extrapolate({4: 14.0, 2: 10.0})
    assert fit == {"per_layer": 2.0, "one_off": 6.0, "at_42": 90.0}
    assert extrapolate({2: None, 4: 3.0}) is None  # no memory figure on a CPU


def test_a_unit_that_fails_half_way_keeps_what_it_measured(tmp_path):
    from benchmarks import gpu, gpu_time

    results = gpu.Results(tmp_path / "gpu.md", {"command": "test", "started": "now", "tiny": True})
    seen = []

    def unit(out):
        out.setdefault("lengths", {})["96"] = {"by_layers": {}}
        results.save()
        seen.append(json.loads(results.json.read_text())["steps"]["training"])
        raise RuntimeError("out of memory")

    record = results.unit(gpu_time.Unit("training", "96 tokens, 1 layers", "trainer"), 3.0, unit)
    saved = json.loads(results.json.read_text())["steps"]["training"]
    assert seen == [{"lengths": {"96": {"by_layers": {}}}}]  # on disk before the failure
    assert saved["lengths"] == {"96": {"by_layers": {}}}
    assert saved["error"] == "96 tokens, 1 layers: RuntimeError: out of memory"
    assert record["error"] == "RuntimeError: out of memory" and record["projected_s"] == 3.0
    assert "failed: `96 tokens, 1 layers: RuntimeError: out of memory`" in results.out.read_text()


def test_the_gpu_run_is_projected_within_its_limit_with_a_margin_the_most_valuable_units_first():
    from benchmarks import gpu, gpu_steps, gpu_time

    size = gpu_steps.sizes(tiny=False)
    projection = gpu_time.projection(size, "cuda", tiny=False)
    assert projection["total_s"] <= 0.75 * gpu.BENCH_TIMEOUT_S, projection
    units = gpu_time.schedule(size)
    assert [u.name for u in units[2:6]] == ["1024 tokens, 2 layers", "1024 tokens, 4 layers", "t4x2/nf4, 2 layers",
                                           "t4x2/nf4, 4 layers"]  # the recipe's length, then the T4's inference
    assert "plan" not in {u.step for u in units}  # ~150 s of CPU, no GPU needed: --plan-only adds it afterwards
    assert {u.step for u in units} <= set(gpu.FUNCTIONS)
    # each unit's full-size part: the 4-layer build reads more than the 2-layer one, 2048 tokens compute more
    by_name = {u["name"]: u["projected_s"] for u in projection["units"]}
    assert by_name["1024 tokens, 4 layers"] > by_name["1024 tokens, 2 layers"] > gpu_time.FIXED_S["trainer"]
    assert by_name["2048 tokens, 4 layers"] > by_name["1024 tokens, 4 layers"]
    assert gpu_time.checkpoint_bytes(False, 4) == pytest.approx(2 * (256000 * 3584 + 4 * 198.2e6), rel=0.01)


def test_the_gate_does_not_start_a_unit_that_would_end_past_the_limit():
    from benchmarks import gpu_time

    now = [0.0]
    budget = gpu_time.Budget(limit_s=100, started=0.0, clock=lambda: now[0])

    def takes(seconds):
        return lambda: now.__setitem__(0, now[0] + seconds)

    unit = gpu_time.Unit("training", "a", "trainer")
    assert budget.run(unit, 50, takes(60))["seconds"] == 60  # it took 1.2 x its projection
    skipped = budget.run(unit, 30, takes(1))  # 30 x 1.2 = 36 s from 60 s: past 100 - 10 s of reserve
    assert "seconds" not in skipped and now[0] == 60
    assert skipped["skipped"].startswith("projected 36 s (x1.20") and "30 s left before the 100 s limit" in skipped[
        "skipped"]
    assert budget.run(unit, 20, takes(20))["seconds"] == 20  # 24 s fits: a later, smaller unit still runs
    failed = budget.run(unit, 1, lambda: 1 / 0)
    assert failed["error"] == "ZeroDivisionError: division by zero" and "traceback" in failed
    assert gpu_time.Budget(None, 0.0, clock=lambda: 1e9).run(unit, 1e6, lambda: None)["seconds"] == 0  # no limit


def test_memory_is_counted_as_a_t4_holds_it_context_included(monkeypatch):
    """The allocator's cap leaves a T4's total for everything this process holds on the GPU (the cap alone would
    leave the context and cuBLAS' workspace on top), and a peak on the device adds them back."""
    import torch
    from benchmarks import gpu_steps

    mib = 2**20
    state = {"free": 79_000 * mib, "reserved": 2 * mib, "peak_reserved": 9_000 * mib, "peak_allocated": 8_000 * mib}
    fractions = []
    monkeypatch.setattr(gpu_steps, "warm_cublas", lambda: None)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda: (state["free"], 80_000 * mib))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda: state["reserved"])
    monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda: state["peak_reserved"])
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda: state["peak_allocated"])
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", fractions.append)
    base = gpu_steps.memory_baseline("cuda")
    assert base["outside_allocator_bytes"] == 998 * mib  # 1000 MiB used, 2 of them in the allocator
    assert base["allocator_cap_bytes"] == gpu_steps.T4_TOTAL_BYTES - 998 * mib
    assert fractions == [base["allocator_cap_bytes"] / (80_000 * mib)]
    state.update(free=70_000 * mib, reserved=9_000 * mib)  # after a unit: 10,000 MiB used, 1,000 outside
    assert gpu_steps.peak("cuda") == {"tensor_peak_bytes": 8_000 * mib, "reserved_peak_bytes": 9_000 * mib,
                                      "device_peak_bytes": 10_000 * mib}
    assert gpu_steps.memory_baseline("cpu") == {} and gpu_steps.peak("cpu")["device_peak_bytes"] is None


def test_rows_have_varied_lengths_a_quarter_at_the_limit():
    from benchmarks.gpu_steps import mean_row_tokens, random_rows, row_lengths

    lengths = row_lengths(400, 1024, seed=3)
    assert lengths.count(1024) == 100 and min(lengths) >= 128 and len(set(lengths)) > 100
    assert abs(sum(lengths) / 400 - mean_row_tokens(1024)) < 25
    assert [len(r) for r in random_rows(8, 96, 400, seed=5)] == row_lengths(8, 96, seed=5)


@pytest.mark.e2e
def test_the_gpu_measurement_runs_on_cpu_with_the_tiny_model(tmp_path):
    from benchmarks import gpu

    out = tmp_path / "docs" / "gpu.md"
    assert gpu.main(["--out", str(out), "--device", "cpu", "--tiny", "--work", str(tmp_path / "work")]) == 0
    results = json.loads(out.with_suffix(".json").read_text())
    steps = results["steps"]
    assert list(steps) == ["environment", "checkpoints", "training", "inference", "float16 training", "small model",
                           "plan"]
    assert not [name for name, value in steps.items() if "error" in value]
    assert [u["name"] for u in results["units"]] == [u["name"] for u in results["time_model"]["units"]]
    assert all("seconds" in u and u["projected_s"] > 0 for u in results["units"])  # every unit ran, none skipped
    for length in ("96", "128"):
        entry = steps["training"]["lengths"][length]
        assert set(entry["by_layers"]) == {"1", "2"}
        for run in entry["by_layers"].values():  # the recipe's Trainer: its optimizer, batch, the t4x2 dtype
            assert run["optimizer"] == "paged_adamw_8bit" and run["batch"] == "2 x 2 (grad accum)"
            assert run["compute_dtype"] == "float16" and run["steps"] == 2 and run["step_seconds"] > 0
            assert 0 < run["padding"] < 0.6 and run["sampling"] == "random"  # padded batches of varied rows
        assert entry["step_seconds_42"]["at_42"] == pytest.approx(
            entry["step_seconds_42"]["one_off"] + 42 * entry["step_seconds_42"]["per_layer"])
        plan = steps["plan"]["training"][length]
        assert plan["training_peak"] > 0 and plan["training_flops_per_step"] > 0
    fp16 = steps["float16 training"]
    assert fp16["non_finite_losses"] == 0 and len(fp16["losses"]) == 3 * 2 and fp16["steps"] == 3
    runs = steps["inference"]["runs"]
    assert set(runs) == {"t4x2/nf4", "t4x2/none", "native/nf4"}
    assert {runs[k]["compute_dtype"] for k in ("t4x2/nf4", "t4x2/none")} == {"float16"}  # the T4's decision
    assert runs["native/nf4"]["compute_dtype"] == "float32"  # this CPU's
    for entry in runs.values():
        assert set(entry["by_layers"]) == {"1", "2"}
        assert all(v["non_finite_rows"] == 0 and v["tokens_per_s"] > 0 for v in entry["by_layers"].values())
    planned = steps["plan"]["inference"]
    assert planned["nf4"]["inference_peak_t4"] < planned["none"]["inference_peak_t4"]  # each format its own plan
    assert steps["small model"]["logits_max_abs_gap_vs_cpu"] == 0.0  # on CPU the two paths are one
    report = out.read_text()
    assert "EXTRAPOLATED" in report and "plan peak (T4)" in report and "| t4x2 | nf4 | float16 |" in report
    assert "## time" in report and "| training: 96 tokens, 1 layers |" in report
    assert "failed" not in report
    # a GPU run leaves the plan out; --plan-only adds it to those results afterwards, on any machine
    plan_before = results["steps"].pop("plan")
    out.with_suffix(".json").write_text(json.dumps(results))
    assert gpu.main(["--out", str(out), "--plan-only", "--work", str(tmp_path / "work")]) == 0
    assert json.loads(out.with_suffix(".json").read_text())["steps"]["plan"]["training"] == plan_before["training"]
