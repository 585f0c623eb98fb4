"""Ensembles inside one kernel: `arena package --run R1 --run R2 [--weights oof|equal|W1,W2]` bundles several
runs, each with its own config, base model and calibration; the kernel predicts with each in turn (one `arena
predict` process per member, so GPU memory is freed between them) and `arena kernel blend` averages the members'
predictions with the weights stored in the bundle."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from arena import calibration as calibration_mod
from arena import config as config_mod
from arena import data, metrics, predict, task
from arena.embedded import is_embedded
from arena.errors import UserError
from arena.kaggle import bundle as bundle_mod
from arena.kaggle import gates, published
from arena.kaggle import preflight as preflight_mod
from arena.kaggle.credentials import PLACEHOLDER_USER, kaggle_user
from arena.layout import Bundle, CVFolder, EnsembleDataset, RunFolder
from arena.model import check_trained
from arena.writes import atomic_folder, inside_problems, output_problems

WEIGHT_MODES = ("oof", "equal")


def predictions_for_fit(run: RunFolder) -> Path:
    """The held-out predictions a member's weight is fit on: its CV folder's out-of-fold file when the run is a
    fold of `arena cv`, else the run's own validation predictions."""
    cv = CVFolder(run.root.parent)
    return cv.oof_predictions if cv.is_cv() and cv.oof_predictions.is_file() else run.val_predictions


def parse_weights(spec: str | None, runs: int) -> tuple[str, np.ndarray | None, list[str]]:
    """(mode, given weights normalised to sum 1 or None, problems) of --weights oof | equal | W1,W2,..."""
    spec = spec or "oof"
    if spec in WEIGHT_MODES:
        return spec, None, []
    try:
        given = np.array([float(w) for w in spec.split(",")])
    except ValueError:
        return spec, None, [f"--weights {spec}: expected oof, equal or one number per --run (e.g. 0.6,0.4)"]
    if len(given) != runs:
        return spec, None, [f"--weights {spec}: {len(given)} weight(s) for {runs} --run(s)"]
    if not np.isfinite(given).all() or (given < 0).any() or given.sum() <= 0:
        return spec, None, [f"--weights {spec}: weights must be finite, non-negative and not all zero"]
    return "given", given / given.sum(), []


def fit_weights(runs: list[RunFolder], calibrations: list[Path | None], gated: list | None = None) -> dict:
    """Blend weights fit (`arena blend`'s fit) on the members' held-out predictions, each calibrated with the
    calibration the bundle carries for it, i.e. the probabilities the kernel's `arena predict` will write; with
    `gated` members (gates.Gate or None each), on the blend gated as the kernel gates it. Every member's file must
    hold the same row ids with the same labels; UserError naming the runs that disagree."""

    problems, frames = [], []
    for run, cal in zip(runs, calibrations):
        path = predictions_for_fit(run)
        try:
            frame, labels = data.read_probabilities(path, f"held-out predictions of --run {run.root}", truth=True)
        except UserError as exc:
            problems += [p + " (needed by --weights oof; pass --weights equal or W1,W2 instead)" for p in exc.problems]
            continue
        found, values = data.check_frame(frame[labels.prediction_columns], str(path))
        truth = frame.set_index("id")[labels.true_columns].apply(pd.to_numeric, errors="coerce")
        if truth.isna().to_numpy().any():
            found.append(f"{path}: missing or non-numeric true_* label values")
        if found:
            problems += found
            continue
        if cal is not None:
            values = values.copy()
            values[:] = calibration_mod.read(cal).apply(values.to_numpy(dtype=np.float64))
        frames.append((run, path, values, truth))
    if problems:
        raise UserError(problems=problems)
    first_run, first_path, first_values, first_truth = frames[0]
    ids = first_values.index
    for run, path, values, truth in frames[1:]:
        if set(values.index) != set(ids):
            only_first, only_other = len(set(ids) - set(values.index)), len(set(values.index) - set(ids))
            problems.append(f"--run {first_run.root} and --run {run.root} disagree: {first_path} and {path} hold "
                            f"different rows ({only_first} id(s) only in the first, {only_other} only in the "
                            f"second); the blend weights need the same held-out rows for every run")
        elif truth.shape[1] != first_truth.shape[1]:
            problems.append(f"--run {first_run.root} and --run {run.root} disagree: {first_path} and {path} hold "
                            f"different label sets (two and three classes): an ensemble serves one task")
        elif not np.allclose(truth.loc[ids].to_numpy(dtype=float), first_truth.loc[ids].to_numpy(dtype=float)):
            problems.append(f"--run {first_run.root} and --run {run.root} disagree: {first_path} and {path} give "
                            f"the same ids different true labels")
    if problems:
        raise UserError(problems=problems)
    members = [values.loc[ids].to_numpy(dtype=np.float64) for _, _, values, _ in frames]
    truth = first_truth.loc[ids].to_numpy(dtype=float)
    if any(gated or []):
        weights = gates.fit_gated_weights(members, truth, gated)
        scored = gates.gated_scored(members, weights, gated)
        blended = gates.blend(members, weights, scored)
        gated_rows = {"gated_rows": [int(s.sum()) for s in scored]}
    else:
        weights = predict.fit_blend_weights(members, truth)
        blended, gated_rows = sum(w * p for w, p in zip(weights, members)), {}
    return {"weights": [float(w) for w in weights], "rows": len(ids),
            "fit_on": [str(path) for _, path, _, _ in frames],
            "member_log_loss": [metrics.log_loss(truth, p) for p in members],
            "blend_log_loss": metrics.log_loss(truth, blended), **gated_rows}


