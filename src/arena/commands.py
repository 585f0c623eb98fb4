"""The `arena` subcommands, one function each: read the parsed arguments, call the modules. Heavy imports stay
inside each command so that `arena --help` is fast."""

from __future__ import annotations

import sys


def _load_config(args):
    from arena import config

    return config.load(args.config, args.overrides)


# ---- data -------------------------------------------------------------------------------------------

def cmd_data_validate(args) -> int:
    from arena import data

    problems = []
    for path in args.paths:  # every file is read, and every problem of every file is reported
        try:
            print(data.validate(path))
        except data.DataError as exc:
            problems += exc.problems
    if problems:
        raise data.DataError(problems=problems)
    return 0


def cmd_data_sample(args) -> int:
    from arena import data, task
    from arena.writes import output_problems

    problems = output_problems(args.out, "sample")
    if problems:
        raise data.DataError(problems=problems)
    the_task = task.of_config(_load_config(args))
    df = data.generate_sample(rows=args.rows, seed=args.seed, task=the_task)
    data.write_csv(df, args.out)
    print(f"wrote {len(df)} rows ({the_task.labels}) to {args.out}")
    return 0


def cmd_data_download(args) -> int:
    from arena import config
    from arena.kaggle import remote

    remote.download_competition_data(args.out, config.load(args.config, args.overrides).kaggle.competition)
    return 0


# ---- score ------------------------------------------------------------------------------------------

def cmd_score(args) -> int:
    from arena import data

    result = data.score_files(args.pred, args.truth)
    print(data.format_score(result))
    return 0


# ---- train / cv -------------------------------------------------------------------------------------

def cmd_train(args) -> int:
    from arena import config, train
    from arena.errors import UserError

    if args.max_wall_hours is not None:
        args.overrides = [*args.overrides, f"train.max_wall_hours={args.max_wall_hours}"]
    cfg = _load_config(args)
    resume = None if args.resume is None else train.Resume(args.resume, recipe_named=args.config is not None,
                                                            overrides=tuple(args.overrides),
                                                            accept_changes=args.accept_changes)
    if args.accept_changes and resume is None:
        raise UserError("--accept-changes: only with --resume")
    train.train(cfg, resume=resume, origin=config.origin(args.config, args.overrides))
    return 0


def _folds(only: str | None) -> list[int] | None:
    from arena.errors import UserError

    try:
        return [int(x) for x in only.split(",")] if only else None
    except ValueError:
        raise UserError(f"--only {only}: expected comma-separated fold numbers, e.g. 0,1") from None


def cmd_cv(args) -> int:
    from arena import config, train

    cfg = _load_config(args)
    folds = args.folds if args.folds is not None or args.resume else 5
    train.cross_validate(cfg, folds=folds, only=_folds(args.only), origin=config.origin(args.config, args.overrides),
                         resume=args.resume)
    return 0


# ---- predict / blend --------------------------------------------------------------------------------

def cmd_predict(args) -> int:
    from arena import predict
    from arena.inference import soft_labels

    if args.soft_labels:
        soft_labels.check(args.soft_labels, args.out)
    path = predict.predict_file(
        run_dir=args.run, data_path=args.data, out_path=args.out, tta=args.tta, overrides=args.overrides,
        base_model=args.base_model, calibrate=args.calibration, deadline=args.deadline, budget_hours=args.budget_hours,
        kernel_start=args.kernel_start, logits_file=args.logits, progress_dir=args.progress, fill_only=args.fill_only,
    )
    if args.soft_labels and path is not None:  # None: another process of `accelerate launch`
        soft_labels.write(args.soft_labels, args.data, path)
    return 0


def cmd_blend(args) -> int:
    from arena import predict

    predict.blend_files(args.oof, args.preds, args.out, calibrate=args.calibration)
    return 0


# ---- tracking: calibrate ----------------------------------------------------------------------------

def cmd_calibrate(args) -> int:
    from arena import calibration

    calibration.calibrate(run_dir=args.run, oof=args.oof, folds=args.folds, seed=args.seed)
    return 0


# ---- tracking: runs, sweep --------------------------------------------------------------------------

def cmd_runs(args) -> int:
    import re

    from arena import config, task, tracking

    if args.lb:
        folder = tracking.find_folder(args.runs_dir, args.lb[0])
        try:
            score = float(args.lb[1])
        except ValueError:
            score = args.lb[1]
        tracking.record_score(folder, score)
        print(f"recorded leaderboard score {score} in {folder.leaderboard}")
    if args.fetch_lb:
        if args.competition is not None and not re.fullmatch(config.SLUG_PATTERN, args.competition):
            raise config.ConfigError(f"--competition {args.competition}: not a Kaggle competition slug (5-50 "
                                     f"lowercase letters, digits and hyphens), e.g. {task.DEFAULT_COMPETITION}")
        competition = args.competition or config.load(args.config).kaggle.competition
        print("\n".join(tracking.fetch_scores(args.runs_dir, competition)) or "no scored submission names a run here")
    if args.segments is not None:
        return _segments(args)
    rows = tracking.collect(args.runs_dir, folds=not args.no_folds)
    print(tracking.render(tracking.table(rows, args.sort), args.format), end="")
    for line in tracking.damaged_files(rows):
        print(f"warning: {line}", file=sys.stderr)
    return 0


