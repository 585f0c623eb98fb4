"""The Kaggle twin (kaggle/twin.py) and the torchao trap of Kaggle's image (versions.peft_without_old_torchao)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from arena import data, embedded
from arena.kaggle import bundle as bundle_mod
from arena.kaggle import image, rehearsal, twin
from arena.task import THREE_WAY
from tests.tiny import tiny_cfg

REPO = Path(__file__).resolve().parents[1]
LABEL_COLUMNS = THREE_WAY.label_columns
REAL_CACHE = str(embedded.cache_dir())  # before a fixture moves HOME: the twin is built once per machine

_LORA_OVER_LINEAR = """
import sys, torch, peft
from peft import LoraConfig, get_peft_model
model = torch.nn.Sequential(torch.nn.Linear(4, 4))
config = LoraConfig(target_modules=["0"], r=2)
try:
    get_peft_model(model, config)
    print("unguarded: ok")
except ImportError as exc:
    print("unguarded:", exc)
from arena.versions import peft_without_old_torchao
peft_without_old_torchao()
get_peft_model(torch.nn.Sequential(torch.nn.Linear(4, 4)), LoraConfig(target_modules=["0"], r=2))
print("guarded: ok")
"""


def test_peft_treats_kaggles_torchao_as_absent(tmp_path):
    fake = tmp_path / "image"  # torchao 0.10.0 as Kaggle's image has it (only its version matters to peft)
    (fake / "torchao").mkdir(parents=True)
    (fake / "torchao" / "__init__.py").write_text("")
    (fake / "torchao-0.10.0.dist-info").mkdir()
    (fake / "torchao-0.10.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: torchao\nVersion: 0.10.0\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(fake), str(REPO / "src")])}
    out = subprocess.run([sys.executable, "-c", _LORA_OVER_LINEAR], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "unguarded: Found an incompatible version of torchao. Found version 0.10.0" in out.stdout  # the trap
    assert "guarded: ok" in out.stdout


def test_the_image_names_what_its_libraries_probe_for_and_the_twin_installs_it():
    assert image.PROBED["torchao"] == image.preinstalled("torchao") == "0.10.0"
    assert image.preinstalled("torchtune") == "0.6.1"
    for absent in ("bitsandbytes", "optimum", "gptqmodel", "hqq", "eetq", "autoawq", "aqlm", "flash-attn",
                   "deepspeed", "liger-kernel", "kernels"):
        assert image.PROBED[absent] is None and image.preinstalled(absent) is None, absent
    chosen = twin.packages()
    assert chosen["torchao"] == "0.10.0" and chosen["transformers"] == "5.0.0" and chosen["peft"] == "0.19.1"
    assert chosen["torch"] == twin.torch_version() and "triton" not in chosen and "torchtune" not in chosen
    # Dockerfile.tmpl's late layer reinstalls setuptools below 82 (81.0.0, which the CPU torch accepts too)
    assert chosen["setuptools"] == image.LATE_LAYER["setuptools"][1] == "81.0.0" and image.TWIN_VERSIONS == {}
    assert image.LATE_LAYER["torchtune"][1] == image.preinstalled("torchtune") and image.PROBED["protobuf"] == "5.29.5"
    for name, version in image.IMAGE["preinstalled"].items():  # every other figure is the image's own
        if name not in ("torch", "triton", "torchtune", *image.TWIN_VERSIONS):
            assert chosen[name] == version, name
    text = "\n".join(twin.substitutions())
    assert "Python 3.1" in text and "stands in for 3.12.13" in text and "torch" in text


@pytest.mark.e2e
def test_t4x2_kernel_rehearsal_in_the_kaggle_twin(tiny_model_dir, tmp_path, no_credentials, monkeypatch, capfd):
    """The issue's "done when": a run with unquantized weights (the torchao trap), trained from a local model folder
    that is then moved away, packaged with its real wheelhouse, rehearsed with --hardware t4x2 (2 processes,
    float16 decisions) in the twin of Kaggle's image, mounted as Kaggle mounts it; a valid submission."""
    from arena import hardware, train

    monkeypatch.setenv("ARENA_CACHE", REAL_CACHE)
    local = tmp_path / "models" / "tiny-gemma2"
    shutil.copytree(tiny_model_dir, local)
    train_csv = tmp_path / "train.csv"
    data.write_csv(data.generate_sample(40), train_csv)
    cfg = tiny_cfg(local, name="twin-e2e", model={"quantization": "none"}, data={"train": str(train_csv)},
                   train={"max_steps": 1, "eval_steps": 1, "runs_dir": str(tmp_path / "runs")},
                   prompt={"max_length": 128}, infer={"max_length": 128},
                   kaggle={"base_model_source": "someone/tiny-gemma2/transformers/default/1"})
    run = train.train(cfg)
    test = data.generate_sample(12, seed=5).drop(columns=LABEL_COLUMNS)
    input_dir = tmp_path / "input"
    data.write_csv(test, input_dir / "test.csv")
    bundle = bundle_mod.package(run, out_dir=tmp_path / "bundle", test_csv=input_dir / "test.csv")  # real wheels
    moved = tmp_path / "elsewhere" / "tiny-gemma2"
    local.parent.rename(moved.parent)  # the training machine's folder is gone
    assert not local.exists()

    monkeypatch.setenv(hardware.PROFILE_ENV, "t4x2")  # as `arena kernel run-local --hardware t4x2`: inherited
    processes = hardware.current().processes()
    assert processes == 2
    image_dir = twin.ensure_image()
    before = twin.fingerprint(image_dir)
    work = tmp_path / "work"
    submission = rehearsal.run_local(bundle, input_dir, work_dir=work, processes=processes, base_model=moved)

    frame = pd.read_csv(submission, dtype={"id": str})
    data.validate_submission(frame, test["id"].astype(str))
    log = (work / "kernel.log").read_text()
    out = capfd.readouterr().out
    assert "the Kaggle twin: " in out and "torch: torch " in out and "stands in for 2.10.0+cu128" in out
    # the kernel's first line: only the twin's stand-ins differ from the image it was built for
    torch = subprocess.run([str(work / "venv/bin/python"), "-c", "import importlib.metadata as m; "
                            "print(m.version('torch'))"], capture_output=True, text=True).stdout.strip()
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert log.splitlines()[0] == (f"kernel: image: python {here} (built for 3.12; the rehearsal stands in); "
                                   f"torch {torch} (built for 2.10.0+cu128; the rehearsal stands in)")
    assert "--multi_gpu --num_processes 2" in log and "compute dtype float16" in log  # the T4's decisions
    assert "torchtune" not in log  # nothing reported broken by the kernel's pip
    assert "--base-model " + str(work / "kaggle/input/models/someone/tiny-gemma2/transformers/default/1") in log
    # the wheelhouse shadows the image's versions; torchao 0.10.0 stays the image's and is seen by peft
    assert "peft==0.21.2" in log and "transformers==5.23.0" in log
    torchao = subprocess.run([str(work / "venv/bin/python"), "-c", "import importlib.metadata as m; "
                              "print(m.version('torchao'), m.version('peft'))"], capture_output=True, text=True)
    assert torchao.stdout.split() == ["0.10.0", "0.21.2"]
    assert "Found an incompatible version of torchao" not in log
    assert twin.fingerprint(image_dir) == before  # the kernel's install went into the rehearsal's venv only
