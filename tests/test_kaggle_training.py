"""Training on Kaggle: the training bundle and its kernel, the push's dry run, the pull of a kernel's output as a
run (checked, atomic, listed by `arena runs` with its kernel), the session projection, and the two-version
rehearsal (a stop for time, then the next version resumes) whose pulled run packages and passes its inference
rehearsal."""

import importlib.util
import json
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from arena import budget, cli, config, data, embedded, tracking
from arena.errors import UserError
from arena.kaggle import bundle as bundle_mod
from arena.kaggle import pull, rehearsal, remote, training, training_time
from arena.layout import RunFolder
from arena.task import THREE_WAY

LABEL_COLUMNS = THREE_WAY.label_columns

try:  # the loopback Kaggle of issue 22 (tests/fake_kaggle.py): the real kaggle CLI against a fake API
    from tests.fake_kaggle import fake_kaggle_fixture  # noqa: F401
except ImportError:
    fake_kaggle_fixture = None
LOOPBACK = pytest.mark.skipif(fake_kaggle_fixture is None, reason="tests/fake_kaggle.py (issue 22) is not merged")

REAL_CACHE = str(embedded.cache_dir())  # before a fixture moves HOME: the embedded model converts only once


@pytest.fixture
def no_kaggle_calls(monkeypatch):
    """Any kaggle CLI call fails the test (pip, which builds the arena wheel, may run)."""
    real = subprocess.run
    kaggle = remote.kaggle_executable()

    def guarded(cmd, *args, **kwargs):
        if cmd and str(cmd[0]) == kaggle:
            raise AssertionError(f"a kaggle command was run: {cmd}")
        return real(cmd, *args, **kwargs)

    monkeypatch.setattr(subprocess, "run", guarded)


def _files(tmp_path):
    train_csv, extra, teacher = tmp_path / "rows.csv", tmp_path / "more.csv", tmp_path / "teacher.csv"
    df = data.generate_sample(40, seed=3)
    data.write_csv(df, train_csv)
    data.write_csv(data.generate_sample(12, seed=4), extra)
    df[["id", *LABEL_COLUMNS]].to_csv(teacher, index=False)
    return train_csv, extra, teacher


def _cfg(model_dir, train_csv, *overrides, **sections):
    values = {"name": "ktrain", "model": {"path": str(model_dir), "family": "plain"},
              "prompt": {"max_length": 96, "min_tokens": 8}, "infer": {"max_length": 96},
              "data": {"train": str(train_csv), "folds": 4},
              "kaggle": {"base_model_kernel_path": "/kaggle/input/tiny/transformers/default/1",
                         "base_model_source": "someone/tiny/transformers/default/1"}}
    for key, value in sections.items():
        values.setdefault(key, {}).update(value)
    return config.from_dict(values, list(overrides))


