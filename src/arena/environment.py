"""The environment variables arena reads, read here alone and each checked as a flag is: a bad value is a UserError
naming the variable as the place it came from (`ARENA_REHEARSE_SECONDS_PER_BATCH='abc' (environment): ...`), exit 2
before any work (`check`, from the CLI), never a traceback. The kaggle CLI's own variables (KAGGLE_*) are read by
kaggle/credentials.py as the CLI reads them; the thin kernel scripts (kernels/*.py) run before arena is installed
and read only what arena's rehearsal sets for them."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from arena.errors import UserError

CACHE = "ARENA_CACHE"  # where the embedded model and the Kaggle twin are cached (default ~/.cache/arena)
HARDWARE = "ARENA_HARDWARE"  # a hardware profile name: set by --hardware, inherited by launched processes
FAULT = "ARENA_FAULT"  # a fault to inject (arena/faults.py)
SLOW_BATCH = "ARENA_REHEARSE_SECONDS_PER_BATCH"  # extra seconds per batch on the prediction budget's clock
KERNEL_PROCESSES = "ARENA_KERNEL_PROCESSES"  # the rehearsal's processes, instead of one per GPU
KERNEL_PORT = "ARENA_KERNEL_PORT"  # where those processes meet


@dataclass(frozen=True)
class Setting:
    """A variable's value and where it came from, for messages: `ARENA_HARDWARE='t4' (environment)`."""

    name: str
    value: str

    @property
    def origin(self) -> str:
        shown = self.value if len(self.value) <= 80 else self.value[:77] + "..."
        return f"{self.name}={shown!r} (environment)"


def setting(name: str) -> Setting | None:
    """The variable `name` as set (an empty value too), None when unset."""
    value = os.environ.get(name)
    return None if value is None else Setting(name, value)


def text(name: str) -> str | None:
    """The variable's value, None when unset or empty."""
    return os.environ.get(name) or None


def number(name: str, default: float = 0.0, minimum: float = 0.0) -> float:
    """A finite number of at least `minimum` (`default` when unset or empty)."""
    found = setting(name)
    if found is None or not found.value.strip():
        return default
    try:
        value = float(found.value)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= minimum):
        raise UserError(f"{found.origin}: expected a finite number of at least {minimum:g}; unset it or fix it")
    return value


def whole(name: str, minimum: int = 1, maximum: int | None = None) -> int | None:
    """A whole number in [minimum, maximum], None when unset or empty."""
    found = setting(name)
    if found is None or not found.value.strip():
        return None
    value = found.value.strip()
    if not value.isdigit() or int(value) < minimum or (maximum is not None and int(value) > maximum):
        bound = f"from {minimum} to {maximum}" if maximum is not None else f"of at least {minimum}"
        raise UserError(f"{found.origin}: expected a whole number {bound}; unset it or fix it")
    return int(value)


def check() -> None:
    """Every variable arena reads, checked before any work: UserError listing each bad one (ARENA_HARDWARE is
    checked where the profile is taken, arena.hardware, which imports torch)."""
    from arena import embedded, faults  # their readers (neither imports torch)

    problems = []
    for read in (lambda: number(SLOW_BATCH), lambda: whole(KERNEL_PROCESSES), lambda: whole(KERNEL_PORT, 1, 65535),
                 embedded.cache_dir, faults.from_env):
        try:
            read()
        except UserError as exc:
            problems += exc.problems
    if problems:
        raise UserError(problems=problems)
