"""The hardware seam: every device decision from one Hardware value, named profiles that take a T4's decisions
and run them on this CPU, and the defects only a T4 showed (a kernel that read the training machine's folder,
int8 undoing the float32 choice, bitsandbytes' import noise)."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from arena import config, data, hardware, predict, train
from arena import model as model_mod
from arena.errors import UserError
from arena.layout import SOURCE_ROOT, RunFolder
from tests.tiny import tiny_config, tiny_config_dir


@pytest.mark.parametrize("name, model_type, dtype, checkpointing", [
    ("cpu", "gemma2", torch.float32, False),
    ("t4x2", "gemma2", torch.float16, True),  # no bf16: float16 where the family allows it
    ("t4x2", "gemma3_text", torch.float32, True),  # Gemma-3 overflows float16
    ("a100", "gemma3_text", torch.bfloat16, True),
    ("h100", "gemma2", torch.bfloat16, True),
])
def test_a_profile_takes_each_decision_as_its_machine_and_runs_here(tmp_path, monkeypatch, name, model_type, dtype,
                                                                     checkpointing):
    monkeypatch.setenv(hardware.PROFILE_ENV, name)
    cfg = config.from_dict({"model": {"path": str(tiny_config_dir(tmp_path, model_type))}})
    rt = model_mod.runtime_for(cfg)
    assert (rt.dtype, rt.gradient_checkpointing, rt.hardware.name) == (dtype, checkpointing, name)
    assert rt.device == ("cuda" if torch.cuda.is_available() and name != "cpu" else "cpu")
    assert not rt.fp16 or rt.device == "cuda"  # the Trainer's fp16 step (grad scaler) is CUDA-only
    assert hardware.current().processes() == {"cpu": 1, "t4x2": 2, "a100": 1, "h100": 1}[name]


def test_an_unknown_profile_is_refused_before_any_work(monkeypatch):
    with pytest.raises(UserError, match="--hardware v100: unknown profile"):
        hardware.use_profile("v100")
    monkeypatch.setenv(hardware.PROFILE_ENV, "v100")
    with pytest.raises(UserError, match="known: cpu, t4x2, a100, h100"):
        hardware.current()


def test_no_module_but_hardware_asks_torch_cuda_what_the_machine_is():
    asked = []
    for path in sorted((SOURCE_ROOT / "src" / "arena").rglob("*.py")):
        if path.name == "hardware.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and ast.unparse(node.value) == "torch.cuda":
                asked.append(f"{path.relative_to(SOURCE_ROOT)}:{node.lineno} torch.cuda.{node.attr}")
    assert asked == []


def test_the_kernel_checks_for_the_machine_of_the_kaggle_profile(tmp_path):
    from arena.kaggle import bundle as bundle_mod

    t4x2 = hardware.PROFILES["t4x2"]
    rendered = bundle_mod.render_kernel_script(config.from_dict({}))
    shape = t4x2.machine_shape
    assert f"MACHINE_SHAPE, MACHINES = '{shape}', {{'{shape}': ('{t4x2.gpu_name}', {t4x2.gpus})}}" in rendered
    assert bundle_mod.kernel_metadata(config.from_dict({}), "someone")["machine_shape"] == t4x2.machine_shape


def _moved_run(tiny_run: Path, tmp_path: Path) -> RunFolder:
    """A copy of the tiny run whose recipe names the training machine's folder, which is not here (as in a kernel)."""
    run = RunFolder(shutil.copytree(tiny_run, tmp_path / "run"))
    recipe = yaml.safe_load(run.config.read_text())
    recipe["model"]["path"] = str(tmp_path / "training-machine" / "models" / "gemma-2-9b-it")
    run.config.write_text(yaml.safe_dump(recipe))
    return run


