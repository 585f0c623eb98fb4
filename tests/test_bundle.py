"""`arena package`: where a bundle may go, a kaggle.json it does not need; `arena push --bundle` makes every check
package makes, and a staging folder left by a killed package is no bundle."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from arena import cli
from arena.writes import atomic_folder
from tests.files import files_under, kaggle_json, run_copy, truncate


def test_a_bundle_inside_the_runs_own_adapter_folder_is_refused_before_any_work(tiny_run, tmp_path, no_credentials,
                                                                                capsys):
    run = shutil.copytree(tiny_run, tmp_path / "run")
    before = sorted(p.name for p in (run / "adapter").iterdir())
    assert cli.main(["package", "--run", str(run), "--out", str(run / "adapter" / "bundle"), "--no-wheels"]) == 2
    assert f"{run / 'adapter' / 'bundle'}: inside {run / 'adapter'}, which the bundle copies" in capsys.readouterr().err
    assert sorted(p.name for p in (run / "adapter").iterdir()) == before


def test_package_does_not_need_a_readable_kaggle_json(work, tiny_run, capsys):
    kaggle_json(work, "{not json")
    assert cli.main(["package", "--run", str(run_copy(work, tiny_run)), "--no-wheels", "--out", str(work / "bundle")]) == 0
    assert "the bundle uses the placeholder user" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny_bundle(tiny_run, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny-bundle")
    run = run_copy(root, tiny_run)
    out = root / "bundle"
    assert cli.main(["package", "--run", str(run), "--no-wheels", "--out", str(out)]) == 0
    return out


def test_push_bundle_makes_every_package_check_before_any_kaggle_call(work, tiny_bundle, capsys, monkeypatch):
    from arena.kaggle import push

    def no_kaggle(*args, **kwargs):
        raise AssertionError("a kaggle call")

    monkeypatch.setattr(push, "run_kaggle", no_kaggle)
    bundle = work / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    truncate(bundle / "adapter-dataset" / "adapter" / "adapter_model.safetensors")
    (bundle / "preflight.json").unlink()
    before = files_under(work)
    capsys.readouterr()
    for extra in ([], ["--dry-run"]):
        assert cli.main(["push", "--run", str(bundle / "adapter-dataset"), "--bundle", str(bundle), *extra]) == 2
        err = capsys.readouterr().err
        assert "adapter_model.safetensors: not a whole safetensors file" in err, err
        assert "preflight.json: missing (the pre-flight projection)" in err
        assert "Traceback" not in err
    assert files_under(work) == before


def test_a_staging_folder_left_by_a_killed_package_is_no_bundle_and_is_cleaned_up(work, tiny_bundle, capsys):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    staging = work / f".bundle.{int(dead.stdout)}.k1lled"
    shutil.copytree(tiny_bundle, staging)
    assert cli.main(["push", "--run", str(staging / "adapter-dataset"), "--bundle", str(staging), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "the staging folder of an interrupted `arena package`, not a bundle (removed it)" in err
    assert not staging.exists()
    shutil.copytree(tiny_bundle, staging)  # and the next build beside it removes it too
    with atomic_folder(work / "bundle", "bundle") as build:
        (build / "x").write_text("x")
    assert files_under(work) == ["bundle", "bundle/x"]


def test_a_run_trained_in_bfloat16_is_bundled_for_the_t4s_compute_dtype(work, tiny_run, capsys):
    """A run trained on an A100 in bfloat16: the kernel's T4s have none (arena refuses it there), so the bundle's
    config says auto, and says so; the run's own config is left as it was."""
    from arena import config
    from arena.layout import Bundle, RunFolder

    def bfloat16(run):
        trained = config.load(run.config, ["model.compute_dtype=bfloat16"])
        run.config.unlink()
        config.dump(trained, run.config)

    run = RunFolder(run_copy(work, tiny_run, bfloat16))
    assert cli.main(["package", "--run", str(run.root), "--no-wheels", "--out", str(work / "bundle")]) == 0
    assert "model.compute_dtype: bfloat16 in " in capsys.readouterr().out
    assert config.load(Bundle(work / "bundle").run.config).model.compute_dtype == "auto"
    assert config.load(run.config).model.compute_dtype == "bfloat16"


def test_what_the_bundle_uploads_names_no_local_path_nor_the_user(work, tiny_run, monkeypatch, capsys):
    """A run packaged from a user's home folder: no file the push uploads (the adapter dataset, the wheels, the
    kernel; a wheel's files too) holds the user's name, the home folder, or a local path of the run's config; the
    kernel's config names the base model as the kernel resolves it, and the run's own config stays in local/."""
    import json
    import zipfile

    from arena import config
    from arena.layout import Bundle

    user = "zelda-quixote"
    home = work / "home" / user
    monkeypatch.setenv("HOME", str(home))
    original = config.load(Path(tiny_run) / "config.yaml")
    base = shutil.copytree(original.model.path, home / "models" / "tiny-gemma2")

    def moved(run):
        cfg = config.load(run.config, [f"model.path={base}"])
        run.config.unlink()
        config.dump(cfg, run.config)

    run = run_copy(home / "projects", tiny_run, moved)
    assert cli.main(["package", "--run", str(run), "--no-wheels", "--out", str(home / "bundle")]) == 0
    bundle = Bundle(home / "bundle")
    local = [user, str(home), str(work), original.data.train, original.train.runs_dir]
    for part in Bundle.PARTS:
        for path in (bundle.root / part).rglob("*"):
            if path.is_file():
                contents = [path.read_bytes()]
                if path.suffix == ".whl":
                    with zipfile.ZipFile(path) as wheel:
                        contents += [wheel.read(name) for name in wheel.namelist()]
                found = [s for s in local for c in contents if s.encode() in c]
                assert not found, f"{path.relative_to(bundle.root)} holds {found}"
    uploaded = config.load(bundle.run.config)
    assert uploaded.model.path == "/kaggle/input/tiny/1" and uploaded.data.train == "train.csv"
    (kept,) = bundle.member_runs()
    assert config.load(kept.config).model.path == str(base)  # what the rehearsal here mounts
    adapter_config = json.loads((bundle.run.adapter / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == "/kaggle/input/tiny/1"
