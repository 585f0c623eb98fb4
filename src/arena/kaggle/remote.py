"""The kaggle CLI as a subprocess, the only way arena talks to kaggle.com (after a credentials check), and the
competition-data download."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from arena.errors import UserError
from arena.kaggle.credentials import require_credentials


def kaggle_executable() -> str:
    """The kaggle CLI of this environment (beside this Python), else the one on PATH."""
    beside = Path(sys.executable).parent / "kaggle"
    if beside.is_file():
        return str(beside)
    found = shutil.which("kaggle")
    if not found:
        raise UserError("the kaggle CLI is not installed (pip install -r requirements.txt)")
    return found


def run_kaggle(args: list[str], check: bool = True) -> subprocess.CompletedProcess:
    """Run `kaggle ARGS`, echoing the command and its output."""
    print(f"$ kaggle {shlex.join(args)}", flush=True)
    proc = subprocess.run([kaggle_executable(), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
    if proc.stdout.strip():
        print(proc.stdout.rstrip(), flush=True)
    if check and proc.returncode != 0:
        raise UserError(f"`kaggle {' '.join(args[:2])}` failed (exit {proc.returncode}); its output is above")
    return proc


def download_competition_data(out: str, competition: str = "lmsys-chatbot-arena") -> None:
    """`arena data download`: the competition's files into `out` (existing files are kept)."""
    require_credentials()
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    proc = run_kaggle(["competitions", "download", "-c", competition, "-p", str(out_dir)], check=False)
    archive = out_dir / f"{competition}.zip"
    if proc.returncode != 0 or not archive.is_file():
        raise UserError(f"download failed; accept the rules at https://www.kaggle.com/competitions/{competition}/rules "
                        f"with the account of your API token, then retry")
    with zipfile.ZipFile(archive) as zf:
        for member in zf.namelist():
            if (out_dir / member).exists():
                print(f"kept the existing {out_dir / member}")
            else:
                zf.extract(member, out_dir)
                print(f"wrote {out_dir / member}")
    archive.unlink()


def kaggle_executable_display() -> str:
    try:
        return kaggle_executable()
    except UserError:
        return "kaggle CLI not found"

