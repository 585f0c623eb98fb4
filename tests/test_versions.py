"""torch against transformers' minimum: an old torch is refused before any command runs."""

import pytest

from arena import cli, versions


def test_an_old_torch_is_refused_before_any_command_runs(monkeypatch, capsys):
    assert versions.torch_minimum() == "2.6"  # what transformers 5's metadata declares
    assert versions.torch_problems(installed="2.13.0+cpu") == []
    assert "needs torch >= 2.6" in versions.torch_problems(installed="2.5.1+cu121")[0]
    monkeypatch.setattr(versions, "torch_problems", lambda: ["torch 2.5.1 is installed, but ... needs torch >= 2.6"])
    monkeypatch.setattr(cli, "cmd_plan", lambda args: pytest.fail("the command ran"))
    assert cli.main(["plan"]) == 2
    assert "needs torch >= 2.6" in capsys.readouterr().err
