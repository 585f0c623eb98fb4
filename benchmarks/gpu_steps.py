"""The measurements of benchmarks/gpu.py, one unit (sub-result) per call: fn(bench, out, **unit arguments) fills `out`,
its step's part of results.json (benchmarks/gpu_time.py lists the units and their order); benchmarks/gpu.py saves
after every unit, so a run cut off keeps everything measured so far."""

from __future__ import annotations

import contextlib
import math
import os
import random
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

GIB = 2**30
FULL_LAYERS = 42
RECIPE = "configs/gemma2-9b-qlora-t4x2.yaml"
T4_PROFILE = "t4x2"  # the recipe's machine: its decisions (float16, no bf16) are what training and inference measure


# What torch reports as a T4's memory (deviceQuery's "Total amount of global memory: 15110 MBytes (15843721216
# bytes)"): the CUDA context and cuBLAS' workspace come out of it too, so the caching allocator gets less.
T4_TOTAL_BYTES = 15_843_721_216


def sizes(tiny: bool) -> dict:
    if tiny:
        return dict(layer_counts=(1, 2), train_lengths=(96, 128), memory_steps=2, fp16_steps=3, infer_length=128,
                    infer_rows=8, small_steps=2, quantizations=("nf4", "none"), plan_in_run=True)
    return dict(layer_counts=(2, 4), train_lengths=(1024, 2048), memory_steps=4, fp16_steps=20, infer_length=2048,
                infer_rows=48, small_steps=5, quantizations=("nf4", "int8", "none"), plan_in_run=False)


@dataclass
class Bench:
    """What every unit needs: where checkpoints and runs go, the device, the sizes, save() for results.json."""

    work: Path
    device: str
    tiny: bool
    size: dict
    save: object = lambda: None


# ---- the models ------------------------------------------------------------------------------------------------

def gemma2_config(tiny: bool, layers: int):
    from transformers import AutoConfig

    from arena.planner import PUBLISHED

    values = dict(PUBLISHED["gemma-2-9b-it"], num_hidden_layers=layers, pad_token_id=0)
    if tiny:
        values.update(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2,
                      head_dim=16, vocab_size=400, query_pre_attn_scalar=16)
    return AutoConfig.for_model(values.pop("model_type"), **values)


def random_checkpoint(folder: Path, hf_config, device: str = "cpu") -> Path:
    """A CausalLM of `hf_config` with random weights (initialised on `device`) and the tests' small tokenizer,
    saved like a local model."""
    import torch
    from tests.tiny import tiny_tokenizer
    from transformers import AutoModelForCausalLM

    if (folder / "config.json").is_file():
        return folder
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(hf_config, dtype=torch.bfloat16)
    model.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    del model
    return folder


def gemma2_checkpoints(work: Path, device: str, tiny: bool, counts) -> dict[int, Path]:
    """Gemma-2 9B's architecture (exact layer shapes; tiny shapes with --tiny) at each layer count: one random
    checkpoint of the largest count, and for each smaller count a folder whose config.json has fewer layers over
    the same weight files (the layers beyond it are not loaded)."""
    top = max(counts)
    full = random_checkpoint(work / f"gemma2-9b-{top}-layers", gemma2_config(tiny, top), device)
    folders = {top: full}
    for layers in counts:
        if layers == top:
            continue
        folder = work / f"gemma2-9b-{layers}-layers"
        folder.mkdir(parents=True, exist_ok=True)
        for item in full.iterdir():
            link = folder / item.name
            if item.name != "config.json" and not link.exists():
                link.symlink_to(item.resolve())
        gemma2_config(tiny, layers).save_pretrained(folder)
        folders[layers] = folder
    free(device)
    return folders


