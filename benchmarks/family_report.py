"""The report's arena-family section, rendered from results["family"] alone: each task's files, every step's exit
status, wall time and what it printed."""

from __future__ import annotations

import re

from benchmarks.text import fmt_s, md_table


def _short(line: str, work: str) -> str:
    """A printed line with the bench's work folder named as such, so that the table stays readable; also where a
    step printed it as an absolute path (the bench records it relative to where it ran)."""
    return re.sub(r"[\w./~-]*" + re.escape(work.rstrip("/")), "<work>", line)


def _data(t: dict, work: str) -> str:
    d = t["data"]
    head = f"`{t['id']}` ({t['task']}; `kaggle.competition={t['competition']}`): "
    if "extra_file" not in d:
        return (head + f"`{d['made_by']}` wrote {d['train_rows']} training rows and {d['test_rows']} test rows in the "
                "competition's form (generated text, synthetic labels: the steps' scores only show that they run).")
    e = t.get("extra") or {}
    line = f" Its report line: `{_short(e['line'], work)}`." if e.get("line") else " It printed no report line."
    return (head + f"{d['train_rows']} rows of the bench's arena-like sources ({', '.join(d['sources'])}) to train "
            f"on, none of them held out nor sharing a prompt with a held-out row; {d['extra_rows']} further such rows "
            f"converted to the `{d['extra_format']}` format of `{d['extra_source']}` (OpenAI message lists, `winner` "
            f"model_a / model_b / tie) as `data.extra`; {d['test_rows']} rows of the main held-out set to predict and "
            f"score.{line}")


def _checks(t: dict) -> str:
    s, parts = t["scores"], []
    if "predict" in s:
        parts.append(f"`arena predict` wrote `{','.join(s['predict']['columns'])}` ({s['predict']['rows']} rows)")
    if "rehearsal" in s:
        r = s["rehearsal"]
        diff = r["max_prob_diff_vs_predict"]
        same = ("are `arena predict`'s exactly" if diff == 0
                else f"differ from `arena predict`'s by at most {diff:.2g}")
        parts.append(f"the kernel's submission (`{','.join(r['columns'])}`, {r['rows']} rows): its probabilities {same}")
    failed = [f"`{x['step']}`" for x in t["steps"] if x["exit"]]
    if failed:
        parts.append("**failed**: " + ", ".join(failed) + " (the table shows what each printed)")
    return f"- `{t['id']}`: " + "; ".join(parts) + "." if parts else ""


def family_section(results: dict) -> list[str]:
    """Nothing when the results have no family stage (older runs)."""
    f = results.get("family")
    if f is None:
        return []
    work = results["work_dir"]
    rows = [[t["id"], x["step"], "-" if x["exit"] is None else x["exit"],
             "-" if x["wall_s"] is None else f"{x['wall_s']:.1f}",
             "<br>".join(_short(line, work) for line in x["printed"])]
            for t in f["tasks"] for x in t["steps"]]
    return [
        "## 4. The arena family through the CLI", "",
        "Two tasks of the arena family, each in `<work>/family/<task>/`, through the commands a user types (`arena "
        "train`, `arena cv --folds " + str(f["sizes"]["cv_folds"]) + "`, `arena predict`, `arena score`, `arena "
        "package --no-wheels`, `arena kernel run-local`), run by `arena.cli.main` in the bench's process with the "
        f"benchmarked model's settings (`{results['config_file']}`"
        + "".join(f"{' with' if i == 0 else ','} `{o}`" for i, o in enumerate(f["overrides"])) + "):", "",
        *(f"- {_data(t, work)}" for t in f["tasks"]), "",
        md_table(["task", "step", "exit", "wall s", "what it printed (its result lines)"], rows), "",
        f"Wall times are of this one run (one measurement each, not medians) on this machine under the load above; the "
        f"stage took {fmt_s(f['wall_seconds'])} in all.", "",
        *(c for c in map(_checks, f["tasks"]) if c), "",
    ]
