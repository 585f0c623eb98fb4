"""`arena kaggle pull` through the real kaggle CLI against the loopback Kaggle: the version asked for is the version
read, and what Kaggle sends is checked before it is written."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from arena.errors import UserError
from arena.kaggle import pull
from arena.layout import RunFolder
from tests.fake_kaggle import KernelVersion, fake_kaggle_fixture  # noqa: F401


def _output(tmp_path: Path, tiny_run) -> dict[str, bytes]:
    """A training kernel's output holding the tiny run (runs/<run>/...)."""
    run = tmp_path / "output" / "runs" / Path(tiny_run).name
    shutil.copytree(tiny_run, run)
    return {str(p.relative_to(tmp_path / "output")): p.read_bytes() for p in run.rglob("*") if p.is_file()}


def test_pull_reads_the_version_it_names(fake_kaggle, tiny_run, tmp_path):
    kernel = fake_kaggle.kernel("arena-train")
    kernel.versions.append(KernelVersion(1, "", {}, status="complete", outputs=_output(tmp_path, tiny_run)))
    kernel.versions.append(KernelVersion(2, "", {}, status="running"))  # the latest session: still running
    dest = pull.pull(f"{fake_kaggle.user}/arena-train", 1, runs_dir=tmp_path / "runs")
    assert RunFolder(dest).is_trained() and pull.source(dest)["version"] == 1
    assert [c.get("versionLabel") for c in fake_kaggle.called("GetKernelSessionStatus")] == ["v1"]
    assert [c.get("versionLabel") for c in fake_kaggle.called("ListKernelSessionOutput")] == ["v1"]
    with pytest.raises(UserError, match="alice/arena-train/2 is still running"):
        pull.pull(f"{fake_kaggle.user}/arena-train", 2, runs_dir=tmp_path / "runs")


@pytest.mark.parametrize("escaping", ["runs/../../escaped.txt", "/absolute-escaped.txt"])
def test_output_names_that_leave_the_download_folder_are_refused_and_never_written(fake_kaggle, tiny_run, tmp_path,
                                                                                escaping):
    files = _output(tmp_path, tiny_run)
    files[escaping.replace("/absolute", f"{tmp_path}/absolute")] = b"written outside runs/"  # 2.2.5 refuses them
    fake_kaggle.kernel("arena-train").versions.append(KernelVersion(1, "", {}))
    fake_kaggle.complete_kernel("arena-train", files, log="log")
    runs = tmp_path / "work" / "runs"
    with pytest.raises(UserError, match="`kaggle kernels output` failed \\(exit 1\\).*Refusing to download"):
        pull.pull(f"{fake_kaggle.user}/arena-train", runs_dir=runs)
    assert sorted(tmp_path.rglob("*escaped.txt")) == []
    assert sorted(p.name for p in runs.iterdir()) == []  # nothing imported, the download folder removed


def test_a_failed_download_is_an_error_not_a_file_holding_the_error(fake_kaggle, tiny_run, tmp_path):
    files = _output(tmp_path, tiny_run)
    fake_kaggle.kernel("arena-train").versions.append(KernelVersion(1, "", {}))
    fake_kaggle.complete_kernel("arena-train", files, log="log")
    fake_kaggle.broken_outputs = {next(name for name in files if name.endswith("adapter_model.safetensors"))}
    runs = tmp_path / "runs"
    with pytest.raises(UserError, match="`kaggle kernels output` failed \\(exit 1\\).*404"):
        pull.pull(f"{fake_kaggle.user}/arena-train", runs_dir=runs)
    assert sorted(p.name for p in runs.iterdir()) == []


def test_pulling_the_same_kernel_again_goes_beside_the_earlier_pulls_and_says_so(tiny_run, tmp_path, capsys):
    """The third pull of the same kernel said its folder 'appeared while it was built': it was the second pull's."""
    output = tmp_path / "download"
    shutil.copytree(tiny_run, output / "runs" / Path(tiny_run).name)
    runs, name = tmp_path / "runs", Path(tiny_run).name
    pulled = [pull.import_output(output, "alice/arena-train", None, runs) for _ in range(3)]
    assert [p.name for p in pulled] == [name, f"{name}-kaggle-vlatest", f"{name}-kaggle-vlatest-2"]
    assert f"this pull goes to {runs / name}-kaggle-vlatest-2" in capsys.readouterr().out
    pull.import_output(output, "alice/arena-train", 4, runs)
    with pytest.raises(UserError, match=f"{name}-kaggle-v4 already holds alice/arena-train version 4 .*nothing was "
                                        f"written"):
        pull.import_output(output, "alice/arena-train", 4, runs)
    assert len(list(runs.iterdir())) == 4
