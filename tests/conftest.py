import os
from pathlib import Path

import pytest

# Each pytest-xdist worker takes its share of the cores, as do the processes it starts (they inherit the variable):
# torch's and BLAS's thread pools sized to the whole machine in every worker spin against each other (three test
# files took 60-68 s against 32-35 s with them shared). Set before anything imports torch; a value the caller set wins.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, len(os.sched_getaffinity(0)) // _WORKERS)))

# A process the suite starts that dies of a fatal signal (a SIGABRT in C++) prints every thread's Python stack.
os.environ.setdefault("PYTHONFAULTHANDLER", "1")

from arena.cli import OFFLINE_ENV  # noqa: E402

for _name, _value in OFFLINE_ENV.items():  # as `arena` sets them, before anything loads transformers
    os.environ.setdefault(_name, _value)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data not present")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from tests.tiny import tiny_tokenizer as make

    return make()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from tests.tiny import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny-gemma2"), "gemma2")


@pytest.fixture(scope="session")
def tiny_run(tiny_model_dir, tmp_path_factory) -> Path:
    """A run folder trained for 3 steps on the tiny model and a generated sample (never modified by tests:
    tests that damage a run work on a copy)."""
    from arena import config, data, train

    tmp = tmp_path_factory.mktemp("tiny-run")
    csv = tmp / "train.csv"
    data.write_csv(data.generate_sample(60, seed=2), csv)
    cfg = config.from_dict({
        "name": "tiny", "model": {"path": str(tiny_model_dir), "family": "plain"},
        "prompt": {"max_length": 96, "min_tokens": 8}, "infer": {"max_length": 128, "max_batch_tokens": 512},
        "data": {"train": str(csv), "folds": 3},
        "train": {"runs_dir": str(tmp / "runs"), "max_steps": 3, "eval_steps": 3, "per_device_batch_size": 4,
                  "grad_accum": 1, "learning_rate": 1e-3},
    })
    return train.train(cfg)


@pytest.fixture(scope="session")
def sample_csv(tmp_path_factory) -> Path:
    """A generated training CSV in the competition's format, 80 rows with labels."""
    from arena import data

    path = tmp_path_factory.mktemp("train-data") / "train.csv"
    data.write_csv(data.generate_sample(80, seed=1), path)
    return path


@pytest.fixture(scope="session")
def test_csv(tmp_path_factory) -> Path:
    """A generated test.csv in the competition's format (no labels), 24 rows."""
    from arena import data
    from arena.task import THREE_WAY
    LABEL_COLUMNS = THREE_WAY.label_columns

    path = tmp_path_factory.mktemp("test-csv") / "test.csv"
    data.write_csv(data.generate_sample(24, seed=4).drop(columns=LABEL_COLUMNS), path)
    return path


@pytest.fixture
def small_disk(tmp_path):
    """A 72 MiB tmpfs: room for the tiny run (its room check asks 64 MiB for logs and plots) until it is filled."""
    import os
    import subprocess

    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=72m", "tmpfs", str(mount)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def read_only(tmp_path):
    """A folder nothing can be written in (a read-only image or checkout): a read-only tmpfs for root, whom missing
    write bits do not stop; a folder without write bits for anyone else."""
    import os
    import subprocess

    folder = tmp_path / "read-only"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)], capture_output=True,
                          text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {made.stderr.strip()}")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.fixture
def no_credentials(tmp_path, monkeypatch):
    """No kaggle.json, no token file, no KAGGLE_* variables: the state of a fresh machine."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(home / "kaggle-config"))
    for var in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    return home / "kaggle-config"


@pytest.fixture
def work(tmp_path, monkeypatch):
    """An empty working folder (the current directory), with no Kaggle credentials anywhere."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "home" / "kaggle"))
    for var in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


@pytest.fixture
def t4(monkeypatch):
    """A machine whose torch sees CUDA GPUs without bf16 (a T4): is_available, no bf16, set_device recorded."""
    import types

    import torch

    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.append(("set_device", device)))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    t4_card = types.SimpleNamespace(name="Tesla T4", total_memory=15_835_660_288, major=7, minor=5)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: t4_card)
    monkeypatch.delenv("ARENA_HARDWARE", raising=False)
    return calls
