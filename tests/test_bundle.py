"""`arena package`: where a bundle may go."""

from __future__ import annotations

import shutil

from arena import cli


def test_a_bundle_inside_the_runs_own_adapter_folder_is_refused_before_any_work(tiny_run, tmp_path, no_credentials,
                                                                                capsys):
    run = shutil.copytree(tiny_run, tmp_path / "run")
    before = sorted(p.name for p in (run / "adapter").iterdir())
    assert cli.main(["package", "--run", str(run), "--out", str(run / "adapter" / "bundle"), "--no-wheels"]) == 2
    assert f"{run / 'adapter' / 'bundle'}: inside {run / 'adapter'}, which the bundle copies" in capsys.readouterr().err
    assert sorted(p.name for p in (run / "adapter").iterdir()) == before
