"""`arena kaggle pull` through the real kaggle CLI against the loopback Kaggle: what Kaggle sends is checked
before it is written."""

from __future__ import annotations

import shutil
from pathlib import Path

from arena.kaggle import pull
from arena.layout import RunFolder
from tests.fake_kaggle import KernelVersion, fake_kaggle_fixture  # noqa: F401


def test_output_names_that_leave_the_download_folder_are_never_written(fake_kaggle, tiny_run, tmp_path):
    run = tmp_path / "output" / "runs" / Path(tiny_run).name
    shutil.copytree(tiny_run, run)
    files = {str(p.relative_to(tmp_path / "output")): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    for escaping in ("../../escaped.txt", "../escaped.txt", "runs/../../escaped.txt", f"{tmp_path}/absolute.txt"):
        files[escaping] = b"written outside runs/"
    fake_kaggle.kernel("arena-train").versions.append(KernelVersion(1, "", {}))
    fake_kaggle.complete_kernel("arena-train", files, log="log")
    runs = tmp_path / "work" / "runs"
    dest = pull.pull(f"{fake_kaggle.user}/arena-train", runs_dir=runs)
    assert RunFolder(dest).is_trained()
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*escaped.txt"))
    assert written == [] and not (tmp_path / "absolute.txt").exists()
