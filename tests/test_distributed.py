"""Several processes on CPU (gloo), launched as on GPUs: `accelerate launch --config_file
configs/accelerate/ddp-2.yaml`. Training shares one run folder and reports the global batch; every rank sees
its own shard; --resume works; 2-process predictions equal 1-process ones; FSDP shards the adapter's model.
The process state is created first, with an explicit collective timeout."""

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from arena import config, data, processes, train
from arena.layout import RunFolder
from arena.task import THREE_WAY
from tests.launching import FSDP_RECIPE, REPO, cfg_json, free_port, launch, train_args
from tests.tiny import Stop, tiny_cfg

LABEL_COLUMNS = THREE_WAY.label_columns


@pytest.fixture(scope="session")
def csv(sample_csv) -> Path:
    return sample_csv


@pytest.fixture(scope="module")
def two_process_run(tiny_model_dir, csv, tmp_path_factory) -> RunFolder:
    tmp = tmp_path_factory.mktemp("ddp-run")
    proc = launch(*train_args(tiny_model_dir, csv, tmp / "runs"), cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = list((tmp / "runs").iterdir())
    assert len(runs) == 1, f"the ranks wrote {len(runs)} run folders: {runs}"
    return RunFolder(runs[0])


def test_two_processes_train_one_run_and_report_the_global_batch(two_process_run):
    metrics = json.loads(two_process_run.metrics.read_text())
    assert metrics["world_size"] == 2
    assert metrics["global_batch"] == 2 * 2 * 2  # per-device x grad-accum x world size
    assert metrics["global_step"] == 4
    # 4 steps of 8 rows of the 60 training rows: the epoch fraction counts both ranks' rows
    assert max(h["epoch"] for h in metrics["history"] if "epoch" in h) == pytest.approx(4 * 8 / 60, abs=0.01)
    for path in (two_process_run.config, two_process_run.adapter, two_process_run.val_predictions,
                 two_process_run.loss_curve):
        assert path.exists(), path
    assert not list(two_process_run.root.rglob(".*.tmp"))


def rank_batches(proc) -> list[list[list[int]]]:
    """Per rank, the micro-batches of one epoch as training dataset indices (tests.distributed_probe shards)."""
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith("SHARDS "))
    return json.loads(line.removeprefix("SHARDS "))


def test_each_rank_trains_on_its_own_shard_of_every_epoch(tiny_model_dir, csv, tmp_path):
    ranks = rank_batches(launch("tests.distributed_probe", "shards", cfg_json(tiny_model_dir, csv, tmp_path / "runs"),
                                cwd=REPO))
    rank0, rank1 = ([i for batch in batches for i in batch] for batches in ranks)
    assert len(rank0) == len(rank1) == 30  # 60 training rows, half each
    assert not set(rank0) & set(rank1)


def test_paired_swap_puts_each_row_and_its_twin_in_one_batch_of_one_rank(tiny_model_dir, csv, tmp_path):
    cfg = cfg_json(tiny_model_dir, csv, tmp_path / "runs", train={"swap_augment": "paired"})
    ranks = rank_batches(launch("tests.distributed_probe", "shards", cfg, cwd=REPO))
    pairs = 60  # training rows; their swapped twins are dataset rows 60..119
    seen = [i for batches in ranks for batch in batches for i in batch]
    assert sorted(seen) == list(range(2 * pairs))  # the epoch covers both orders of every row once
    for batches in ranks:
        for batch in batches:
            assert sorted(i % pairs for i in batch) == sorted(2 * [i for i in batch if i < pairs]), batch


