"""Formatting for the report's sections: markdown tables, durations, percentages, layer ranges, labels, adapters."""

from __future__ import annotations

import math


def md_table(headers: list[str], rows: list[list]) -> str:
    def cell(v):
        if v is None:
            return "-"
        if isinstance(v, float):
            return "-" if math.isnan(v) else f"{v:.4f}"
        return str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def fmt_s(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 1:
        return f"{s:.2g} s"
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min"


def pct(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}%}"


def ranges(values: list[int] | None) -> str:
    """[9, 10, 11, 14] -> "9-11, 14"."""
    if not values:
        return "all"
    values = sorted(values)
    spans, start = [], values[0]
    for prev, cur in zip(values, values[1:] + [None]):
        if cur is None or cur != prev + 1:
            spans.append(str(start) if start == prev else f"{start}-{prev}")
            start = cur
    return ", ".join(spans)


def labels(results: dict) -> dict[str, str]:
    return {m["id"]: m["label"] for m in results["methods"]}


def processor(results: dict) -> str:
    return "GPU" if results["environment"]["device"]["gpu"] else "CPU"



def adapter_summary(cfg: dict) -> str:
    """A config's quantization and adapter: "nf4 + LoRA r16 (alpha 32) on q_proj, k_proj of layers 9-17"."""
    p = cfg["peft"]
    adapter = (f"LoRA r{p['r']} (alpha {p['alpha']}) on {', '.join(p['target_modules'])} of layers "
               f"{ranges(p['layers_to_transform'])}" if p["method"] == "lora" else
               f"prompt tuning ({p['num_virtual_tokens']} virtual tokens)")
    return f"{cfg['model']['quantization']} + {adapter}"
