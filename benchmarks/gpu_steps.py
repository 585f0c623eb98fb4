"""The measurements of benchmarks/gpu.py. Each step takes (work, device, tiny, size, out, save): it fills `out` (its
part of results.json) and calls `save()` after every sub-result (a length, a layer count, a weight format), so a run
cut off keeps everything measured so far."""

from __future__ import annotations

import contextlib
import math
import os
import statistics
import time
from pathlib import Path

GIB = 2**30
FULL_LAYERS = 42
RECIPE = "configs/gemma2-9b-qlora-t4x2.yaml"
T4_PROFILE = "t4x2"  # the recipe's machine: its decisions (float16, no bf16) are what training and inference measure


def sizes(tiny: bool) -> dict:
    if tiny:
        return dict(layer_counts=(1, 2), train_lengths=(96, 128), memory_steps=2, fp16_steps=3, infer_length=128,
                    infer_rows=8, small_steps=2, quantizations=("nf4", "none"))
    return dict(layer_counts=(2, 4), train_lengths=(1024, 2048), memory_steps=4, fp16_steps=20, infer_length=2048,
                infer_rows=48, small_steps=5, quantizations=("nf4", "int8", "none"))


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


def random_rows(n: int, length: int, vocab: int, seed: int, short: int | None = None) -> list[list[int]]:
    import random

    rng = random.Random(seed)
    return [[rng.randrange(3, vocab) for _ in range(rng.randint(short or length, length))] for _ in range(n)]


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


def peak(device: str) -> int | None:
    if device != "cuda":
        return None
    import torch

    return torch.cuda.max_memory_allocated()


class _NoTokenizer:
    pad_token_id = 0


# ---- training through arena's Trainer ----------------------------------------------------------------------------

def trainer_steps(model_dir: Path, work: Path, device: str, length: int, steps: int, seed: int) -> dict:
    """`steps` optimizer steps of arena's PreferenceTrainer (the recipe's training arguments: its optimizer,
    batch, grad accumulation, float16 autocast and grad scaler where the t4x2 profile decides float16) over random
    rows of exactly `length` tokens: peak memory, the loss of every micro-batch, steps the grad scaler skipped, and
    the median time of an optimizer step after the first."""
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

    class Meter(NonFiniteGuard):
        """The run's own non-finite guard (it never stops this run) that also keeps every loss and step time."""

        def __init__(self):
            super().__init__(10**6, str(rt.dtype).removeprefix("torch."))
            self.losses, self.seconds, self.skipped, self.started = [], [], 0, 0.0

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
            return super().on_step_end(args, state, control, **kwargs)

    meter = Meter()
    run = RunFolder(work / "runs" / f"bench-{length}-tokens-{model.config.num_hidden_layers}-layers-{steps}-steps")
    # as make_trainer builds it; the Trainer evaluates (one row) and saves once, after the last step
    eval_logits = EvalLogits(np.arange(1))
    trainer = PreferenceTrainer(model=model, args=training_arguments(cfg, run, rt),
                                data_collator=RightPadCollator(0), train_dataset=dataset,
                                eval_dataset=dataset.subset([0]), compute_metrics=eval_logits,
                                callbacks=[eval_logits, meter])
    reset_peak(device)
    trainer.train()
    measured = peak(device)
    timed = meter.seconds[1:] or meter.seconds
    tokens_per_step = t.per_device_batch_size * t.grad_accum * length
    del trainer, model
    free(device)
    return {"peak_bytes": measured, "step_seconds": statistics.median(timed), "steps": len(meter.seconds),
            "tokens_per_step": tokens_per_step, "losses": meter.losses,
            "non_finite_losses": sum(not math.isfinite(x) for x in meter.losses), "skipped_steps": meter.skipped,
            "compute_dtype": str(rt.dtype).removeprefix("torch."), "optimizer": t.optim,
            "trainer_fp16": bool(rt.fp16), "batch": f"{t.per_device_batch_size} x {t.grad_accum} (grad accum)"}


def training(work: Path, device: str, tiny: bool, size: dict, out: dict, save) -> None:
    """Peak memory and step time of the recipe's Trainer at each training length, at two layer counts, and their
    extrapolation to 42 layers."""
    folders = gemma2_checkpoints(work, device, tiny, size["layer_counts"])
    out.update(layer_counts=list(size["layer_counts"]), profile=T4_PROFILE, lengths={})
    save()
    for length in size["train_lengths"]:
        entry = out["lengths"].setdefault(str(length), {"by_layers": {}})
        for layers in size["layer_counts"]:
            entry["by_layers"][str(layers)] = trainer_steps(folders[layers], work, device, length,
                                                            size["memory_steps"], seed=length + layers)
            save()
        by = {int(k): v for k, v in entry["by_layers"].items()}
        entry["peak_bytes_42"] = extrapolate({k: v["peak_bytes"] for k, v in by.items()})
        entry["step_seconds_42"] = extrapolate({k: v["step_seconds"] for k, v in by.items()})
        step = entry["step_seconds_42"]["at_42"]
        entry["tokens_per_s_42"] = next(iter(by.values()))["tokens_per_step"] / step if step > 0 else None
        save()