def test_a_two_process_run_resumes_after_a_kill(tiny_model_dir, csv, tmp_path):
    runs = tmp_path / "runs"
    killed = launch("tests.distributed_probe", "stop-after", cfg_json(tiny_model_dir, csv, runs), "4", cwd=REPO)
    assert killed.returncode != 0
    (run_dir,) = runs.iterdir()
    run = RunFolder(run_dir)
    assert not run.adapter.exists() and (run.checkpoints / "checkpoint-4").is_dir()
    # the same settings as the killed run (a resume refuses a --set the run was not trained with)
    resumed = launch(*train_args(tiny_model_dir, csv, runs, "--set", "train.max_steps=6", "--resume", "latest"),
                     cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert list(runs.iterdir()) == [run_dir]
    metrics = json.loads(run.metrics.read_text())
    assert metrics["global_step"] == 6 and metrics["world_size"] == 2
    assert f"resuming {run_dir} from {run.checkpoints / 'checkpoint-4'}" in resumed.stdout


@pytest.fixture(scope="module")
def test_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ddp-test") / "test.csv"
    data.write_csv(data.generate_sample(30, seed=4).drop(columns=LABEL_COLUMNS), path)
    return path


def test_two_process_predictions_equal_one_process_and_keep_the_order(two_process_run, test_csv, tmp_path):
    from arena.cli import main

    one = tmp_path / "one.csv"
    assert main(["predict", "--run", str(two_process_run.root), "--data", str(test_csv), "--out", str(one)]) == 0
    proc = launch("arena.cli", "predict", "--run", str(two_process_run.root), "--data", str(test_csv), "--out",
                  str(tmp_path / "two.csv"), "--set", "model.device=cpu", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.csv", "two.csv"]  # one writer
    a, b = (pd.read_csv(tmp_path / name, dtype={"id": str}) for name in ("one.csv", "two.csv"))
    assert b["id"].tolist() == a["id"].tolist() == pd.read_csv(test_csv, dtype={"id": str})["id"].tolist()
    assert np.abs(a[LABEL_COLUMNS].to_numpy() - b[LABEL_COLUMNS].to_numpy()).max() < 1e-5


def test_fsdp_shards_the_adapters_model_over_cpu_processes(tiny_model_dir, csv, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    cfg = cfg_json(tiny_model_dir, csv, tmp_path, model={"quantization": "none", "head_init": "random",
                                                          "length_features": False}, peft={"dropout": 0.0})
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                           str(free_port()), "-m", "tests.distributed_probe", "fsdp", cfg],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("FSDP ")).removeprefix("FSDP "))
    assert result["world"] == 2 and result["sharded"] and result["grads"] > 10
    assert result["max_grad_diff"] < 1e-5


def test_rows_are_dealt_by_tokens():
    lengths = [900, 10, 20, 500, 480, 30, 15, 400, 5, 5]
    shards = processes.deal_by_tokens(lengths, 2)
    assert sorted(i for s in shards for i in s) == list(range(len(lengths)))
    tokens = [sum(lengths[i] for i in s) for s in shards]
    assert abs(tokens[0] - tokens[1]) <= max(lengths)  # the bound of dealing longest-first
    many = np.random.default_rng(0).integers(50, 2048, size=1000).tolist()
    loads = [sum(many[i] for i in shard) for shard in processes.deal_by_tokens(many, 2)]
    assert abs(loads[0] - loads[1]) / sum(many) < 0.001  # while dealing rows in turn gives:
    alternate = [sum(sorted(many)[r::2]) for r in range(2)]
    assert abs(alternate[0] - alternate[1]) > abs(loads[0] - loads[1])
    assert [len(s) for s in processes.deal_by_tokens([7] * 5, 3)] == [2, 2, 1]
    assert processes.deal_by_tokens([], 2) == [[], []]


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "configs" / "accelerate").glob("*.yaml")))
def test_accelerate_configs_load(name):
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(REPO / "configs" / "accelerate" / name))
    raw = yaml.safe_load((REPO / "configs" / "accelerate" / name).read_text())
    assert cfg.num_processes == raw["num_processes"] and cfg.num_machines == raw["num_machines"]
    assert cfg.distributed_type.value in ("MULTI_GPU", "FSDP")


@pytest.mark.e2e
def test_the_embedded_default_trains_with_two_processes(shared_data, tmp_path):
    small = tmp_path / "small.csv"
    data.write_csv(data.load(shared_data / "pandalm_human.csv").head(80), small)
    proc = launch("arena.cli", "train", "--set", "model.device=cpu", "--set", f"data.train={small}", "--set",
                  f"train.runs_dir={tmp_path / 'runs'}", "--set", "train.max_steps=2", "--set", "train.eval_steps=2",
                  "--set", "train.max_eval_rows=8", "--set", "prompt.max_length=128", "--set", "infer.max_length=128",
                  "--set", "train.per_device_batch_size=2", "--set", "train.grad_accum=1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs").iterdir()
    metrics = json.loads(RunFolder(run_dir).metrics.read_text())
    assert metrics["world_size"] == 2 and metrics["global_batch"] == 4 and metrics["global_step"] == 2


