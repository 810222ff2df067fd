"""The model cache: dequantized GGUF models as safetensors folders under `$SOFTPROMPT_CACHE/models/<key>`.

Keys are by content: `<file stem>-<sha256 of the GGUF file's bytes, 12 hex digits>-v<CACHE_VERSION>`, so every
install of the same file (a fresh venv gives it a new path and mtime) shares one entry. The digest is computed
once per install and remembered in a small index (`gguf-digests.json`: resolved path -> size, mtime, sha256);
a file whose size or mtime changed is hashed again, never dequantized again unless its bytes changed.

Entries made before content keys were named by the file's name, size and mtime. The one the current file
made is renamed to its content key when that file is loaded (no rebuild); the others (from installs since
gone) are listed by `softprompt cache list` and removed by `softprompt cache clear`.

Each entry's manifest records its files and sizes, the embedding fingerprint and where it came from; the
manifest's mtime is touched on every load, which `cache list` reports as "last used".
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from softprompt.errors import UsageError
from softprompt.files import atomic_write

MANIFEST = "softprompt-manifest.json"
CACHE_VERSION = 1  # bump when the cache layout changes: old entries then get new keys
DIGEST_INDEX = "gguf-digests.json"
_CHUNK = 1 << 20


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """Where dequantized models live: `cache_dir`, else $SOFTPROMPT_CACHE, else ~/.cache/softprompt."""
    root = cache_dir or os.environ.get("SOFTPROMPT_CACHE") or Path.home() / ".cache" / "softprompt"
    return Path(root).expanduser()


def content_key(stem: str, sha256: str) -> str:
    """An entry's folder name from the source file's stem and the sha256 of its bytes (Gemma's too)."""
    return f"{stem}-{sha256[:12]}-v{CACHE_VERSION}"


def legacy_gguf_key(path: Path) -> str:
    """The key entries had before content keys: name, size and mtime (kept only to adopt those entries)."""
    stat = path.stat()
    digest = hashlib.sha256(f"{path.name}|{stat.st_size}|{stat.st_mtime_ns}|{CACHE_VERSION}".encode())
    return f"{path.stem}-{digest.hexdigest()[:12]}"


def sha256_of(path: Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB chunks (the default GGUF is ~100 MB: well under a second)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_digest(path: Path, root: Path) -> str:
    """The sha256 of `path`, from the index when its resolved path, size and mtime are as recorded; else
    computed and recorded (entries of files that no longer exist are dropped on the way)."""
    stat = path.stat()
    where = str(path.resolve())
    index = _read_index(root)
    known = index.get(where)
    if (isinstance(known, dict) and known.get("size") == stat.st_size and known.get("mtime_ns") == stat.st_mtime_ns
            and isinstance(known.get("sha256"), str)):
        return str(known["sha256"])
    digest = sha256_of(path)
    index = {p: v for p, v in index.items() if Path(p).exists()}
    index[where] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}
    # Two loaders writing at once may each drop the other's line: that costs one rehash, never a wrong key.
    # A read-only cache still works: the file is hashed again on the next load.
    with contextlib.suppress(OSError):
        atomic_write(root / DIGEST_INDEX, lambda tmp: Path(tmp).write_text(json.dumps(index, indent=1)))
    return digest


def _read_index(root: Path) -> dict[str, Any]:
    try:
        index = json.loads((root / DIGEST_INDEX).read_text())
    except (OSError, ValueError):  # missing or damaged: start again, it only saves hashing
        return {}
    return index if isinstance(index, dict) else {}


def gguf_key(path: Path, root: Path) -> tuple[str, str]:
    """(entry key, sha256) of a GGUF file; an entry this very file made under the old key is renamed to it."""
    digest = file_digest(path, root)
    key = content_key(path.stem, digest)
    new, old = root / "models" / key, root / "models" / legacy_gguf_key(path)
    if not new.exists() and old.is_dir():
        with contextlib.suppress(OSError):  # another loader moved it first, or a read-only cache: built anew
            os.rename(old, new)
    return key, digest


def check_manifest(entry: Path) -> str | None:
    """None when every file the manifest lists is there with its size; else what is wrong."""
    try:
        manifest = json.loads((entry / MANIFEST).read_text())
    except (OSError, ValueError) as err:
        return f"no readable manifest: {err}"
    if not isinstance(manifest, dict):
        return "the manifest is not a JSON object"
    if manifest.get("version") != CACHE_VERSION:
        return f"manifest version {manifest.get('version')} != {CACHE_VERSION}"
    for file, size in manifest.get("files", {}).items():
        path = entry / file
        if not path.is_file() or path.stat().st_size != size:
            return f"{file} is missing or has the wrong size"
    return None if manifest.get("files") else "manifest lists no files"


def touch(entry: Path) -> None:
    """Record a use of `entry` (the manifest's mtime); a read-only cache simply keeps its old time."""
    with contextlib.suppress(OSError):
        os.utime(entry / MANIFEST)


@dataclass(frozen=True)
class CacheEntry:
    """One cached model as `softprompt cache list` shows it."""

    name: str
    path: Path
    size_bytes: int
    source: str
    last_used: float
    fingerprint: str | None
    problem: str | None  # why it would be rebuilt on its next load, or None

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "path": str(self.path), "size_bytes": self.size_bytes, "source": self.source,
                "last_used": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(self.last_used)),
                "fingerprint": self.fingerprint, "problem": self.problem}