def fp16_training(work: Path, device: str, tiny: bool, size: dict, out: dict, save) -> None:
    """fp16_steps optimizer steps of the recipe's Trainer under the t4x2 profile on the largest build: non-finite
    losses, steps the grad scaler skipped, tokens/s."""
    layers = max(size["layer_counts"])
    folder = gemma2_checkpoints(work, device, tiny, size["layer_counts"])[layers]
    length = size["train_lengths"][0]
    measured = trainer_steps(folder, work, device, length, size["fp16_steps"], seed=7)
    measured.update(length=length, layers_built=layers,
                    tokens_per_s_built=measured["tokens_per_step"] / measured["step_seconds"])
    out.update(measured)
    save()


# ---- inference ---------------------------------------------------------------------------------------------------

def inference(work: Path, device: str, tiny: bool, size: dict, out: dict, save) -> None:
    """Sorted-batch inference at infer_length for each weight format, under this machine's own decisions (native:
    bfloat16 on an H100/H200) and the t4x2 profile's (float16, as on a T4), at two layer counts: tokens/s and peak
    memory, extrapolated to 42 layers; whether every logit is finite."""
    import numpy as np

    from arena import hardware, predict
    from arena import model as model_mod

    folders = gemma2_checkpoints(work, device, tiny, size["layer_counts"])
    length = size["infer_length"]
    out.update(length=length, layer_counts=list(size["layer_counts"]), runs={})
    save()
    for name, hw in (("native", hardware.detect()), (T4_PROFILE, hardware.profile(T4_PROFILE))):
        for quantization in size["quantizations"]:
            entry = out["runs"].setdefault(f"{name}/{quantization}", {"profile": name, "quantization": quantization,
                                                                      "by_layers": {}})
            for layers in size["layer_counts"]:
                cfg = recipe(folders[layers], device, [f"infer.max_length={length}",
                                                       f"infer.quantization={quantization}"])
                rt = model_mod.runtime_for(cfg, gemma2_config(tiny, layers), hw)
                model = model_mod.load_base(cfg, rt, None, 0, quantization=quantization).eval()
                rows = random_rows(size["infer_rows"], length, model.config.vocab_size, 2, short=length // 8)
                tokens = sum(map(len, rows))
                where = predict.model_device(model)
                predict.logits_for(model, rows[:2], 0, cfg, where)  # warm-up
                reset_peak(device)
                started = time.perf_counter()
                logits = predict.logits_for(model, rows, 0, cfg, where)
                sync(device)
                seconds = time.perf_counter() - started
                entry["by_layers"][str(layers)] = {
                    "seconds": seconds, "tokens": tokens, "rows": len(rows), "tokens_per_s": tokens / seconds,
                    "peak_bytes": peak(device), "non_finite_rows": int((~np.isfinite(logits).all(axis=1)).sum()),
                    "compute_dtype": str(rt.dtype).removeprefix("torch.")}
                entry["compute_dtype"] = entry["by_layers"][str(layers)]["compute_dtype"]
                del model
                free(device)
                save()
            by = {int(k): v for k, v in entry["by_layers"].items()}
            seconds = extrapolate({k: v["seconds"] for k, v in by.items()})
            entry["tokens_per_s_42"] = (next(iter(by.values()))["tokens"] / seconds["at_42"]
                                        if seconds and seconds["at_42"] > 0 else None)
            entry["seconds_42"] = seconds
            entry["peak_bytes_42"] = extrapolate({k: v["peak_bytes"] for k, v in by.items()})
            entry["tokens_per_row"] = next(iter(by.values()))["tokens"] / next(iter(by.values()))["rows"]
            save()


# ---- the plan (planner, no weights) --------------------------------------------------------------------------

def plan(work: Path, device: str, tiny: bool, size: dict, out: dict, save) -> None:
    """`arena plan`'s figures for what was measured: each training length, and each weight format's own inference
    plan. --tiny plans the tiny model itself (the same code, seconds instead of a minute on 2 CPU cores)."""
    from arena import planner

    folders = gemma2_checkpoints(work, device, tiny, size["layer_counts"])

    def cfg_for(overrides):
        return recipe(folders[max(folders)], device, overrides) if tiny else published(overrides)

    out.update(training={}, inference={})
    for length in size["train_lengths"]:
        p = planner.memory_plan(cfg_for([f"prompt.max_length={length}"]), "t4")
        out["training"][str(length)] = {"training_peak": p["training_peak"], "verdict": p["training_verdict"],
                                        "training_flops_per_step": p["training_flops_per_step"],
                                        "batch": p["train_batch"]}
        save()
    length = size["infer_length"]
    for quantization in size["quantizations"]:
        cfg = cfg_for([f"infer.max_length={length}", f"infer.quantization={quantization}"])
        p = planner.memory_plan(cfg, "t4")
        # the rows of the measurement average ~9/16 of infer_length tokens (lengths uniform in [L/8, L])
        tokens_per_row = length * 9 / 16
        out["inference"][quantization] = {
            "inference_peak_t4": p["inference_peak"], "verdict_t4": p["inference_verdict"],
            "tokens_per_s_h100": planner.throughput(cfg, tokens_per_row, gpu="h100", gpus=1)["tokens_per_s"],
            "tokens_per_s_t4": planner.throughput(cfg, tokens_per_row, gpu="t4", gpus=1)["tokens_per_s"]}
        save()