def recipe(model_dir: Path, device: str, overrides=()):
    """The headline recipe on the model in `model_dir`; its adapter on the same share of the top layers as the
    recipe's 26 of 42 (layers 16-41), of the layers built."""
    from transformers import AutoConfig

    from arena import config

    built = AutoConfig.from_pretrained(model_dir).num_hidden_layers
    adapted = list(range(built - max(1, round(built * 26 / FULL_LAYERS)), built))
    # auto on the CPU: model.device=cpu would pin the CPU's own decisions and ignore the t4x2 profile's (simulated)
    where = "auto" if device == "cpu" else device
    return config.load(RECIPE, [f"model.path={model_dir}", f"model.device={where}", "model.length_features=false",
                                "prompt.min_tokens=8", f"peft.layers_to_transform={adapted}", *overrides])


def published(overrides=()):
    """The headline recipe as `arena plan` reads it (the published 42-layer 9B architecture)."""
    from arena import config

    return config.load(RECIPE, ["prompt.min_tokens=8", *overrides])


def row_lengths(n: int, length: int, seed: int) -> list[int]:
    """Token counts of the measurement's rows, as training and inference see real ones: a quarter at `length` (rows
    the limit truncates, so every measurement holds a batch padded to the full length), the rest uniform between
    length/8 and length; shuffled."""
    rng = random.Random(seed)
    full = max(1, n // 4)
    lengths = [length] * full + [rng.randint(length // 8, length) for _ in range(n - full)]
    rng.shuffle(lengths)
    return lengths


def mean_row_tokens(length: int) -> float:
    """The expected mean of row_lengths(., length, .)."""
    return 0.25 * length + 0.75 * (length // 8 + length) / 2


def random_rows(n: int, length: int, vocab: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed + 1)
    return [[rng.randrange(3, vocab) for _ in range(k)] for k in row_lengths(n, length, seed)]


def extrapolate(points: dict[int, float | None]) -> dict | None:
    """A figure measured at two layer counts, extended to 42 layers along the line through them: the slope is the
    cost of one more decoder layer, the intercept the one-off part (embeddings, head, temporaries that exist once,
    such as a layer's dequantised weight or its eager attention scores)."""
    (l1, y1), (l2, y2) = sorted(points.items())[:2]
    if y1 is None or y2 is None:
        return None
    slope = (y2 - y1) / (l2 - l1)
    intercept = y1 - slope * l1
    return {"per_layer": slope, "one_off": intercept, "at_42": intercept + slope * FULL_LAYERS}


@contextlib.contextmanager
def hardware_profile(name: str):
    """Every runtime_for() inside takes the decisions of profile `name` (on a CUDA machine they run on the GPU)."""
    from arena.hardware import PROFILE_ENV, use_profile

    before = os.environ.get(PROFILE_ENV)
    use_profile(name)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(PROFILE_ENV, None)
        else:
            os.environ[PROFILE_ENV] = before


def sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def free(device: str) -> None:
    import gc

    gc.collect()
    if device == "cuda":
        import torch

        torch.cuda.empty_cache()


def reset_peak(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def outside_allocator() -> int:
    """Bytes of the GPU in use but not in torch's caching allocator: this process's CUDA context, cuBLAS workspaces,
    bitsandbytes' paged (managed) memory (and any other process's, none on a lent machine)."""
    import torch

    free, total = torch.cuda.mem_get_info()
    return total - free - torch.cuda.memory_reserved()


def warm_cublas() -> None:
    """A half-precision matmul: cuBLAS' handle and workspace exist from here on, as in every later unit."""
    import torch

    x = torch.ones(256, 256, device="cuda", dtype=torch.float16)
    (x @ x).float().sum().item()


def memory_baseline(device: str) -> dict:
    """On CUDA, after a matmul has created cuBLAS' handle and workspace: the GPU's memory, what is outside the
    allocator already, and the allocator's cap that leaves a T4's total for everything (context included):
    torch.cuda.set_per_process_memory_fraction caps the allocator alone."""
    if device != "cuda":
        return {}
    import torch

    warm_cublas()
    total = torch.cuda.mem_get_info()[1]
    outside = outside_allocator()
    cap = T4_TOTAL_BYTES - outside
    torch.cuda.set_per_process_memory_fraction(min(1.0, cap / total))
    return {"gpu_total_bytes": total, "outside_allocator_bytes": outside, "t4_total_bytes": T4_TOTAL_BYTES,
            "allocator_cap_bytes": cap}


def peak(device: str) -> dict:
    """The peak since reset_peak: tensors (max_memory_allocated), the allocator's (max_memory_reserved, with its
    cached blocks), and on the device: the allocator's peak plus what is outside it now (context, workspaces, paged
    optimizer state), the figure a T4's T4_TOTAL_BYTES must hold. None on a CPU."""
    if device != "cuda":
        return {"tensor_peak_bytes": None, "reserved_peak_bytes": None, "device_peak_bytes": None}
    import torch

    torch.cuda.synchronize()
    reserved = torch.cuda.max_memory_reserved()
    return {"tensor_peak_bytes": torch.cuda.max_memory_allocated(), "reserved_peak_bytes": reserved,
            "device_peak_bytes": reserved + outside_allocator()}


class _NoTokenizer:
    pad_token_id = 0


# ---- training through arena's Trainer ----------------------------------------------------------------------------

def trainer_steps(model_dir: Path, work: Path, device: str, length: int, steps: int, seed: int) -> dict:
    """`steps` optimizer steps of arena's PreferenceTrainer (the recipe's training arguments: its optimizer,
    batch, grad accumulation, its sampling, float16 autocast and grad scaler where the t4x2 profile decides float16)
    over random rows of varied lengths up to `length` (row_lengths), each batch padded to its longest row: peak
    memory (every batch that holds a full-length row is padded to `length`), the loss of every micro-batch, steps
    the grad scaler skipped, the median time of an optimizer step after the first, real and padded tokens."""
    import numpy as np

    from arena import model as model_mod
    from arena.layout import RunFolder
    from arena.train.trainer import (
        EncodedRows,
        EvalLogits,
        NonFiniteGuard,
        PreferenceTrainer,
        RightPadCollator,
        training_arguments,
    )

    cfg = recipe(model_dir, device, [f"prompt.max_length={length}", f"train.max_steps={steps}",
                                     f"train.eval_steps={10**6}", "train.logging_steps=1",
                                     f"train.runs_dir={work / 'runs'}", f"train.nan_patience={10**6}"])
    with hardware_profile(T4_PROFILE):
        model, _, rt = model_mod.build_for_training(cfg, tokenizer=_NoTokenizer())
    t = cfg.train
    rows = random_rows(t.per_device_batch_size * t.grad_accum * steps, length, model.config.vocab_size, seed)
    labels = np.eye(3, dtype=np.float32)[np.arange(len(rows)) % 3]
    dataset = EncodedRows(rows, labels)

    class CountingCollator(RightPadCollator):
        """The run's collator, counting real and padded tokens."""

        real = padded = 0

        def __call__(self, batch_rows):
            batch = super().__call__(batch_rows)
            self.real += int(batch["attention_mask"].sum())
            self.padded += batch["attention_mask"].numel()
            return batch

    collator = CountingCollator(0)

    class Meter(NonFiniteGuard):
        """The run's own non-finite guard (it never stops this run) that also keeps every loss and step time, and
        the training batches' tokens (the last evaluation's are not counted)."""

        def __init__(self):
            super().__init__(10**6, str(rt.dtype).removeprefix("torch."))
            self.losses, self.seconds, self.skipped, self.started, self.tokens = [], [], 0, 0.0, (0, 0)

        def observe(self, loss):
            super().observe(loss)
            self.losses.append(float(loss.detach().float()))

        def on_step_begin(self, args, state, control, **kwargs):
            sync(device)
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            sync(device)
            self.seconds.append(time.perf_counter() - self.started)
            self.skipped += bool(getattr(kwargs.get("optimizer"), "step_was_skipped", False))
            self.tokens = (collator.real, collator.padded)
            return super().on_step_end(args, state, control, **kwargs)

    meter = Meter()
    run = RunFolder(work / "runs" / f"bench-{length}-tokens-{model.config.num_hidden_layers}-layers-{steps}-steps")
    # as make_trainer builds it; the Trainer evaluates (one row) and saves once, after the last step
    eval_logits = EvalLogits(np.arange(1))
    trainer = PreferenceTrainer(model=model, args=training_arguments(cfg, run, rt), data_collator=collator,
                                train_dataset=dataset, eval_dataset=dataset.subset([0]), compute_metrics=eval_logits,
                                callbacks=[eval_logits, meter])
    reset_peak(device)
    trainer.train()
    measured = peak(device)
    timed = meter.seconds[1:] or meter.seconds
    real, padded = meter.tokens
    del trainer, model
    free(device)
    return {**measured, "step_seconds": statistics.median(timed), "steps": len(meter.seconds),
            "tokens_per_step": real / max(1, len(meter.seconds)), "padding": 1 - real / padded if padded else None,
            "max_length": length, "losses": meter.losses,
            "non_finite_losses": sum(not math.isfinite(x) for x in meter.losses), "skipped_steps": meter.skipped,
            "compute_dtype": str(rt.dtype).removeprefix("torch."), "optimizer": t.optim, "sampling": t.sampling,
            "trainer_fp16": bool(rt.fp16), "batch": f"{t.per_device_batch_size} x {t.grad_accum} (grad accum)"}


def checkpoints(bench: Bench, out: dict, layers: int) -> None:
    """The random 9B checkpoints every later unit loads (built once per machine, on local disk)."""
    folders = gemma2_checkpoints(bench.work, bench.device, bench.tiny, bench.size["layer_counts"])
    out["checkpoint_bytes"] = sum(f.stat().st_size for f in folders[layers].glob("*.safetensors"))


def training(bench: Bench, out: dict, length: int, layers: int, steps: int) -> None:
    """Peak memory and step time of the recipe's Trainer at one training length and layer count; once both layer
    counts of a length are in, their extrapolation to 42 layers."""
    counts = bench.size["layer_counts"]
    folders = gemma2_checkpoints(bench.work, bench.device, bench.tiny, counts)
    out.update(layer_counts=list(counts), profile=T4_PROFILE)
    entry = out.setdefault("lengths", {}).setdefault(str(length), {"by_layers": {}})
    entry["by_layers"][str(layers)] = trainer_steps(folders[layers], bench.work, bench.device, length, steps,
                                                    seed=length + layers)
    by = {int(k): v for k, v in entry["by_layers"].items()}
    if len(by) >= 2:
        entry["peak_bytes_42"] = extrapolate({k: v["device_peak_bytes"] for k, v in by.items()})
        entry["tensor_peak_bytes_42"] = extrapolate({k: v["tensor_peak_bytes"] for k, v in by.items()})
        entry["step_seconds_42"] = extrapolate({k: v["step_seconds"] for k, v in by.items()})
        step = entry["step_seconds_42"]["at_42"]
        entry["tokens_per_s_42"] = next(iter(by.values()))["tokens_per_step"] / step if step > 0 else None


def fp16_training(bench: Bench, out: dict, length: int, layers: int, steps: int) -> None:
    """`steps` optimizer steps of the recipe's Trainer under the t4x2 profile on the largest build: non-finite
    losses, steps the grad scaler skipped, tokens/s."""
    folder = gemma2_checkpoints(bench.work, bench.device, bench.tiny, bench.size["layer_counts"])[layers]
    measured = trainer_steps(folder, bench.work, bench.device, length, steps, seed=7)
    measured.update(length=length, layers_built=layers,
                    tokens_per_s_built=measured["tokens_per_step"] / measured["step_seconds"])
    out.update(measured)


# ---- inference ---------------------------------------------------------------------------------------------------

def inference(bench: Bench, out: dict, profile: str, quantization: str, layers: int) -> None:
    """Sorted-batch inference at infer_length for one weight format and layer count, under this machine's own
    decisions (native: bfloat16 on an H100/H200) or the t4x2 profile's (float16, as on a T4): tokens/s and peak
    memory; once both layer counts are in, their extrapolation to 42 layers; whether every logit is finite."""
    import numpy as np

    from arena import hardware, predict
    from arena import model as model_mod

    size, device, tiny = bench.size, bench.device, bench.tiny
    counts = size["layer_counts"]
    folders = gemma2_checkpoints(bench.work, device, tiny, counts)
    length = size["infer_length"]
    out.update(length=length, layer_counts=list(counts))
    hw = hardware.profile(T4_PROFILE) if profile == T4_PROFILE else hardware.detect()
    entry = out.setdefault("runs", {}).setdefault(f"{profile}/{quantization}", {
        "profile": profile, "quantization": quantization, "by_layers": {}})
    cfg = recipe(folders[layers], device, [f"infer.max_length={length}", f"infer.quantization={quantization}"])
    rt = model_mod.runtime_for(cfg, gemma2_config(tiny, layers), hw)
    model = model_mod.load_base(cfg, rt, None, 0, quantization=quantization).eval()
    rows = random_rows(size["infer_rows"], length, model.config.vocab_size, 2)
    tokens = sum(map(len, rows))
    where = predict.model_device(model)
    predict.logits_for(model, rows[:2], 0, cfg, where)  # warm-up
    reset_peak(device)
    started = time.perf_counter()
    logits = predict.logits_for(model, rows, 0, cfg, where)
    sync(device)
    seconds = time.perf_counter() - started
    entry["by_layers"][str(layers)] = {
        "seconds": seconds, "tokens": tokens, "rows": len(rows), "tokens_per_s": tokens / seconds, **peak(device),
        "non_finite_rows": int((~np.isfinite(logits).all(axis=1)).sum()),
        "compute_dtype": str(rt.dtype).removeprefix("torch.")}
    entry["compute_dtype"] = entry["by_layers"][str(layers)]["compute_dtype"]
    del model
    free(device)
    by = {int(k): v for k, v in entry["by_layers"].items()}
    if len(by) >= 2:
        fit = extrapolate({k: v["seconds"] for k, v in by.items()})
        entry["tokens_per_s_42"] = tokens / fit["at_42"] if fit and fit["at_42"] > 0 else None
        entry["seconds_42"] = fit
        entry["peak_bytes_42"] = extrapolate({k: v["device_peak_bytes"] for k, v in by.items()})
        entry["tokens_per_row"] = tokens / len(rows)


# ---- the plan (planner, no weights) --------------------------------------------------------------------------

def plan(bench: Bench, out: dict) -> None:
    """`arena plan`'s figures for what was measured: each training length, and each weight format's own inference
    plan. It needs no GPU (on a GPU run `--plan-only` adds it afterwards: the 42-layer plan costs ~150 s of CPU);
    --tiny plans the tiny model itself (the same code, seconds)."""
    from arena import planner

    size = bench.size
    if bench.tiny:
        folder = gemma2_checkpoints(bench.work, bench.device, True, size["layer_counts"])[max(size["layer_counts"])]

    def cfg_for(overrides):
        return recipe(folder, bench.device, overrides) if bench.tiny else published(overrides)

    out.update(training={}, inference={})
    for length in size["train_lengths"]:
        p = planner.memory_plan(cfg_for([f"prompt.max_length={length}"]), "t4")
        out["training"][str(length)] = {"training_peak": p["training_peak"], "verdict": p["training_verdict"],
                                        "training_flops_per_step": p["training_flops_per_step"],
                                        "batch": p["train_batch"]}
        bench.save()
    length = size["infer_length"]
    tokens_per_row = mean_row_tokens(length)  # the measured rows' mean
    for quantization in size["quantizations"]:
        cfg = cfg_for([f"infer.max_length={length}", f"infer.quantization={quantization}"])
        p = planner.memory_plan(cfg, "t4")
        out["inference"][quantization] = {
            "inference_peak_t4": p["inference_peak"], "verdict_t4": p["inference_verdict"],
            "tokens_per_s_h100": planner.throughput(cfg, tokens_per_row, gpu="h100", gpus=1)["tokens_per_s"],
            "tokens_per_s_t4": planner.throughput(cfg, tokens_per_row, gpu="t4", gpus=1)["tokens_per_s"]}
        bench.save()