def package_ensemble(run_dirs, out_dir=None, wheels: bool = True, test_csv=None, calibrate: bool = True,
                     weights: str | None = None, gate: list[str] | None = None) -> Path:
    """`arena package --run R1 --run R2 ... [--gate 2=top:35%]`: one bundle whose kernel predicts with every run in
    turn and blends them; a gated member scores only the rows its gate admits (arena.kaggle.gates). Every input is
    checked (runs trained, base models attachable, weights, gates, held-out rows) before anything is written; the
    bundle is built aside and renamed into place."""
    runs = [RunFolder(r) for r in run_dirs]
    problems = [] if len(runs) > 1 else ["--run: an ensemble needs two or more runs"]
    cfgs = []
    for run in runs:
        try:
            cfgs.append(config_mod.load_run(run))
        except UserError as exc:
            problems += exc.problems  # they name the run folder
            continue
        problems += [f"--run {run.root}: {p}" for p in bundle_mod.base_model_problems(cfgs[-1], run.is_merged())
                                                + check_trained(run)]
    tasks = [task.of_config(cfg) for cfg in cfgs]
    problems += [f"--run {run.root}: its task is {t.describe}, and {tasks[0].describe} for --run {runs[0].root}: an "
                 f"ensemble serves one task" for run, t in zip(runs, tasks) if t != tasks[0]]
    mode, given, weight_problems = parse_weights(weights, len(runs))
    gated, gate_problems = gates.parse_gates(gate, len(runs))
    problems += weight_problems + gate_problems
    out = Path(out_dir) if out_dir else runs[0].new_bundle_path()
    problems += inside_problems(out, [run.adapter for run in runs], "bundle") or output_problems(out, "bundle", folder=True)
    if test_csv is not None and not Path(test_csv).is_file():
        problems.append(f"--test-csv {test_csv}: file not found")
    calibrations = []
    for run in runs if calibrate else ():
        path = calibration_mod.file_for_run(run)
        try:
            if path is not None:
                calibration_mod.read(path)
            calibrations.append(path)
        except UserError as exc:
            problems += exc.problems
    calibrations = calibrations or [None] * len(runs)
    if problems:
        raise UserError(problems=problems)
    if mode == "oof":
        fit = fit_weights(runs, calibrations, gated)
    else:
        fit = {"weights": [float(w) for w in (given if given is not None else np.full(len(runs), 1 / len(runs)))]}
    fit["mode"] = mode

    user = kaggle_user()
    with atomic_folder(out, "bundle") as staging:
        build = Bundle(staging)
        build.dataset.members.mkdir(parents=True)
        members = []
        for index, (run, cal) in enumerate(zip(runs, calibrations)):
            member = build.dataset.member(index)
            member.root.mkdir()
            cfgs[index] = bundle_mod.kernel_config(run, cfgs[index], member.config)
            shutil.copytree(run.adapter, member.adapter)
            if cal is not None:  # the member's own `arena predict` in the kernel applies it, once
                shutil.copy2(cal, member.calibration)
            problems = check_trained(member)
            if problems:
                raise UserError(problems=problems)
            members.append({"folder": str(member.root.relative_to(build.adapter_dataset)), "run": str(run.root),
                            "calibration": None if cal is None else str(cal), "weight": fit["weights"][index],
                            "gate": None if gated[index] is None else gated[index].to_json()})
        bundle_mod.write_json(build.ensemble, {"members": members, "fit": fit, "task": vars(tasks[0])})
        published.keep_local_records(build, [(m, c, bundle_mod.kernel_base_model(c, r.is_merged()))
                                             for m, c, r in zip(build.member_runs(), cfgs, runs)])
        # An embedded member needs the most wheels (the GGUF ones on top of the rest).
        bundle_mod.write_wheelhouse(build, next((c for c in cfgs if is_embedded(c.model.path)), cfgs[0]), wheels)
        build.kernel.mkdir()
        build.kernel_script.write_text(bundle_mod.render_kernel_script(cfgs[0], kernel_members(build, cfgs)),
                                       encoding="utf-8")
        bundle_mod.write_metadata(build, cfgs[0], user)
        pf = preflight_mod.sum_projections([preflight_mod.preflight(member, cfg, test_csv)
                                            for member, cfg in zip(build.member_runs(), cfgs)], [str(r.root) for r in runs])
        bundle_mod.write_json(build.preflight, pf)
    print(format_fit(fit, runs))
    for index, g in enumerate(gated):
        if g is not None:
            print(f"  member {index + 1} ({runs[index].root}) is gated: it scores {g.describe()} of the blend of the "
                  f"members before it" + (f" ({fit['gated_rows'][index]} of {fit['rows']} held-out rows)"
                                           if "gated_rows" in fit else ""))
    print(preflight_mod.format_preflight(pf))
    print(f"ensemble bundle: {out} ({len(runs)} members in {Bundle(out).dataset.members}, blend weights in "
          f"{Bundle(out).ensemble.name})")
    if user == PLACEHOLDER_USER:
        print(f"  kaggle user: {PLACEHOLDER_USER} (placeholder: no Kaggle credentials found; `arena push` fills in yours)")
    print(f"rehearse it offline: arena kernel run-local {out} --input data")
    return out