def test_t4x2_predict_reads_the_mounted_base_model_not_the_training_folder(tiny_run, tiny_model_dir, test_csv,
                                                                          tmp_path, monkeypatch, capsys):
    """The kernel's `arena predict --base-model <mounted>` on a T4: float16 or float32 is decided from the model
    that loads (it stopped with 'model.path ... is not a model folder' when it read the recipe's path); the float16
    forward on this CPU agrees with float32."""
    run = _moved_run(tiny_run, tmp_path)
    mounted = shutil.copytree(tiny_model_dir, tmp_path / "kaggle" / "input" / "models" / "gemma-2")
    plain = predict.predict_file(run.root, test_csv, tmp_path / "cpu.csv", tta=True, base_model=mounted)
    monkeypatch.setenv(hardware.PROFILE_ENV, "t4x2")
    out = predict.predict_file(run.root, test_csv, tmp_path / "t4.csv", tta=True, base_model=mounted)
    said = capsys.readouterr().out
    assert "hardware: decisions of profile t4x2" in said and "compute dtype float16" in said
    t4 = data.read_columns(out, "submission")
    data.validate_submission(t4, data.load_test(test_csv)["id"])
    cpu = data.read_columns(plain, "submission")
    columns = ["winner_model_a", "winner_model_b", "winner_tie"]
    assert np.isfinite(t4[columns].to_numpy(dtype=float)).all()
    assert np.abs(t4[columns].to_numpy(dtype=float) - cpu[columns].to_numpy(dtype=float)).max() < 0.05


def test_int8_with_a_family_that_overflows_float16_is_a_config_error_on_a_gpu_without_bf16(tmp_path, monkeypatch):
    gemma3 = tiny_config_dir(tmp_path, "gemma3_text")
    cfg = config.from_dict({"model": {"path": str(gemma3), "quantization": "nf4"},
                            "infer": {"quantization": "int8"}})
    assert model_mod.compute_dtype_problems(cfg, tiny_config("gemma3_text"), hardware.profile("a100")) == []
    assert model_mod.compute_dtype_problems(cfg, tiny_config("gemma2"), hardware.profile("t4x2")) == []
    monkeypatch.setenv(hardware.PROFILE_ENV, "t4x2")
    import transformers

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", lambda *a, **k: pytest.fail("weights loaded"))
    with pytest.raises(UserError, match=r"infer\.quantization: int8 on t4x2.* casts activations to float16.*"
                                        r"overflows on gemma3_text"):
        model_mod.load_base(cfg, model_mod.runtime_for(cfg), None, 0, quantization="int8")


def test_bfloat16_on_a_gpu_without_it_is_a_config_error_naming_the_key(tmp_path):
    """A T4 (sm 7.5) emulates bfloat16 and transformers' bf16 check accepts emulation: it would train many times
    slower. A GPU with bf16, or a CPU, takes it."""
    cfg = config.from_dict({"model": {"path": str(tiny_config_dir(tmp_path, "gemma2")), "compute_dtype": "bfloat16"}})
    with pytest.raises(config.ConfigError, match=r"model\.compute_dtype: bfloat16 on t4x2 \(Tesla T4\), a GPU without"):
        model_mod.runtime_for(cfg, hardware=hardware.profile("t4x2"))
    [problem] = model_mod.compute_dtype_problems(cfg, tiny_config("gemma2"), hardware.profile("t4x2"))
    assert problem.startswith("model.compute_dtype: bfloat16 on t4x2")
    for name in ("a100", "cpu"):
        assert model_mod.runtime_for(cfg, hardware=hardware.profile(name)).dtype == torch.bfloat16
        assert model_mod.compute_dtype_problems(cfg, tiny_config("gemma2"), hardware.profile(name)) == []


def _bf16_argv(command: str, work: Path, model_dir: Path, csv: Path, run: Path) -> list[str]:
    model = ["--set", f"model.path={model_dir}", "--set", "model.family=plain", "--set", "peft.layers_to_transform=null"]
    fit = [*model, "--set", f"data.train={csv}", "--set", f"train.runs_dir={work / 'runs'}",
           "--set", "prompt.max_length=96", "--set", "prompt.min_tokens=8", "--set", "infer.max_length=96"]
    return {"train": ["train", *fit], "cv": ["cv", "--folds", "2", *fit], "plan": ["plan", *model],
            "predict": ["predict", "--run", str(run), "--data", str(csv), "--out", str(work / "sub.csv")],
            }[command] + ["--hardware", "t4x2", "--set", "model.compute_dtype=bfloat16"]


