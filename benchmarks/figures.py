"""The report's two PNGs, drawn from a results dict only: log loss by method, padding and throughput."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_quality(results: dict, path: Path) -> None:
    plt = _pyplot()
    q = results["quality"]
    held = q["held-out"]
    methods = results["methods"]
    groups = [("all held-out", held["all"])] + [(k, v) for k, v in held.items() if k != "all"]
    groups += [(f"{name} (side set)", v["all"]) for name, v in q.items() if name != "held-out"]
    fig, ax = plt.subplots(figsize=(9, 1.5 + 0.18 * len(methods) * max(2, len(groups))))
    height = 0.8 / len(groups)
    y = np.arange(len(methods))
    for g, (label, scores) in enumerate(groups):
        ax.barh(y + g * height - 0.4 + height / 2, [scores[m["id"]]["log_loss"] for m in methods], height=height,
                label=label)
    ax.axvline(held["all"]["uniform"]["log_loss"], color="grey", linestyle=":", label="uniform")
    ax.set_yticks(y)
    ax.set_yticklabels([m["label"].replace(" (its head", "\n(its head") for m in methods], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("log loss (lower is better)")
    ax.set_title("Held-out log loss by method" + (" [--quick: meaningless sizes]" if results["quick"] else ""))
    # Below the axes: inside, it hides the bars of the last methods.
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)


def plot_speed(results: dict, path: Path) -> None:
    plt = _pyplot()
    s = results["speed"]
    dev = results["environment"]["device"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    ax = axes[0]
    by_length = s["padding_by_length"]
    x = np.arange(len(by_length))
    ax.bar(x - 0.2, [r["sorted_padding_fraction"] for r in by_length], 0.4, label="sorted dynamic batching")
    ax.bar(x + 0.2, [r["fixed_padding_fraction"] for r in by_length], 0.4, label="fixed: pad to max_length")
    ax.set_xticks(x)
    ax.set_xticklabels([str(r["max_length"]) for r in by_length])
    ax.set_xlabel(f"max_length (all {s['held_out_rows']} held-out rows)")
    ax.set_ylabel("padded share of token slots")
    ax.set_title("Padding")
    ax.legend(fontsize=8)
    ax = axes[1]
    rates = [s["rows"] / s[k]["median_s"] for k in ("sorted", "fixed", "plain", "tta")]
    ax.bar(["sorted\nbatching", "fixed\npadding", "predict\nplain", "predict\nswap TTA"], rates,
           color=["C0", "C1", "C2", "C3"])
    ax.set_ylabel("rows / s (median)")
    ax.set_title(f"Batching and TTA ({s['trained_quantization']})")
    ax = axes[2]
    qs = [(k, v) for k, v in s["quantization"].items() if "median_s" in v]
    ax.bar([k for k, _ in qs], [s["rows"] / v["median_s"] for _, v in qs], color="C4")
    ax.set_ylabel("rows / s (median)")
    ax.set_title(f"Quantization at inference ({'GPU' if dev['gpu'] else 'CPU'})")
    fig.suptitle(f"{dev['gpu'] or dev['cpu']}, {dev['cores']} cores" + (" [--quick]" if results["quick"] else ""),
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)