def test_a_rank_finishing_past_the_collective_timeout_still_meets_the_other(two_process_run, test_csv, tmp_path):
    """Rank 1 starts 15 s late in a group whose collectives time out after 5 s (NCCL's is 10 minutes against
    hours of work): each rank leaves its share in a shard file, so the main one waits for it and writes."""
    out = tmp_path / "sub.csv"
    proc = launch("tests.distributed_probe", "delayed-predict", "{}", str(two_process_run.root), str(test_csv),
                  str(out), "15", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sub = pd.read_csv(out, dtype={"id": str})
    assert sub["id"].tolist() == pd.read_csv(test_csv, dtype={"id": str})["id"].tolist()
    assert np.isfinite(sub[LABEL_COLUMNS].to_numpy()).all()
    assert "no finite prediction" not in proc.stdout  # every row of both ranks arrived
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub.csv"]  # the shard folder is cleaned up


def test_two_process_cv_writes_one_cv_folder_with_every_row_once(tiny_model_dir, tmp_path):
    """`arena cv` under `accelerate launch`: the main process decides the CV folder, both ranks train each fold,
    only the main one reads the folds' results and writes the out-of-fold predictions."""
    csv = tmp_path / "train.csv"
    data.write_csv(data.generate_sample(24, seed=5), csv)
    runs = tmp_path / "runs"
    args = train_args(tiny_model_dir, csv, runs, "--set", "train.max_steps=1", "--set", "train.eval_steps=1",
                      "--set", "train.grad_accum=1", "--folds", "2")
    proc = launch("arena.cli", "cv", *args[2:], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    folders = list(runs.iterdir())
    assert len(folders) == 1, f"the ranks wrote {len(folders)} CV folders: {folders}"
    oof = pd.read_csv(folders[0] / "oof_predictions.csv", dtype={"id": str})
    every_row = pd.read_csv(csv, dtype={"id": str})["id"]
    assert oof["id"].is_unique and sorted(oof["id"]) == sorted(every_row)
    assert json.loads((folders[0] / "cv.json").read_text())["oof_rows"] == len(every_row)


def test_saving_under_fsdp_gathers_only_the_trainable_weights(tiny_model_dir, csv, tmp_path):
    """The adapter and head are what a run saves: under FSDP only they are gathered and handed to peft (never the
    frozen base, which would land whole in the main process's memory), and the saved adapter is the unsharded
    model's."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    cfg = cfg_json(tiny_model_dir, csv, tmp_path, model={"quantization": "none", "head_init": "random",
                                                          "length_features": False})
    run = tmp_path / "run"
    run.mkdir()
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                           str(free_port()), "-m", "tests.distributed_probe", "fsdp-save", cfg, str(run)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith("FSDPSAVE "))
    result = json.loads(line.removeprefix("FSDPSAVE "))
    assert result["saved"] == result["expected"]  # every LoRA matrix and the head
    assert result["max_diff"] == 0.0
    assert result["gathered"] == result["handed_to_save"] == result["trainable"] < result["total"]


def test_the_fsdp_recipe_trains_and_saves_its_adapter_over_cpu_processes(tiny_model_dir, csv, tmp_path):
    """configs/accelerate/fsdp-qlora-8.yaml itself (--num_processes 2; gloo, with accelerate's FSDP gate opened on
    CPU: tests/launching.py) through `arena train` of the tiny model in nf4: the 4-bit weights are sharded, the
    Trainer writes sharded checkpoints and loads the best one, every rank saves and evaluates, and the adapter saved
    is the model that was evaluated. The newest evaluation is the best here: the case where the ranks disagreed on
    whether its checkpoint existed and the run hung. A hang fails at the timeout, each rank's stack in stderr.
    The ranks end without the interpreter's finalization, where torch's surviving gloo threads can abort a rank
    whose work is done (processes.leave)."""
    runs = tmp_path / "runs"
    proc = launch("tests.launching", "fsdp-on-cpu", *train_args(tiny_model_dir, csv, runs), config=FSDP_RECIPE,
                  processes=2, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "FINALIZED" not in proc.stdout
    prepared = [json.loads(line.removeprefix("FSDP ")) for line in proc.stdout.splitlines() if line.startswith("FSDP ")]
    assert sorted(p["rank"] for p in prepared) == [0, 1]
    for p in prepared:
        assert p["version"] == 2 and p["sharded"] == p["params"] and p["four_bit_sharded"] == p["four_bit"] > 0, p
    (run_dir,) = runs.iterdir()
    run = RunFolder(run_dir)
    metrics = json.loads(run.metrics.read_text())
    assert metrics["world_size"] == 2 and metrics["global_step"] == 4
    evals = {h["step"]: h["eval_log_loss"] for h in metrics["history"] if "eval_log_loss" in h}
    assert min(evals, key=evals.get) == max(evals) == 4
    assert metrics["best_checkpoint"] == str(run.checkpoints / "checkpoint-4")
    assert sorted(p.name for p in (run.checkpoints / "checkpoint-4" / "pytorch_model_fsdp_0").iterdir()) == [
        ".metadata", "__0_0.distcp", "__1_0.distcp"]  # one shard per rank
    from arena.cli import main

    val = pd.read_csv(run.val_predictions, dtype={"id": str})  # predicted by the sharded model (swap TTA)
    rows = tmp_path / "val.csv"
    data.write_csv(data.load(csv).set_index("id").loc[val["id"]].reset_index(), rows)
    assert main(["predict", "--run", str(run.root), "--data", str(rows), "--out", str(tmp_path / "one.csv"),
                 "--tta", "--set", "infer.identical_tie=null"]) == 0  # the validation keeps the model's own
    one = pd.read_csv(tmp_path / "one.csv", dtype={"id": str})
    assert one["id"].tolist() == val["id"].tolist()
    assert np.abs(one[LABEL_COLUMNS].to_numpy() - val[LABEL_COLUMNS].to_numpy()).max() < 1e-4


def test_fsdp_version_1_is_refused_before_the_model_loads(tiny_model_dir, csv, tmp_path, monkeypatch, capsys):
    """Saving, checkpoints and evaluation under FSDP are tested with version 2 only: a launch under version 1 stops
    with exit 2, naming the settings, before any weights load or any run folder is written."""
    from arena import model as model_mod
    from arena.cli import main

    loaded = []
    monkeypatch.setattr(model_mod.adapters, "load_base", lambda *a, **k: loaded.append(a))
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_VERSION", "1")  # what `accelerate launch` sets from fsdp_version: 1
    runs = tmp_path / "runs"
    assert main(train_args(tiny_model_dir, csv, runs)[1:]) == 2
    err = capsys.readouterr().err
    assert "FSDP_VERSION=1" in err and "ACCELERATE_USE_FSDP=true" in err and "fsdp_version: 2" in err
    assert not loaded and not (runs.exists() and any(runs.iterdir()))
    monkeypatch.setenv("FSDP_VERSION", "2")
    assert model_mod.runtime_for(config.from_dict(json.loads(cfg_json(tiny_model_dir, csv, runs)))).sharded
    raw = yaml.safe_load(FSDP_RECIPE.read_text())
    assert raw["fsdp_config"]["fsdp_version"] == 2
    recipe = (REPO / "configs" / "llama3-70b-qlora-fsdp8.yaml").read_text()
    assert "--config_file configs/accelerate/fsdp-qlora-8.yaml" in recipe  # the config the test above runs


def test_the_process_state_is_created_with_an_explicit_timeout(monkeypatch):
    import accelerate

    made = []
    monkeypatch.setattr(accelerate, "PartialState", lambda **kwargs: made.append(kwargs) or types.SimpleNamespace())
    processes.state(cpu=True)
    assert made == [{"cpu": True, "timeout": processes.COLLECTIVE_TIMEOUT}]
    assert processes.COLLECTIVE_TIMEOUT.total_seconds() > 600  # above NCCL's 10-minute default


def test_train_creates_the_process_state_before_the_model_loads(tiny_model_dir, tmp_path, monkeypatch):
    order = []
    real_state = processes.state
    monkeypatch.setattr(processes, "state", lambda cpu: order.append("state") or real_state(cpu))
    monkeypatch.setattr(train.run, "build", lambda *a, **k: order.append("build") or (_ for _ in ()).throw(Stop()))
    csv = tmp_path / "train.csv"
    data.write_csv(data.generate_sample(30, seed=1), csv)
    cfg = tiny_cfg(tiny_model_dir, data={"train": str(csv), "folds": 3}, train={"runs_dir": str(tmp_path / "runs")})
    with pytest.raises(Stop):
        train.train(cfg)
    assert order[0] == "state" and "build" in order