def test_the_training_bundle_holds_the_data_the_wheels_and_a_gpu_kernel(tiny_model_dir, tmp_path, no_credentials):
    train_csv, extra, teacher = _files(tmp_path)
    cfg = _cfg(tiny_model_dir, train_csv, data={"extra": [str(extra)], "teacher": [str(teacher)]})
    built = training.build(cfg, tmp_path / "bundle", "me", wheels=False, resume=True)
    assert sorted(p.name for p in built.data.iterdir()) == sorted(
        ["config.yaml", "dataset-metadata.json", "train-0-rows.csv", "extra-1-more.csv", "teacher-2-teacher.csv"])
    assert config.load(built.config).to_dict() == cfg.to_dict()
    assert json.loads((built.data / "dataset-metadata.json").read_text())["id"] == "me/arena-train-data"
    assert json.loads((built.wheels / "dataset-metadata.json").read_text())["id"] == "me/arena-wheels"
    for folder in (built.data, built.wheels):  # the competition's rows and third-party wheels: not public domain
        assert json.loads((folder / "dataset-metadata.json").read_text())["licenses"] == [{"name": "other"}]
    assert [w.name.split("-")[0] for w in built.wheels.glob("*.whl")] == ["arena"]
    meta = json.loads(built.kernel_metadata.read_text())
    assert meta["id"] == "me/arena-train" and meta["code_file"] == "kernel.py"
    assert meta["enable_gpu"] is True and meta["enable_internet"] is False and meta["machine_shape"] == "NvidiaTeslaT4"
    assert meta["competition_sources"] == ["llm-classification-finetuning"]  # the default kaggle.competition
    assert meta["dataset_sources"] == ["me/arena-wheels", "me/arena-train-data"]
    assert meta["model_sources"] == ["someone/tiny/transformers/default/1"]
    assert meta["kernel_sources"] == ["me/arena-train"]  # --resume: the previous version's output
    script = built.kernel_script.read_text()
    compile(script, "kernel.py", "exec")
    assert "__" + "TRAIN__" not in script and "TRAIN = 'train-0-rows.csv'" in script
    assert "EXTRA = ['extra-1-more.csv']" in script and "SESSION_HOURS = 12.0" in script
    assert "BASE_MODEL = '/kaggle/input/tiny/transformers/default/1'" in script
    assert "accelerate.commands.launch" in script and "--max-wall-hours" in script
    assert len(script.splitlines()) < 260  # thin: paths, the budget, the image check; the training code: the package
    assert not training.build(cfg, tmp_path / "other", "me", wheels=False).root.joinpath("projection.json").exists()
    assert json.loads((tmp_path / "other" / "kernel" / "kernel-metadata.json").read_text())["kernel_sources"] == []
    with pytest.raises(UserError, match="exists"):
        training.build(cfg, tmp_path / "bundle", "me", wheels=False)


def test_the_competition_train_csv_is_read_on_kaggle_and_bad_data_is_refused(tiny_model_dir, tmp_path):
    cfg = _cfg(tiny_model_dir, "data/train.csv")
    files, copies, problems = training.data_files(cfg)
    assert files["TRAIN"] == "competition:train.csv" and copies == [] and problems == []
    bad = tmp_path / "bad.csv"
    bad.write_text("id,prompt\n1,x\n")
    with pytest.raises(UserError) as err:
        training.build(_cfg(tiny_model_dir, bad, data={"extra": [str(tmp_path / "missing.csv")]}),
                       tmp_path / "b", "me", wheels=False)
    assert "data.extra: " + str(tmp_path / "missing.csv") + ": file not found" in str(err.value)
    assert not (tmp_path / "b").exists()
    with pytest.raises(UserError) as err:
        training.build(_cfg(tiny_model_dir, bad), tmp_path / "b", "me", wheels=False)
    assert "bad.csv" in str(err.value) and not (tmp_path / "b").exists()
    train_csv, _, _ = _files(tmp_path)
    with pytest.raises(UserError, match="prompt.max_length: 24 cannot hold"):  # found here, not on Kaggle
        training.build(_cfg(tiny_model_dir, train_csv, "prompt.max_length=24", "infer.max_length=24"),
                       tmp_path / "b", "me", wheels=False)
    assert not (tmp_path / "b").exists()


def test_the_dry_run_prints_every_command_and_runs_none(tiny_model_dir, tmp_path, no_credentials, no_kaggle_calls,
                                                        capsys):
    train_csv, _, _ = _files(tmp_path)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps(_cfg(tiny_model_dir, train_csv).to_dict()))
    assert cli.main(["kaggle", "train", "--config", str(recipe), "--dry-run", "--no-wheels", "--resume",
                     "--out", str(tmp_path / "bundle")]) == 0
    out = capsys.readouterr().out
    assert "training projection (2 x T4" in out and "Kaggle sessions:" in out
    for command in ("kaggle datasets status your-kaggle-username/arena-wheels",
                    "kaggle datasets create -p " + str(tmp_path / "bundle" / "data-dataset"),
                    "kaggle kernels push -p " + str(tmp_path / "bundle" / "kernel"),
                    "kaggle kernels status your-kaggle-username/arena-train",
                    "arena kaggle pull your-kaggle-username/arena-train"):
        assert command in out
    assert json.loads((tmp_path / "bundle" / "projection.json").read_text())["sessions"] >= 1
    # a real push needs credentials, and stops before any network call without them
    assert cli.main(["kaggle", "train", "--config", str(recipe), "--out", str(tmp_path / "b2")]) == 2
    assert cli.main(["kaggle", "pull", "me/arena-train"]) == 2
    assert "no Kaggle credentials" in capsys.readouterr().err