def list_entries(root: Path) -> list[CacheEntry]:
    """Every entry under root/models, by name; temp folders of writers (`.tmp-*`) are not entries."""
    folder = root / "models"
    if not folder.is_dir():
        return []
    entries = []
    for path in sorted(folder.iterdir()):
        if path.is_dir() and not path.is_symlink() and not path.name.startswith("."):
            with contextlib.suppress(OSError):  # removed while we looked: not an entry any more
                entries.append(_describe(path))
    return entries


def _describe(path: Path) -> CacheEntry:
    manifest: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        loaded = json.loads((path / MANIFEST).read_text())
        manifest = loaded if isinstance(loaded, dict) else {}
    source = manifest.get("source")
    if isinstance(source, dict):
        shown = f"{source.get('model', '?')} ({source.get('file', '?')})"
    else:
        shown = "unknown: made before content keys"
    size = sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    used = (path / MANIFEST) if (path / MANIFEST).exists() else path
    return CacheEntry(path.name, path, size, shown, used.stat().st_mtime, manifest.get("fingerprint"),
                      check_manifest(path))


def select_entries(root: Path, name: str | None) -> list[CacheEntry]:
    """All entries, or those named `name`: an entry's full name, or the file stem it starts with."""
    entries = list_entries(root)
    if name is None:
        return entries
    chosen = [e for e in entries if e.name == name or e.name.startswith(f"{name}-")]
    if not chosen:
        known = ", ".join(e.name for e in entries) or "none"
        raise UsageError(f"no cached model named {name!r} in {root / 'models'} (cached: {known}); "
                         "`softprompt cache list` shows the names")
    return chosen


def remove_entries(entries: list[CacheEntry]) -> int:
    """Delete entries; returns the bytes freed. Each is first renamed to a writer's temp name, so a loader
    running meanwhile sees it whole or not at all (and then rebuilds it); leftovers are cleared later."""
    freed = 0
    for entry in entries:
        trash = entry.path.with_name(f".tmp-{entry.name}-removed-{os.getpid()}")
        try:
            os.rename(entry.path, trash)
        except FileNotFoundError:  # another `cache clear` was first
            continue
        except OSError as err:
            raise UsageError(f"could not remove {entry.path}: {err}") from err
        shutil.rmtree(trash, ignore_errors=True)
        freed += entry.size_bytes
    return freed
