"""`arena`'s process: an interrupt or a signal prints one line and exits 130 or 143, leaving no file."""

import signal
import subprocess
import sys
import time

import pytest

from arena import cli
from tests.files import files_under


@pytest.mark.parametrize("interrupt,code", [(KeyboardInterrupt, 130), (cli.Terminated, 143)])
def test_an_interrupt_prints_one_line_and_exits_130_or_143(interrupt, code, work, monkeypatch, capsys):
    def interrupted(args):
        raise interrupt

    monkeypatch.setattr(cli, "cmd_score", interrupted)
    assert cli.main(["score", "--pred", "p.csv", "--truth", "t.csv"]) == code
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_arena_cleanly(sig, code, work):
    proc = subprocess.Popen([sys.executable, "-m", "arena.cli", "data", "sample", "--rows", "1000000", "--out",
                             str(work / "big.csv")], stderr=subprocess.PIPE, text=True, cwd=work)
    time.sleep(6)  # well into generating the rows
    proc.send_signal(sig)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == code, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert files_under(work) == []