@pytest.mark.parametrize("command", ["train", "cv", "predict", "plan"])
def test_bfloat16_asked_for_on_t4x2_exits_2_before_any_weights_load(command, work, tiny_model_dir, tiny_run, test_csv,
                                                                    sample_csv, monkeypatch, capsys):
    import transformers

    from arena import cli
    from tests.files import files_under

    monkeypatch.setenv(hardware.PROFILE_ENV, "cpu")  # restored after the test: --hardware sets it for the process
    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", lambda *a, **k: pytest.fail("weights loaded"))
    csv = test_csv if command == "predict" else sample_csv
    run = shutil.copytree(tiny_run, work / "run")
    (work / "runs").mkdir()  # (cv leaves an empty train.runs_dir it created when its first fold is refused)
    before = files_under(work)
    assert cli.main(_bf16_argv(command, work, tiny_model_dir, csv, run)) == 2
    err = capsys.readouterr().err
    assert "model.compute_dtype: bfloat16 on t4x2" in err and "Traceback" not in err
    assert files_under(work) == before


@pytest.mark.e2e
def test_training_with_the_t4x2_profile_runs_its_float16_decisions_here(tiny_model_dir, tmp_path, monkeypatch,
                                                                        capsys):
    csv = tmp_path / "train.csv"
    data.write_csv(data.generate_sample(24, seed=3), csv)
    monkeypatch.setenv(hardware.PROFILE_ENV, "t4x2")
    cfg = config.from_dict({
        "name": "t4", "model": {"path": str(tiny_model_dir), "family": "plain"},
        "prompt": {"max_length": 96, "min_tokens": 8}, "infer": {"max_length": 128},
        "data": {"train": str(csv), "folds": 3},
        "train": {"runs_dir": str(tmp_path / "runs"), "max_steps": 2, "eval_steps": 2, "per_device_batch_size": 4,
                  "grad_accum": 1},
    })
    run = RunFolder(train.train(cfg))
    said = capsys.readouterr().out
    assert "hardware: decisions of profile t4x2" in said and "compute dtype float16" in said
    assert "gradient checkpointing on" in said
    assert np.isfinite(json_metrics(run)["val_log_loss"])


def json_metrics(run: RunFolder) -> dict:
    import json

    return json.loads(run.metrics.read_text())


def test_no_command_prints_bitsandbytes_kernels_notice(tmp_path):
    """On a CPU with AVX512-BF16, importing bitsandbytes warns that it cannot fetch a hub kernel; `arena train`
    imported it before the filter was in place, so its first line was that warning."""
    probe = subprocess.run([sys.executable, "-c", "import bitsandbytes"], capture_output=True, text=True,
                           cwd=tmp_path)
    if "kernels-community" not in probe.stderr + probe.stdout:
        pytest.skip("bitsandbytes does not warn on this CPU (no AVX512-BF16): nothing to filter here")
    result = subprocess.run([sys.executable, "-m", "arena.cli", "train", "--set", "no.such_key=1"],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2 and "unknown key" in result.stderr
    assert "kernels-community" not in result.stdout + result.stderr


def test_a_profile_from_the_environment_is_named_as_the_variable_not_a_flag(monkeypatch):
    monkeypatch.setenv(hardware.PROFILE_ENV, "t4")
    with pytest.raises(UserError, match="^ARENA_HARDWARE='t4' \\(environment\\): unknown profile") as err:
        hardware.current()
    assert "--hardware" not in str(err.value)


def test_a_rehearsal_as_another_machine_says_what_the_bundle_is_built_for(tmp_path, monkeypatch):
    from arena.kaggle import rehearsal
    from arena.layout import Bundle
    from tests.kaggle_bundles import fake_bundle, kaggle_cfg

    monkeypatch.setenv(hardware.PROFILE_ENV, "h100")
    note = rehearsal.machine_note(Bundle(fake_bundle(tmp_path, kaggle_cfg())))
    assert note.startswith("note: the bundle is built for Kaggle's 2 x Tesla T4 (machine_shape NvidiaTeslaT4); "
                           "this rehearsal acts as h100: 1 x NVIDIA H100")
    assert "the kernel's GPU check, which stops it on any other machine on Kaggle, is skipped here" in note
