"""The report of benchmarks/gpu.py, rendered from its results.json alone (partial results render too: a run cut off
shows what it measured)."""

from __future__ import annotations

import json

GIB = 2**30


def _gib(n) -> str:
    return "-" if n is None else f"{n / GIB:.2f} GiB"


def _num(n, fmt: str = "{:.0f}") -> str:
    return "-" if n is None else fmt.format(n)


def _fit(fit: dict | None, fmt) -> str:
    return "-" if not fit else f"{fmt(fit['at_42'])} ({fmt(fit['per_layer'])}/layer + {fmt(fit['one_off'])})"


def _training(value: dict, plan: dict) -> list[str]:
    counts = value.get("layer_counts", [])
    lines = ["", f"arena's PreferenceTrainer with the recipe's arguments under the {value.get('profile')} profile, at "
                 f"{' and '.join(map(str, counts))} layers built, on rows of varied lengths up to the limit (a quarter "
                 "at it), each batch padded to its longest row. Peak memory (on the device: context and workspaces "
                 "included; tensors alone) and step time MEASURED at each; 42 layers EXTRAPOLATED along the line "
                 "through the two (per layer + one-off); plan: `arena plan`'s PLANNED peak on a T4.", "",
             "| tokens | layers | batch | optimizer | dtype | padding | peak, device | peak, tensors | step s | "
             "42 layers: device peak (extrapolated) | 42 layers: step s (extrapolated) | tokens/s, 42 | "
             "plan peak (T4) | plan TFLOP/step |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for length, entry in value.get("lengths", {}).items():
        p = plan.get(length, {})
        for layers, v in entry.get("by_layers", {}).items():
            lines.append(f"| {length} | {layers} | {v['batch']} | {v['optimizer']} | {v['compute_dtype']} | "
                         f"{_num(v['padding'] and 100 * v['padding'], '{:.0f} %')} | {_gib(v['device_peak_bytes'])} | "
                         f"{_gib(v['tensor_peak_bytes'])} | {v['step_seconds']:.3f} | | | | | |")
        if "step_seconds_42" in entry:
            lines.append(f"| {length} | **42** | | | | | | | | {_fit(entry['peak_bytes_42'], _gib)} | "
                         f"{_fit(entry['step_seconds_42'], lambda s: f'{s:.3f}')} | {_num(entry['tokens_per_s_42'])} | "
                         f"{_gib(p.get('training_peak'))} | "
                         f"{_num(p.get('training_flops_per_step') and p['training_flops_per_step'] / 1e12, '{:.1f}')} |")
    return lines


def _float16(value: dict) -> list[str]:
    return ["", f"{value['steps']} optimizer steps ({value['batch']}) at {value['length']} tokens, "
                f"{value['layers_built']} layers, {value['compute_dtype']} (Trainer fp16: {value['trainer_fp16']}, "
                f"{value['optimizer']}): MEASURED {value['non_finite_losses']} non-finite losses of "
                f"{len(value['losses'])} micro-batches, {value['skipped_steps']} steps skipped by the grad scaler, "
                f"{value['tokens_per_s_built']:.0f} tokens/s with {value['layers_built']} layers "
                f"({_num(value['padding'] and 100 * value['padding'], '{:.0f} %')} padding), peak on the device "
                f"{_gib(value['device_peak_bytes'])}."]


def _inference(value: dict, plan: dict) -> list[str]:
    counts = value.get("layer_counts", [])
    lines = ["", f"Sorted batching of rows of varied lengths up to {value.get('length')} tokens; tokens/s and peak (on "
                 f"the device) MEASURED at "
                 f"{' and '.join(map(str, counts))} layers, EXTRAPOLATED to 42; plan: each weight format's own "
                 "PLANNED inference peak (T4) and PROJECTED tokens/s (`arena plan`, one GPU).", "",
             "| profile | weights | dtype | " + " | ".join(f"tokens/s, {c} layers" for c in counts) +
             " | tokens/s, 42 (extrapolated) | peak, 42 (extrapolated) | non-finite rows | plan peak (T4) | "
             "plan tokens/s (H100) | plan tokens/s (T4) |",
             "|---|---|---|" + "---|" * len(counts) + "---|---|---|---|---|---|"]
    for entry in value.get("runs", {}).values():
        by = entry.get("by_layers", {})
        p = plan.get(entry["quantization"], {})
        bad = sum(v["non_finite_rows"] for v in by.values())
        lines.append(f"| {entry['profile']} | {entry['quantization']} | {entry.get('compute_dtype', '-')} | "
                     + " | ".join(_num(by.get(str(c), {}).get("tokens_per_s")) for c in counts)
                     + f" | {_num(entry.get('tokens_per_s_42'))} | {_fit(entry.get('peak_bytes_42'), _gib)} | {bad} | "
                     f"{_gib(p.get('inference_peak_t4'))} | {_num(p.get('tokens_per_s_h100'))} | "
                     f"{_num(p.get('tokens_per_s_t4'))} |")
    return lines


def _small(value: dict) -> list[str]:
    text = (f"{value['model']}: trained on {value['device']} in {value['train_compute_dtype']} "
            f"({value['train_wall_seconds']:.0f} s, validation log loss {value['val_log_loss']:.4f})")
    if "logits_max_abs_gap_vs_cpu" in value:
        text += (f"; logits on {value['device']} ({value['device_compute_dtype']}, finite: "
                 f"{value['device_logits_finite']}) vs CPU: max gap {value['logits_max_abs_gap_vs_cpu']:.2e}")
    return ["", text + "."]


def _memory(environment: dict) -> list[str]:
    if "t4_total_bytes" not in environment:
        return []
    return [f"Memory: a T4 has {_gib(environment['t4_total_bytes'])} in all; this GPU had "
            f"{environment['outside_allocator_bytes'] / 2**20:.0f} MiB outside torch's allocator at the start (CUDA "
            f"context, cuBLAS workspace), so the allocator was capped at {_gib(environment['allocator_cap_bytes'])} "
            "(torch.cuda.set_per_process_memory_fraction caps the allocator alone). Peaks on the device are the "
            "allocator's peak plus what was outside it after the unit (context, workspaces, paged optimizer state): "
            "what the T4's total must hold.", ""]


def _time(results: dict) -> list[str]:
    units = results.get("units", [])
    if not units:
        return []
    meta = results["meta"]
    limit = f"Limit {meta['limit_s']:g} s" if meta.get("limit_s") else "No limit"
    lines = ["## time", "", f"{limit} from the process's start (imports: {meta.get('started_after_s', '-')} s); total "
                            f"{meta.get('seconds', 'running')} s. Each "
                            "unit's projection (benchmarks/gpu_time.py) against what it took; a unit whose projection "
                            "did not fit in the time left was skipped.", "",
             "| unit | projected s | started at s | took s | |", "|---|---|---|---|---|"]
    for u in units:
        note = u.get("skipped") and f"skipped: {u['skipped']}" or u.get("error") and f"failed: {u['error']}" or ""
        lines.append(f"| {u['step']}: {u['name']} | {u['projected_s']} | {u['start_s']} | "
                     f"{u.get('seconds', '-')} | {note} |")
    return lines + [""]


def render(results: dict) -> str:
    meta, steps = results["meta"], results["steps"]
    plan = steps.get("plan", {})
    lines = [f"# GPU measurement ({'tiny smoke test: numbers mean nothing' if meta['tiny'] else meta.get('gpu', '')})",
             "", f"`{meta['command']}` at {meta['started']}.", "",
             "The 9B figures come from the published Gemma-2 9B architecture (exact layer shapes, random weights) "
             "built at two layer counts; MEASURED figures are of those builds, 42-layer figures are EXTRAPOLATED "
             "from them (per layer + one-off), plan figures are PLANNED/PROJECTED by `arena plan` without weights. "
             "Random weights say nothing of float16 overflow with real weights.", "",
             *_memory(steps.get("environment", {}))]
    renderers = {"training": lambda v: _training(v, plan.get("training", {})), "float16 training": _float16,
                 "inference": lambda v: _inference(v, plan.get("inference", {})), "small model": _small}
    for name, value in steps.items():
        lines.append(f"## {name} ({value.get('seconds', 'running')} s)")
        body = {k: v for k, v in value.items() if k not in ("seconds", "error", "traceback")}
        if name in renderers and body:
            try:
                lines += renderers[name](body)
            except KeyError:  # a step cut off before its first whole sub-result: its raw results
                lines += ["", "```", json.dumps(body, indent=1, default=str), "```"]
        elif name != "plan":
            lines += ["", "```", json.dumps(body, indent=1, default=str), "```"]
        if "error" in value:
            lines += ["", f"failed: `{value['error']}`"]
        lines.append("")
    return "\n".join(lines + _time(results))
