"""arena.environment: every environment variable arena reads is checked as a flag is, before any work: a bad value
exits 2 naming the variable as where it came from, never a traceback."""

import pytest

from arena import cli, environment
from arena.budget.inference import Clock
from arena.errors import UserError


def test_a_bad_variable_exits_2_naming_it_before_any_work(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv(environment.SLOW_BATCH, "abc")
    monkeypatch.setenv(environment.KERNEL_PROCESSES, "two")
    monkeypatch.setenv(environment.FAULT, "no-such-fault")
    missing = tmp_path / "missing.csv"
    assert cli.main(["data", "validate", str(missing)]) == 2
    err = capsys.readouterr().err
    assert "ARENA_REHEARSE_SECONDS_PER_BATCH='abc' (environment): expected a finite number of at least 0" in err
    assert "ARENA_KERNEL_PROCESSES='two' (environment): expected a whole number of at least 1" in err
    assert "ARENA_FAULT 'no-such-fault': not a fault arena injects" in err
    assert "Traceback" not in err and str(missing) not in err  # checked before the command's own work


@pytest.mark.parametrize("value", ["abc", "nan", "-1", "inf"])
def test_the_rehearsals_slow_batch_is_a_finite_number_wherever_it_is_read(monkeypatch, value):
    monkeypatch.setenv(environment.SLOW_BATCH, value)
    with pytest.raises(UserError, match=f"ARENA_REHEARSE_SECONDS_PER_BATCH='{value}' \\(environment\\)"):
        Clock()
    monkeypatch.setenv(environment.SLOW_BATCH, "2.5")
    assert Clock().extra_per_batch == 2.5
