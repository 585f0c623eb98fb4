"""The machine a benchmark ran on: CPU, cores, memory, GPU, package versions, commit and load."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

from benchmarks.plan import REPO

PACKAGES = ("torch", "transformers", "peft", "bitsandbytes", "accelerate", "scikit-learn", "numpy", "pandas")


def _proc_field(path: str, prefix: str) -> str | None:
    """The value after ':' of the first line of a /proc file starting with `prefix` (case-insensitive)."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.lower().startswith(prefix.lower()):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def device_info() -> dict:
    import torch

    mem_kib = _proc_field("/proc/meminfo", "MemTotal:")
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    return {"cpu": _proc_field("/proc/cpuinfo", "model name") or platform.processor() or "unknown CPU",
            "cores": cores, "torch_threads": torch.get_num_threads(),
            "memory_gib": int(mem_kib.split()[0]) / 2**20 if mem_kib else None,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "python": platform.python_version(), "platform": platform.platform()}


def package_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return f"{head}{' (uncommitted changes)' if dirty else ''}" if head else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def load_average() -> list[float]:
    """1-, 5- and 15-minute load averages."""
    return list(os.getloadavg())
