"""Writing files so that readers never see half of one: a file (`atomic_write`) or a folder (`publish_folder`)."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write(path: Path, write: Any) -> None:
    """Call `write(tmp_path)` then rename over `path`: readers see the old file or the new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def temp_prefix(dest: Path) -> str:
    """Name prefix of `publish_folder`'s temp folders beside `dest` (a cleaner globs `.tmp-*` for crashed writers')."""
    return f".tmp-{dest.name}-"


def publish_folder(build: Callable[[Path], None], dest: Path, *, replace: bool = True) -> bool:
    """Call `build(tmp)` on a new empty folder beside `dest`, then rename it to `dest`: readers see the old
    folder or the complete new one, never a half-written one. A failed build leaves nothing behind.

    replace: an existing `dest` is moved aside just before the rename and removed after it (put back if the
    rename fails). Without it an existing `dest` is kept. Either way, when another writer's `dest` appears
    first the rename fails and this copy is discarded: returns False (the caller may check that `dest`);
    True when this copy was published.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    # A unique name, made with mkdir (not mkdtemp's 0700): the published folder gets the umask's mode.
    tmp = dest.parent / f"{temp_prefix(dest)}{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    old = tmp.with_name(tmp.name + "-old")
    try:
        build(tmp)
        if replace and dest.exists():  # a rename never overwrites a non-empty folder
            os.replace(dest, old)
        try:
            os.rename(tmp, dest)
        except OSError:
            if dest.exists():
                return False  # another writer published first
            if old.exists():
                os.replace(old, dest)  # put the previous folder back
            raise
        return True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
