"""The report's variants table and what it says, rendered from results["variants"] alone."""

from __future__ import annotations

from benchmarks.text import fmt_s, md_table


def _difference(d: dict) -> str:
    return f"{d['mean']:+.4f} ± {d['se']:.4f}"


def variants_section(results: dict, main_scores: dict) -> list[str]:
    """The table (held-out log loss, accuracy, difference from the default on the same rows, train time) and a
    sentence per variant; nothing when the results have no variants (older runs). `main_scores`: the quality
    table's scores on the main held-out set, by method."""
    v = results.get("variants")
    if v is None:
        return []
    by_id = {row["id"]: row for row in v["variants"]}
    labels = v["labels"]
    rows = [[labels[r["id"]], r["log_loss"], r["accuracy"],
             _difference(r["vs_default"]) if "vs_default" in r else "-",
             r["vs_default"]["verdict"] if "vs_default" in r else "-", fmt_s(r["train_seconds"])]
            for r in v["variants"]]
    default, paired, distilled = by_id["default"], by_id["paired"], by_id["distilled"]
    average, merged = by_id["fold_average"], by_id["fold_merged"]
    teacher = distilled["teacher"]
    q = main_scores
    teacher_side = "weaker than" if q["length_lr"]["log_loss"] > q["model_tta"]["log_loss"] else "at least as good as"
    k = v["standard_errors"]
    lines = [
        "### Variants: the techniques that won the competition, at this size", "",
        f"Each variant trains on the same training file as the default model and is scored with swap TTA on the "
        f"same {v['rows']} main held-out rows. *vs default* is the mean per-row log loss difference (variant minus "
        f"default, on the same rows) ± its standard error; a variant *helps* or *hurts* when that mean is more than "
        f"{k:g} standard errors from zero, else there is *no measurable difference*.", "",
        md_table(["variant", "log loss", "accuracy", "vs default", "verdict", "train time"], rows), "",
        f"- *{labels['paired']}*: {paired['steps']} optimizer steps like the default's {default['steps']}, each batch "
        f"half rows and half their swapped twins, so it saw {paired['rows_seen']} distinct rows in both orders where "
        f"the default saw {default['train_rows']} in one: {paired['vs_default']['verdict']} "
        f"({_difference(paired['vs_default'])}).",
        f"- *{labels['distilled']}*: the teacher is the {teacher['what']} ({teacher['folds']} folds grouped by "
        f"prompt over the {teacher['rows']} rows of the training file; out-of-fold log loss "
        f"{teacher['oof_log_loss']:.4f}), covering {teacher['covered']} of the student's {distilled['train_rows']} "
        f"training rows, at `train.distill_weight` {teacher['weight']:g} and temperature {teacher['temperature']:g}. "
        f"The same regression scores {q['length_lr']['log_loss']:.4f} on the held-out rows against the default "
        f"model's {q['model_tta']['log_loss']:.4f}: a teacher {teacher_side} the student, whose head already starts "
        f"from a length regression. Result: {distilled['vs_default']['verdict']} "
        f"({_difference(distilled['vs_default'])}).",
        f"- *{labels['fold_average']}* and *{labels['fold_merged']}*: the default run (fold {default['fold']} held out "
        f"for checkpoint selection) and a second run holding out fold {average['fold']} (alone it scores "
        f"{average['fold1_log_loss']:.4f}). "
        f"Averaging their predictions: {average['vs_default']['verdict']} against the default "
        f"({_difference(average['vs_default'])}); merging both adapters into the base weights and predicting with "
        f"one model: {merged['vs_default']['verdict']} ({_difference(merged['vs_default'])}). The merged model's "
        f"predictions differ from the averaged ones by {merged['mean_abs_diff_vs_average']:.4f} on average "
        f"(total variation), {_difference(merged['vs_average'])} in log loss "
        f"({merged['vs_average']['verdict']} against averaging), at the cost of one model's inference instead of "
        f"two; the merge itself took {fmt_s(merged['merge_seconds'])}.",
    ]
    if "self_distilled" in by_id:  # results written before these variants existed render without them
        selfd, middle = by_id["self_distilled"], by_id["middle"]
        lines += [
            f"- *{labels['self_distilled']}*: the default model's swap-TTA predictions of its own training file (rows "
            f"it was trained on, so the teacher is in-sample), covering {selfd['covered']} of the student's "
            f"{selfd['train_rows']} training rows at `train.distill_weight` {selfd['weight']:g}: "
            f"{selfd['vs_default']['verdict']} ({_difference(selfd['vs_default'])}).",
            f"- *{labels['middle']}*: each over-long part keeps its head and its tail, the cut marked, in training and "
            f"prediction: {middle['vs_default']['verdict']} ({_difference(middle['vs_default'])}).",
        ]
    return [*lines, "", *budgets_section(v)]


def budgets_section(v: dict) -> list[str]:
    """Swap TTA's row order and a gated second model at equal budgets (results written before: nothing)."""
    b = v.get("budgets")
    if b is None:
        return []
    k = v["standard_errors"]
    orders = [[f"{s['share']:.0%} ({s['rows']} rows)", _difference(s["shortest_vs_plain"]),
               _difference(s["uncertain_vs_plain"]), _difference(s["vs_shortest"]), s["vs_shortest"]["verdict"]]
              for s in b["tta_order"]["shares"]]
    gated = [[f"{s['share']:.0%} ({s['rows']} rows)", _difference(s["vs_first"]), _difference(s["vs_equal_time"]),
              s["vs_equal_time"]["verdict"], _difference(s["vs_full_ensemble"]), s["vs_full_ensemble"]["verdict"]]
             for s in b["gated"]["shares"]]
    return [
        "### Where the inference time goes: equal budgets", "",
        f"From the predictions above, no model run again, on the same {v['rows']} rows; each difference is a paired "
        f"per-row log loss difference ± its standard error, a verdict beyond {k:g} of them. **Swap TTA's order** "
        f"(`infer.tta_order`): the default model's swapped order on a share of the rows, the least certain first "
        f"(`uncertain`) or the shortest first (`shortest`, the most rows per second), each against the plain order "
        f"alone; swap TTA on every row moves it {_difference(b['tta_order']['every_row_vs_plain'])}.", "",
        md_table(["rows swapped", "shortest vs plain", "uncertain vs plain", "uncertain vs shortest", "verdict"],
                 orders), "",
        f"**A gated second model** (`arena package --gate MEMBER=top:K%`): the second fold model on the K% of rows where "
        f"the default model is least certain, averaged with it there, against the default alone, against the second "
        f"model on as many rows drawn at random (equal time) and against both on every row (the full ensemble, "
        f"{_difference(b['gated']['full_vs_first'])} against the default, at the second model's whole pass).", "",
        md_table(["gate", "vs default", "vs equal time at random", "verdict", "vs full ensemble", "verdict"], gated),
        "",
    ]
