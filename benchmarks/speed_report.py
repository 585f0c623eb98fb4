"""The report's speed and full-size GPU sections, from results["speed"] and results["gpu_recipe"] only."""

from __future__ import annotations

from benchmarks.text import adapter_summary, fmt_s, md_table, pct, processor


def _padded_ratio(p: dict) -> str:
    fixed, dyn = p["fixed_slots"] - p["real_tokens"], p["sorted_slots"] - p["real_tokens"]
    if fixed == 0:
        return "no padding either way"
    if dyn == 0:
        return f"{fixed} padded tokens avoided (all)"
    return f"{fixed / dyn:.1f}x fewer padded tokens"


def _sorted_vs_fixed_table(n: int, t: dict, slots_label: str, padding_rows: list[list]) -> str:
    """Rows/s, median time, padding and token slots of t["sorted"] vs t["fixed"] on the same n rows."""
    sorted_s, fixed_s, p = t["sorted"]["median_s"], t["fixed"]["median_s"], t["padding"]
    return md_table(["", "sorted dynamic", f"fixed {t['max_length']}", "ratio (sorted / fixed)"], [
        ["rows/s (median)", f"{n / sorted_s:.2f}", f"{n / fixed_s:.2f}", f"{fixed_s / sorted_s:.2f}x"],
        ["median time for the rows", fmt_s(sorted_s), fmt_s(fixed_s), f"{sorted_s / fixed_s:.2f}x"],
        *padding_rows,
        [slots_label, str(p["sorted_slots"]), str(p["fixed_slots"]), f"{p['sorted_slots'] / p['fixed_slots']:.2f}x"],
    ])


def _padding_row(label: str, p: dict) -> list:
    return [label, pct(p["sorted_padding_fraction"]), pct(p["fixed_padding_fraction"]), _padded_ratio(p)]


def _logit_diff(t: dict) -> str:
    return f"max abs logit difference {t['max_abs_logit_diff_sorted_vs_fixed']:.2g}"


def _agreement(t: dict) -> str:
    same = t["max_abs_logit_diff_sorted_vs_fixed"] < 1e-3
    return f"{'The two agree' if same else '**The two differ**'}: {_logit_diff(t)}"


def long_table(results: dict) -> list[str]:
    """The timed sorted-vs-fixed comparison at a longer window, when it ran."""
    s, gpu = results["speed"], results["gpu_recipe"]
    lc = s.get("long")
    if not lc:
        return []
    g = gpu["config"]
    return ["", f"At the benchmarked window ({s['max_length']}) {pct(s['truncated_share_all_held_out'], 0)} of the "
            f"held-out rows fill max_length, which bounds what sorting can save there. The same {s['rows']} rows at max_length {lc['max_length']} (a longer window; the GPU "
            f"recipe's {g['prompt']['max_length']} and {g['infer']['max_length']} (`{gpu['file']}`) are not timed "
            f"here, their token-slot savings are in the next table; batches of at most {lc['max_batch_tokens']} "
            f"tokens, fixed: {lc['fixed_batch_size']} rows per batch; {_logit_diff(lc)}):", "",
            _sorted_vs_fixed_table(s["rows"], lc, "token slots processed",
                                   [_padding_row("padded share of token slots", lc["padding"])])]


def repeats(times: list[float]) -> str:
    """Every timed repeat, so that a ratio of medians shows the noise behind it."""
    return ", ".join(f"{t:.1f}" for t in times) + " s"