def _segments(args) -> int:
    """`arena runs --segments`: the runs named, else every finished run and CV folder in the table's order."""
    from arena import segments, tracking

    names = args.segments
    if not names:
        rows = tracking.collect(args.runs_dir, folds=not args.no_folds)
        finished = {r["run"] for r in rows if r["kind"] == "run" or r["kind"][3:4].isdigit()}  # "cv 2/3"
        names = [name for name in tracking.table(rows, args.sort)["run"] if name in finished]
    folders = [(name, tracking.find_folder(args.runs_dir, name)) for name in names]
    text, notes = segments.report(folders, args.format, strict=bool(args.segments))
    print(text, end="" if text.endswith("\n") or not text else "\n")
    for line in notes:
        print(f"note: {line}", file=sys.stderr)
    return 0


def cmd_sweep(args) -> int:
    from arena import sweep

    sweep.run_sweep(args.configs, args.grid, args.overrides, cv=args.cv, only=_folds(args.only), name=args.name)
    return 0


def cmd_merge(args) -> int:
    from arena import merge

    merge.merge_runs(args.run, args.out)
    return 0


def cmd_plan(args) -> int:
    from arena import planner
    from arena.errors import UserError
    from arena.kaggle import preflight, training_time

    cfg = _load_config(args)
    gpu, default_gpus = planner.GPUS_OF_GPU[args.gpu]
    if args.hardware:
        if args.hardware not in planner.PROFILE_GPUS:
            raise UserError(f"--hardware {args.hardware}: a plan is for a GPU ({', '.join(planner.PROFILE_GPUS)})")
        gpu, default_gpus = planner.PROFILE_GPUS[args.hardware]
    gpus = args.gpus if args.gpus is not None else default_gpus
    print(planner.format_memory_plan(planner.memory_plan(cfg, gpu, gpus, sharded=args.fsdp)))
    tokenizer, note = planner.tokenizer_for(cfg)
    print(training_time.format_training(training_time.project_training(cfg, tokenizer, note, gpu, gpus, args.test_csv)))
    print(preflight.format_preflight(preflight.project(cfg, tokenizer, note, args.test_csv, gpu, gpus)))
    return 0


# ---- kaggle -----------------------------------------------------------------------------------------

def cmd_package(args) -> int:
    from arena.kaggle import bundle, ensemble

    if len(args.run) > 1 or args.weights is not None or args.gate:
        ensemble.package_ensemble(run_dirs=args.run, out_dir=args.out, wheels=not args.no_wheels,
                                  test_csv=args.test_csv, calibrate=args.calibration, weights=args.weights,
                                  gate=args.gate)
        return 0
    bundle.package(run_dir=args.run[0], out_dir=args.out, wheels=not args.no_wheels, test_csv=args.test_csv,
                   calibrate=args.calibration)
    return 0


def cmd_kernel_blend(args) -> int:
    from arena.kaggle import ensemble

    ensemble.blend_members(args.dataset, args.preds, args.data, args.out, left_out=args.left_out)
    return 0


def cmd_kernel_predict(args) -> int:
    import json

    from arena.kaggle import kernel_predict

    members = json.loads(args.members) if args.members else None
    kernel_predict.kernel_predict(args.dataset, args.data, args.out, args.kernel_start, args.gpus, args.base_model,
                                  args.tta, members)
    return 0


def cmd_kernel_run_local(args) -> int:
    from arena.kaggle import rehearsal

    processes = args.processes
    if processes is None:  # one per GPU of the profile (t4x2: 2, as the kernel launches on Kaggle)
        from arena import hardware

        processes = hardware.current().processes() if args.hardware else 1
    rehearsal.run_local(bundle_dir=args.bundle, input_dir=args.input, work_dir=args.work, layout=args.layout,
                        processes=processes, previous_output=args.previous_output, base_model=args.base_model,
                        fault=args.fault)
    return 0


def cmd_push(args) -> int:
    from arena.kaggle import push

    push.push(run_dir=args.run, bundle_dir=args.bundle, dry_run=args.dry_run, message=args.message,
              poll=not args.no_poll)
    return 0


def cmd_kaggle_train(args) -> int:
    from arena.kaggle import training

    training.push_training(args.config, args.overrides, resume=args.resume, dry_run=args.dry_run,
                           wheels=not args.no_wheels, out=args.out, message=args.message)
    return 0


def cmd_kaggle_pull(args) -> int:
    from arena.kaggle import pull

    pull.pull(args.kernel, args.version, args.runs_dir)
    return 0
