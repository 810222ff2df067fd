"""files.py: a folder is published whole or not at all, and no temp folder outlives the call."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from softprompt.files import publish_folder, temp_prefix


def writer(text: str, fail: bool = False):
    def build(tmp: Path) -> None:
        (tmp / "a.txt").write_text(text)
        if fail:
            raise RuntimeError("disk full")
        (tmp / "b.txt").write_text(text)
    return build


def leftovers(dest: Path) -> list[Path]:
    return list(dest.parent.glob(temp_prefix(dest) + "*"))


def test_publish_creates_then_replaces_a_folder(tmp_path):
    dest = tmp_path / "deep" / "model"
    assert publish_folder(writer("one"), dest)
    assert (dest / "b.txt").read_text() == "one" and not leftovers(dest)
    assert publish_folder(writer("two"), dest)
    assert sorted(p.name for p in dest.iterdir()) == ["a.txt", "b.txt"] and (dest / "a.txt").read_text() == "two"
    assert not leftovers(dest)


def test_a_failed_build_leaves_the_old_folder_and_no_temp(tmp_path):
    dest = tmp_path / "model"
    publish_folder(writer("old"), dest)
    with pytest.raises(RuntimeError, match="disk full"):
        publish_folder(writer("new", fail=True), dest)
    assert (dest / "a.txt").read_text() == "old" and (dest / "b.txt").is_file()
    assert not leftovers(dest)


def test_without_replace_an_existing_folder_wins(tmp_path):
    """As when another writer published first: this copy is discarded and the call says so."""
    dest = tmp_path / "entry"
    publish_folder(writer("first"), dest)
    assert publish_folder(writer("second"), dest, replace=False) is False
    assert (dest / "a.txt").read_text() == "first" and not leftovers(dest)


def test_the_published_folder_follows_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        publish_folder(writer("x"), tmp_path / "shared")
    finally:
        os.umask(old)
    assert (tmp_path / "shared").stat().st_mode & 0o777 == 0o755  # not a private 0700 temp folder
