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
        "",
    ]
    return lines
