"""Safe writes: output paths checked before any work starts, and atomic writes (temporary file, then rename)
that never leave a partial file and never overwrite an earlier one."""

from __future__ import annotations

import glob
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from arena.errors import UserError


def _nearest_existing(path: Path) -> Path:
    for ancestor in [path, *path.parents]:
        if ancestor.exists() or ancestor.is_symlink():
            return ancestor
    return Path(".")


def output_problems(path: str | Path, what: str, folder: bool = False, may_exist: bool = False) -> list[str]:
    """Why `path` cannot be written as a new file (or folder): one line, or none. Checked before any work
    starts. `may_exist`: an existing folder is fine (it receives new files)."""
    path = Path(path)
    if path.exists() or path.is_symlink():
        if may_exist and folder and not path.is_dir():
            return [f"{path}: a file, not a folder ({what})"]
        if may_exist and folder:
            return [] if os.access(path, os.W_OK) else [f"{path}: cannot write in this folder ({what})"]
        return [f"{path}: already exists; an earlier {what} is never overwritten"]
    existing = _nearest_existing(path.parent)
    if not existing.is_dir():
        return [f"{path}: {existing} is a file, not a folder, so the {what} cannot go there"]
    if not os.access(existing, os.W_OK | os.X_OK):
        return [f"{path}: cannot write in {existing} ({what})"]
    return []


def inside_problems(path: str | Path, copied: list[Path], what: str) -> list[str]:
    """Why `path` cannot receive a copy of the `copied` folders: it lies inside one of them (the copy would copy
    itself)."""
    target = Path(path).resolve()
    return [f"{path}: inside {folder}, which the {what} copies; choose a place outside it" for folder in copied
            if target.is_relative_to(Path(folder).resolve())]


def sha256_of(*paths: str | Path) -> str:
    """sha256 of the files' bytes, read in turn in blocks (a file's identity, whatever its name or size)."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def free_bytes(path: str | Path) -> int:
    return shutil.disk_usage(_nearest_existing(Path(path))).free


@contextmanager
def atomic_file(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """A temporary path beside `path` to write to. When the block ends without error it takes `path`'s place
    in one step (a hard link, which fails rather than replace a file that appeared meanwhile; a rename with
    `overwrite`); on any error or interrupt it is removed, so a partial `path` never exists."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        if overwrite:
            os.replace(tmp, path)
            return
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise UserError(f"{path}: already exists; it is never overwritten") from None
        except OSError:  # file systems without hard links
            if path.exists():
                raise UserError(f"{path}: already exists; it is never overwritten") from None
            os.rename(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | Path, text: str, overwrite: bool = False) -> Path:
    with atomic_file(path, overwrite) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def staging_owner(path: str | Path) -> int | None:
    """The process id of the `atomic_folder` build that `path` is the staging folder of (`.<name>.<pid>.<random>`),
    or None when it is not one."""
    match = re.fullmatch(r"\.(.+)\.(\d+)\.[A-Za-z0-9_]+", Path(path).name)
    return int(match.group(2)) if match else None


def discard_if_stale(folder: str | Path) -> bool:
    """Remove `folder` when it is a staging folder that a killed build left (its process is gone)."""
    pid = staging_owner(folder)
    if pid is None or _alive(pid) or not Path(folder).is_dir():
        return False
    shutil.rmtree(folder, ignore_errors=True)
    return True


def remove_stale_staging(path: str | Path) -> list[Path]:
    """Remove the staging folders of `path` that killed builds left; returns them."""
    path = Path(path)
    return [p for p in path.parent.glob(f".{glob.escape(path.name)}.*") if discard_if_stale(p)]


@contextmanager
def atomic_folder(path: str | Path, what: str) -> Iterator[Path]:
    """A hidden folder beside `path` to build a `what` (bundle, merged model) in. When the block ends without
    error it is renamed to `path`; on any error or interrupt it is removed, so a half-built `path` never
    exists and an existing one (even one that appeared meanwhile) is never overwritten. A staging folder that a
    killed build left beside `path` is removed first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(path)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", dir=path.parent))
    try:
        yield staging
        if path.exists() or path.is_symlink():
            raise UserError(f"{path}: appeared while it was built; an existing {what} is never overwritten")
        staging.rename(path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