def _output(tmp_path, tiny_run, finished: bool, left_out=("adapter", "metrics.json")) -> Path:
    """A training kernel's output as `kaggle kernels output` downloads it: runs/<run>/ and the kernel's log; an
    unfinished run without `left_out`."""
    output = tmp_path / "output"
    run = output / "runs" / Path(tiny_run).name
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns(*([] if finished else left_out)))
    (output / "arena-train.log").write_text("log")
    return output


def test_pull_brings_a_finished_run_back_listed_with_its_kernel(tiny_run, tmp_path, capsys):
    runs = tmp_path / "runs"
    dest = pull.import_output(_output(tmp_path, tiny_run, True), "me/arena-train", 3, runs)
    assert dest == runs / Path(tiny_run).name and RunFolder(dest).is_trained()
    assert pull.source(dest)["kernel"] == "me/arena-train" and pull.source(dest)["version"] == 3
    assert f"next: arena package --run {dest}" in capsys.readouterr().out
    again = pull.import_output(_output(tmp_path / "again", tiny_run, True), "me/arena-train", 4, runs)
    assert again.name == f"{dest.name}-kaggle-v4"  # the earlier pull is kept
    row = tracking.table(tracking.collect(runs)).iloc[0]
    assert row["kaggle"] == "me/arena-train v3" and row["kind"] == "run"


def test_pull_brings_an_unfinished_run_back_resumable(tiny_run, tmp_path, capsys):
    output = _output(tmp_path, tiny_run, False)
    run = RunFolder(next((output / "runs").iterdir()))
    (run.root / budget.RECORD).write_text(json.dumps({"stops": [{"step": 3, "max_steps": 9}]}))
    dest = pull.import_output(output, "me/arena-train", None, tmp_path / "runs")
    out = capsys.readouterr().out
    assert "stopped for time after step 3 of 9" in out and "arena kaggle train --resume" in out
    from arena import train

    assert train.last_complete_checkpoint(RunFolder(dest), quiet=True).name == "checkpoint-3"
    assert tracking.table(tracking.collect(tmp_path / "runs")).iloc[0]["kaggle"] == "me/arena-train vlatest"


def test_a_finish_cut_short_is_pulled_unfinished_and_the_training_kernel_resumes_it(tiny_model_dir, tiny_run,
                                                                                     tmp_path, monkeypatch, capsys):
    """The session ended after the adapter was saved, before metrics.json: not a finished run anywhere."""
    output = _output(tmp_path, tiny_run, False, left_out=["metrics.json"])
    dest = pull.import_output(output, "me/arena-train", 2, tmp_path / "runs")
    assert "pulled an unfinished run (its finish was cut short" in capsys.readouterr().out
    assert RunFolder(dest).adapter.is_dir() and not RunFolder(dest).is_finished()
    assert tracking.table(tracking.collect(tmp_path / "runs")).iloc[0]["kind"] == "unfinished"
    # the next kernel version, as `arena kaggle train --resume` renders it, resumes the run from that output
    train_csv, _, _ = _files(tmp_path)
    built = training.build(_cfg(tiny_model_dir, train_csv), tmp_path / "bundle", "me", wheels=False, resume=True)
    monkeypatch.setenv("ARENA_KAGGLE_ROOT", str(tmp_path / "kaggle"))
    spec = importlib.util.spec_from_file_location("rendered_train_kernel", built.kernel_script)
    kernel = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(kernel)
    previous = tmp_path / "kaggle" / "input" / kernel.TRAIN_KERNEL
    shutil.copytree(output, previous)
    run = previous / "runs" / Path(tiny_run).name
    assert not kernel.finished(run) and kernel.previous_run() == run
    shutil.copy(Path(tiny_run) / "metrics.json", run)
    assert kernel.finished(run) and kernel.previous_run() is None


