"""benchmarks/gpu.py's CPU mode (`--device cpu --tiny`): every step runs and the report renders, so the GPU run
is known to work before a GPU is lent."""

from __future__ import annotations

import json

import pytest


@pytest.mark.e2e
def test_the_gpu_measurement_runs_on_cpu_with_the_tiny_model(tmp_path):
    from benchmarks import gpu

    out = tmp_path / "docs" / "gpu.md"
    assert gpu.main(["--out", str(out), "--device", "cpu", "--tiny", "--work", str(tmp_path / "work")]) == 0
    results = json.loads(out.with_suffix(".json").read_text())
    steps = results["steps"]
    assert list(steps) == ["environment", "training memory", "float16 training", "inference", "small model"]
    assert not [name for name, value in steps.items() if "error" in value]
    for length in ("96", "128"):
        memory = steps["training memory"]["lengths"][length]
        assert memory["plan_training_peak"] > 0 and memory["plan_training_flops"] > 0
    assert steps["float16 training"]["non_finite_losses"] == 0 and len(steps["float16 training"]["losses"]) == 3
    assert set(steps["inference"]["quantizations"]) == {"nf4", "none"}
    assert all(v["finite"] and v["tokens_per_s_built"] > 0 for v in steps["inference"]["quantizations"].values())
    assert steps["small model"]["logits_max_abs_gap_vs_cpu"] == 0.0  # on CPU the two paths are one
    report = out.read_text()
    assert "scaled to 42 layers: estimates" in report and "plan peak (T4)" in report and "failed" not in report