def speed_tables(results: dict) -> list[str]:
    s, cfg = results["speed"], results["config"]
    n, fn, budget = s["rows"], s["functions"], s["padding_budget"]
    out = ["### Sorted dynamic batching vs fixed padding", "",
           f"Sorted: `{fn['sorted']}` (rows sorted by length, each batch padded to its longest row, at most "
           f"{s['max_batch_tokens']} tokens and {s['max_batch_size']} rows; batch sizes {s['sorted_batch_sizes']}). "
           f"Fixed: every row padded to max_length {s['max_length']} in input order, {s['fixed_batch_size']} "
           f"rows per batch (`{fn['fixed']}`). {_agreement(s)}.", "",
           _sorted_vs_fixed_table(n, s, "token slots processed (timed rows)", [
               _padding_row(f"padded share of token slots ({n} timed rows)", s["padding"]),
               _padding_row(f"padded share of token slots (all {s['held_out_rows']} held-out rows)",
                            s["padding_all_held_out"])]),
           *long_table(results),
           "", "How much padding sorted batching saves depends on how many rows fill the window. Over all "
           f"{s['held_out_rows']} held-out rows, by max_length (tokenizer of `{cfg['model']['path']}`, "
           f"`{cfg['model']['family']}` prompt format; token counts only, not timed; batches of at most "
           f"max({budget['floor_tokens']}, {budget['rows_at_max_length']} x max_length) tokens and "
           f"{budget['max_batch_size']} rows):", "",
           md_table(["max_length", "median row (tokens)", "rows at max_length (truncated)", "padded share, sorted",
                     "padded share, fixed", "token slots fixed / sorted"],
                    [[r["max_length"], f"{r['median_tokens']:.0f}", pct(r["truncated_share"], 0),
                      pct(r["sorted_padding_fraction"]), pct(r["fixed_padding_fraction"]),
                      f"{r['fixed_slots'] / r['sorted_slots']:.2f}x"] for r in s["padding_by_length"]]),
           "", "### Cost of swap TTA", "",
           f"The plain A/B pass (`{fn['sorted']}`, as timed above) against both passes of swap TTA (A/B, then B/A "
           f"with the {'probabilities' if s['tta_average'] == 'prob' else 'logits'} averaged back, as `{fn['tta']}` "
           "does); rows tokenised beforehand in both.", "",
           md_table(["", "plain", "swap TTA", "ratio (TTA / plain)"], [
               ["median time", fmt_s(s["plain"]["median_s"]), fmt_s(s["tta"]["median_s"]),
                f"{s['tta']['median_s'] / s['plain']['median_s']:.2f}x"],
               ["rows/s", f"{n / s['plain']['median_s']:.2f}", f"{n / s['tta']['median_s']:.2f}", ""],
               ["all repeats", repeats(s["plain"]["times_s"]), repeats(s["tta"]["times_s"]), ""],
           ])]
    return out + quantization_table(results)


def quantization_table(results: dict) -> list[str]:
    s = results["speed"]
    n, trained = s["rows"], s["trained_quantization"]
    bnb = results["environment"]["versions"].get("bitsandbytes")
    others = [q for q in s["quantization"] if q != trained]
    rows = []
    base = s["quantization"][trained]["median_s"]
    for q, v in s["quantization"].items():
        if "error" in v:
            rows.append([q, "failed", "-", "-", "-", "-", v["error"]])
            continue
        rows.append([q, f"{n / v['median_s']:.2f}", f"{base / v['median_s']:.2f}x", fmt_s(v["load_s"]),
                     f"{v['log_loss']:.4f}", f"{v['max_prob_diff_vs_trained']:.3f}",
                     repeats(v["times_s"])])
    return ["", f"### Quantization at inference (bitsandbytes {bnb} on {processor(results)})", "",
            f"The same trained adapter loaded over the base model quantized as trained ({trained}) and as "
            + " and ".join(f"`{q}`" for q in others) + f" (`none`: {results['runtime']['dtype']} weights), timed with "
            "sorted batching on the same rows. Log loss on the timed rows shows whether the predictions change.", "",
            md_table(["weights", "rows/s (median)", f"speed vs {trained}", "load time", f"log loss ({n} rows)",
                      f"max prob. diff vs {trained}", "all repeats"], rows)]


def gpu_section(results: dict) -> list[str]:
    gpu, dev = results["gpu_recipe"], results["environment"]["device"]
    g = gpu["config"]
    recipe = (f"`{gpu['file']}`: `{g['model']['path']}`, {adapter_summary(g)}, prompt.max_length {g['prompt']['max_length']}, "
              f"infer.max_length {g['infer']['max_length']}")
    return [
        "## 3. The full-size GPU path: not measured by this command",
        "",
        (f"This benchmark ran without a GPU, so the full-size path — {recipe} — was **not measured**. "
         if not dev["gpu"] else
         f"The speed part above ran on {dev['gpu']} with the benchmarked model; the full-size path — {recipe} — "
         "was **not measured**. ")
        + "None of the numbers above transfer to it: with another model size, window and device, the relative costs "
        "of padding, TTA and quantized weights differ. To measure it, on a GPU machine with the base weights in a "
        "local folder:",
        "",
        "```bash",
        f"arena train --config {gpu['file']} --set model.path=/path/to/base-model \\",
        "    --set data.train=data/train.csv        # the run's summary: train_examples_per_second, val log loss",
        "arena predict --run runs/<run> --data data/train.csv --tta \\",
        "    --set infer.quantization=int8          # compare time and log loss with the recipe's "
        + g["model"]["quantization"],
        "```",
        "",
        f"and the speed part of this benchmark runs unchanged there (`{results['speed']['functions']['speed']}` "
        "uses whatever device the model loads on).",
    ]