def kernel_members(bundle: Bundle, cfgs: list) -> list[list]:
    """What the kernel needs per member: [folder inside the adapter dataset, base model path under /kaggle
    ("" for the embedded model), swap TTA, the file its predictions go to]."""
    return [[str(run.root.relative_to(bundle.adapter_dataset)),
             "" if is_embedded(cfg.model.path) else cfg.kaggle.base_model_kernel_path, cfg.infer.tta,
             EnsembleDataset.member_predictions(index)]
            for index, (run, cfg) in enumerate(zip(bundle.member_runs(), cfgs))]


def format_fit(fit: dict, runs: list[RunFolder]) -> str:
    if fit["mode"] != "oof":
        return "blend weights (" + fit["mode"] + "): " + ", ".join(
            f"{w:.3f} {run.root}" for w, run in zip(fit["weights"], runs))
    lines = [f"blend weights fit on {fit['rows']} held-out rows (calibrated as the kernel will predict):"]
    for w, loss, run in zip(fit["weights"], fit["member_log_loss"], runs):
        lines.append(f"  weight {w:.3f}  log loss {loss:.4f}  {run.root}")
    lines.append(f"  blended log loss {fit['blend_log_loss']:.4f} (best member {min(fit['member_log_loss']):.4f})")
    return "\n".join(lines)


def read_task(dataset: EnsembleDataset) -> task.Task:
    """The task the ensemble's members serve, as `arena package` stored it (bundles made before it: three-way)."""
    try:
        stored = json.loads(dataset.ensemble.read_text(encoding="utf-8")).get("task")
        return task.THREE_WAY if stored is None else task.Task(**stored)
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise UserError(f"{dataset.ensemble}: no task arena reads ({type(exc).__name__}: {exc})") from None


def read_members(dataset: EnsembleDataset) -> tuple[list[float], list]:
    """(weights, gates.Gate or None per member) as `arena package` stored them in ensemble.json."""
    try:
        stored = json.loads(dataset.ensemble.read_text(encoding="utf-8"))["members"]
        weights = [float(m["weight"]) for m in stored]
        gated = [gates.of_json(m.get("gate")) for m in stored]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UserError(f"{dataset.ensemble}: not an ensemble file from `arena package` ({type(exc).__name__}: {exc})") from None
    if not weights or any(not np.isfinite(w) or w < 0 for w in weights) or abs(sum(weights) - 1) > 1e-6:
        raise UserError(f"{dataset.ensemble}: member weights must be non-negative and sum to 1 (got {weights})")
    return weights, gated