def test_pull_names_damaged_or_partial_output_and_writes_nothing(tiny_run, tmp_path):
    partial = _output(tmp_path / "a", tiny_run, False)
    for state in partial.glob("runs/*/checkpoints/checkpoint-*/trainer_state.json"):  # the start's checkpoint-0 too
        state.write_text(state.read_text()[:40])  # cut short by the end of the session while saving
    with pytest.raises(UserError, match="without a whole checkpoint"):
        pull.import_output(partial, "me/arena-train", 1, tmp_path / "runs")
    damaged = _output(tmp_path / "b", tiny_run, True)
    weights = next(damaged.glob("runs/*/adapter/adapter_model.safetensors"))
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(UserError, match="adapter_model.safetensors"):
        pull.import_output(damaged, "me/arena-train", 1, tmp_path / "runs")
    with pytest.raises(UserError, match="no run folder"):
        pull.import_output(tmp_path / "b" / "output" / "runs" / "nothing", "me/arena-train", 1, tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


@LOOPBACK
def test_push_status_and_pull_go_through_the_real_kaggle_cli(fake_kaggle, tiny_model_dir, tiny_run, tmp_path,
                                                             capsys):
    train_csv, _, _ = _files(tmp_path)
    cfg = _cfg(tiny_model_dir, train_csv)
    built = training.build(cfg, tmp_path / "bundle", fake_kaggle.user, wheels=False)
    (built.wheels / "transformers-5.23.0-py3-none-any.whl").write_bytes(b"")  # the wheelhouse is not downloaded here
    # the kernel's output: its run stopped for time (as a kernel version's /kaggle/working/runs holds it)
    unfinished = _output(tmp_path, tiny_run, False)
    (next((unfinished / "runs").iterdir()) / budget.RECORD).write_text(json.dumps({"stops": [{"step": 3,
                                                                                               "max_steps": 9}]}))
    files = {str(p.relative_to(unfinished)): p.read_bytes() for p in unfinished.rglob("*") if p.is_file()}
    fake_kaggle.models["someone/tiny/transformers/default/1"] = "ok"  # its terms accepted by this account
    fake_kaggle.on_kernel_push = lambda kernel, version: fake_kaggle.complete_kernel(kernel.slug, files, log="log")
    assert training.push_bundle(built, cfg, fake_kaggle.user) == "1"
    (version,) = fake_kaggle.kernels["arena-train"].versions
    assert version.metadata["datasetDataSources"] == [f"{fake_kaggle.user}/arena-wheels/1",
                                                      f"{fake_kaggle.user}/arena-train-data/1"]  # pinned
    assert version.metadata.get("enableInternet") in (False, None) and "TRAIN = 'train-0-rows.csv'" in version.script
    assert f"{fake_kaggle.user}/arena-train-data" in fake_kaggle.datasets
    dest = pull.pull(f"{fake_kaggle.user}/arena-train", 1, tmp_path / "runs")
    assert pull.source(dest)["version"] == 1 and not RunFolder(dest).adapter.exists()
    assert "stopped for time after step 3 of 9" in capsys.readouterr().out
    assert not [p for p in (tmp_path / "runs").iterdir() if p.name.startswith(".")]  # the download folder is gone


def test_the_session_projection_of_the_9b_recipe(tiny_tokenizer):
    cfg = config.load(config.CONFIG_DIR / "gemma2-9b-qlora-t4x2.yaml")
    factor, _ = training_time.flops_factor(cfg, 42)
    assert factor == pytest.approx(1 + 2 * 26 / 42)  # LoRA from layer 16 of 42, checkpointing on
    p = training_time.project_training(cfg, tiny_tokenizer, "the tiny tokenizer")
    assert p["rows"] == training_time.COMPETITION_TRAIN_ROWS and p["train_rows"] == 45_981
    assert p["steps"] == 5_748 and p["global_batch"] == 8 and p["evals"] == p["evals_per_epoch"] == 4
    # the finish: one pass over the validation rows (the swapped order), a quarter of the four evaluations
    assert p["finish_hours"] > 0 and p["finish_hours"] == pytest.approx(p["eval_hours_per_epoch"] / 4, abs=0.01)
    assert p["total_hours"] == pytest.approx(p["train_hours_per_epoch"] + p["eval_hours_per_epoch"]
                                             + p["finish_hours"], abs=0.02)
    # every 500 steps: 11 evaluations and the last step's
    assert training_time.project_training(config.from_dict(cfg.to_dict(), ["train.eval_steps=500"]), tiny_tokenizer,
                                          "tiny")["evals"] == 12
    assert p["usable_hours_per_session"] == pytest.approx(12 - 0.5 - 0.25)
    assert p["sessions"] == -(-p["total_hours"] // p["usable_hours_per_session"])
    twice = training_time.project_training(config.from_dict(cfg.to_dict(), ["train.epochs=2"]), tiny_tokenizer, "tiny")
    # twice the steps; still an evaluation at each quarter of the run (eval_steps 0.25), then one finish
    assert twice["steps"] == 2 * p["steps"] and twice["evals"] == 4
    assert twice["total_hours"] == pytest.approx(p["total_hours"] + p["train_hours_per_epoch"], abs=0.02)
    text = training_time.format_training(p)
    assert "Projected, not measured" in text and f"= {p['sessions']} session(s)" in text
    assert f"then the finish ({p['finish_hours']:.2f} h: the swapped order of the 2,000 validation rows)" in text


# ---- the two-version rehearsal ------------------------------------------------------------------------


@pytest.mark.e2e
def test_two_rehearsed_versions_stop_resume_and_the_pulled_run_passes_its_inference_rehearsal(
        tiny_model_dir, tmp_path, no_credentials, monkeypatch, capfd):
    """The tiny random Gemma-2 as the base model: what is rehearsed is the kernels' stop, resume and finish across
    versions, the same for any model (the embedded model's training kernel: the next test's)."""
    inputs = tmp_path / "input"
    data.write_csv(data.generate_sample(24, seed=5), inputs / "train.csv")  # read as the competition's own
    data.write_csv(data.generate_sample(6, seed=6), tmp_path / "extra.csv")
    test = data.generate_sample(8, seed=7).drop(columns=LABEL_COLUMNS)
    data.write_csv(test, inputs / "test.csv")
    recipe = [f"model.path={tiny_model_dir}", "model.family=plain", "peft.layers_to_transform=null",
              "prompt.min_tokens=8", "kaggle.base_model_source=someone/tiny-gemma2/transformers/default/1",
              "data.train=" + str(inputs / "train.csv"), f"data.extra=[{tmp_path / 'extra.csv'}]", "data.folds=3",
              "prompt.max_length=128", "infer.max_length=128", "train.max_steps=2", "train.eval_steps=2",
              "train.per_device_batch_size=2", "train.grad_accum=1", "train.max_eval_rows=4",
              "kaggle.session_margin_hours=0"]
    # version 1: a session already spent when training starts, so it stops after its first step
    first = training.build(config.load(None, [*recipe, "kaggle.session_hours=1e-6"]), tmp_path / "b1", "me",
                           wheels=False)
    out1 = rehearsal.run_local(first.root, inputs, tmp_path / "v1")
    (run1,) = (out1 / "runs").iterdir()
    assert budget.recorded_stops(run1)[0]["step"] == 1 and not (run1 / "adapter").exists()
    # version 2, pushed with --resume: attaches version 1's output, trains the last step, and the session's time
    # limit kills it during the run's finish (--fault session-limit)
    second = training.build(config.load(None, [*recipe, "kaggle.session_hours=1"]), tmp_path / "b2", "me",
                            wheels=False, resume=True)
    out2 = rehearsal.run_local(second.root, inputs, tmp_path / "v2", previous_output=out1, fault="session-limit")
    log = capfd.readouterr().out
    lines = log.replace("\r", "\n").splitlines()  # tqdm's progress bars share lines with the messages
    stop_line = next(line[line.index("budget: "):] for line in lines if "budget: stopped for time" in line)
    resume_line = next(line for line in lines if line.startswith("resuming "))
    print("\nSTOP LINE: " + stop_line + "\nRESUME LINE: " + resume_line)
    assert "checkpoint-1" in resume_line
    assert "the session ended during the run's finish" in log
    (run2,) = (out2 / "runs").iterdir()
    assert run2.name == run1.name and (run2 / "adapter").is_dir() and not (run2 / "metrics.json").exists()
    # version 3: resumes the finish cut short, trains no step, and finishes
    out3 = rehearsal.run_local(second.root, inputs, tmp_path / "v3", previous_output=out2)
    (run3,) = (out3 / "runs").iterdir()
    assert json.loads((run3 / "metrics.json").read_text())["global_step"] == 2
    # the pull, then the inference bundle of the pulled run and its rehearsal
    pulled = pull.import_output(out3, "me/arena-train", 3, tmp_path / "runs")
    bundle = bundle_mod.package(pulled, out_dir=tmp_path / "inference", wheels=False, test_csv=inputs / "test.csv")
    submission = rehearsal.run_local(bundle, inputs, tmp_path / "inference-rehearsal")
    frame = pd.read_csv(submission, dtype={"id": str})
    data.validate_submission(frame, test["id"].astype(str))
    assert "rehearsal passed" in capfd.readouterr().out


@pytest.mark.e2e
def test_a_training_kernel_whose_gpu_crashes_keeps_the_run_for_the_next_version(tmp_path, no_credentials,
                                                                                 monkeypatch, capfd):
    """Two processes (T4x2); one crashes after the run's first checkpoint (--fault rank-crash), the launcher stops
    the other: the version ends with its output holding the run and that checkpoint, ready for --resume."""
    monkeypatch.setenv("ARENA_CACHE", REAL_CACHE)
    inputs = tmp_path / "input"
    data.write_csv(data.generate_sample(24, seed=5), inputs / "train.csv")
    recipe = ["data.train=" + str(inputs / "train.csv"), "data.folds=3", "prompt.max_length=128",
              "infer.max_length=128", "train.max_steps=4", "train.eval_steps=2", "train.per_device_batch_size=2",
              "train.grad_accum=1", "train.max_eval_rows=4", "model.device=cpu"]
    bundle = training.build(config.load(None, recipe), tmp_path / "b1", "me", wheels=False)
    out = rehearsal.run_local(bundle.root, inputs, tmp_path / "v1", processes=2, fault="rank-crash")
    (run,) = (out / "runs").iterdir()
    log = capfd.readouterr().out
    assert "(injected: ARENA_FAULT=rank-crash, process 1, after step 3)" in log
    assert "arena train FAILED (exit code 1); this version's output keeps the run with its last whole checkpoint, " \
           "checkpoint-2" in log
    assert "rehearsal passed: training failed (--fault rank-crash)" in log
    assert not (run / "metrics.json").exists() and (run / "checkpoints" / "checkpoint-2").is_dir()
