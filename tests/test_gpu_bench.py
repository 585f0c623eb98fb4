"""benchmarks/gpu.py: its CPU mode (`--device cpu --tiny`) runs every step and renders the report, so the GPU run is
known to work before a GPU is lent; what travels to the GPU machine fits in one carry; the GPU call fits twice in
a session's device time; results survive a step that fails half-way."""

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


def test_a_step_that_fails_half_way_keeps_what_it_measured(tmp_path):
    from benchmarks import gpu

    results = gpu.Results(tmp_path / "gpu.md", {"command": "test", "started": "now", "tiny": True})
    seen = []

    def step(out, save):
        out["lengths"] = {"96": {"by_layers": {}}}
        save()
        seen.append(json.loads(results.json.read_text())["steps"]["training"])
        raise RuntimeError("out of memory")

    results.step("training", step)
    saved = json.loads(results.json.read_text())["steps"]["training"]
    assert seen == [{"lengths": {"96": {"by_layers": {}}}}]  # on disk before the failure
    assert saved["lengths"] == {"96": {"by_layers": {}}} and saved["error"] == "RuntimeError: out of memory"
    assert "failed: `RuntimeError: out of memory`" in results.out.read_text()


@pytest.mark.e2e
def test_the_gpu_measurement_runs_on_cpu_with_the_tiny_model(tmp_path):
    from benchmarks import gpu

    out = tmp_path / "docs" / "gpu.md"
    assert gpu.main(["--out", str(out), "--device", "cpu", "--tiny", "--work", str(tmp_path / "work")]) == 0
    steps = json.loads(out.with_suffix(".json").read_text())["steps"]
    assert list(steps) == ["environment", "training", "float16 training", "inference", "plan", "small model"]
    assert not [name for name, value in steps.items() if "error" in value]
    for length in ("96", "128"):
        entry = steps["training"]["lengths"][length]
        assert set(entry["by_layers"]) == {"1", "2"}
        for run in entry["by_layers"].values():  # the recipe's Trainer: its optimizer, batch, the t4x2 dtype
            assert run["optimizer"] == "paged_adamw_8bit" and run["batch"] == "2 x 2 (grad accum)"
            assert run["compute_dtype"] == "float16" and run["steps"] == 2 and run["step_seconds"] > 0
        assert entry["step_seconds_42"]["at_42"] == pytest.approx(
            entry["step_seconds_42"]["one_off"] + 42 * entry["step_seconds_42"]["per_layer"])
        plan = steps["plan"]["training"][length]
        assert plan["training_peak"] > 0 and plan["training_flops_per_step"] > 0
    fp16 = steps["float16 training"]
    assert fp16["non_finite_losses"] == 0 and len(fp16["losses"]) == 3 * 2 and fp16["steps"] == 3
    runs = steps["inference"]["runs"]
    assert set(runs) == {"native/nf4", "native/none", "t4x2/nf4", "t4x2/none"}
    assert {runs[k]["compute_dtype"] for k in ("t4x2/nf4", "t4x2/none")} == {"float16"}  # the T4's decision
    assert {runs[k]["compute_dtype"] for k in ("native/nf4", "native/none")} == {"float32"}  # this CPU's
    for entry in runs.values():
        assert set(entry["by_layers"]) == {"1", "2"}
        assert all(v["non_finite_rows"] == 0 and v["tokens_per_s"] > 0 for v in entry["by_layers"].values())
    planned = steps["plan"]["inference"]
    assert planned["nf4"]["inference_peak_t4"] < planned["none"]["inference_peak_t4"]  # each format its own plan
    assert steps["small model"]["logits_max_abs_gap_vs_cpu"] == 0.0  # on CPU the two paths are one
    report = out.read_text()
    assert "EXTRAPOLATED" in report and "plan peak (T4)" in report and "| t4x2 | nf4 | float16 |" in report
    assert "failed" not in report