def member_probabilities(path, expected: pd.Series, gated: bool, problems: list[str]) -> np.ndarray | None:
    """A member's probabilities in the order of `expected` (ids); a gated member's file holds the rows it scored,
    NaN elsewhere. Its problems (unreadable, bad values, ids) are added to `problems`."""
    try:
        frame, _ = data.read_probabilities(path, "member prediction")
        found, values = data.check_frame(frame, str(path), None if gated else expected)
    except UserError as exc:
        found, values = exc.problems, None
    if values is not None and gated:
        extra = sorted(set(values.index.astype(str)) - set(expected))
        if extra:
            found.append(f"{path}: unexpected ids: {data.ids_text(extra)}")
    problems += found
    return None if found else values.reindex(list(expected)).to_numpy(dtype=np.float64)


def blend_members(dataset_dir, pred_paths: list, data_path, out_path, left_out=()) -> Path:
    """`arena kernel blend`: the ensemble's submission, the members' predictions (one `arena predict` output per
    member, in order, each already calibrated by its own predict) averaged with the bundle's weights; a gated
    member's file holds the rows it scored, and each row averages the members that scored it, weights renormalised
    (gates.blend). Members in `left_out` (their predict failed in the kernel) are left out and the others' weights
    scaled up to sum to 1, with a warning; leaving out every member, or a row no member scored, is an error, never
    a prior submission."""

    weights, gated = read_members(EnsembleDataset(dataset_dir))
    problems = output_problems(out_path, "blended submission")
    if len(pred_paths) != len(weights):
        problems.append(f"--preds: {len(pred_paths)} file(s) for {len(weights)} ensemble members")
    left_out = sorted({int(i) for i in left_out})
    if any(not 0 <= i < len(weights) for i in left_out):
        problems.append(f"--left-out {left_out}: member indices are 0 to {len(weights) - 1}")
    kept = [i for i in range(len(weights)) if i not in left_out]
    if not kept:
        problems.append(f"--left-out {left_out}: every ensemble member is left out; there is nothing to blend")
    kept_weight = sum(weights[i] for i in kept)
    if kept and kept_weight <= 0:
        problems.append(f"--left-out {left_out}: the members left have weight 0 in {EnsembleDataset(dataset_dir).ensemble}")
    the_task = read_task(EnsembleDataset(dataset_dir))
    # as each member's predict read it: odd rows repaired
    expected = data.load_test(data_path, the_task)["id"].astype(str)
    probs = {i: member_probabilities(pred_paths[i], expected, gated[i] is not None, problems)
             for i in (kept if len(pred_paths) == len(weights) else ())}
    if problems:
        raise UserError(problems=problems)
    used = [weights[i] / kept_weight for i in kept]
    if left_out:
        print(f"WARNING: ensemble member(s) {', '.join(map(str, left_out))} failed and are LEFT OUT of the blend: "
              f"members {', '.join(map(str, kept))} reweighted from {', '.join(f'{weights[i]:.3f}' for i in kept)} "
              f"to {', '.join(f'{w:.3f}' for w in used)}", flush=True)
    scored = [np.isfinite(probs[i]).all(axis=1) for i in kept]
    for i, rows in zip(kept, scored):
        if gated[i] is not None:
            print(f"member {i} (gated: {gated[i].describe()}) scored {int(rows.sum())} of {len(expected)} rows; the "
                  f"others take the blend of the members before it", flush=True)
    blended = gates.blend([probs[i] for i in kept], used, scored)
    missing = ~np.isfinite(blended).all(axis=1)
    if missing.any():
        raise UserError(f"no ensemble member scored {int(missing.sum())} row(s) ({data.ids_text(expected[missing])}): "
                        f"no submission")
    path = predict.write_submission(predict.prediction_frame(expected, blended), expected, out_path, the_task)
    print(f"blended {len(kept)} members{f' (of {len(weights)})' if left_out else ''} with weights "
          f"{', '.join(f'{w:.3f}' for w in used)}: wrote {path}")
    return path
