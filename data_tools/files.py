"""Atomic file writes and checksums: a reader, or a crash, never sees a half-written file.

`atomic_write` is the project's one way to write a file that matters (shards' manifests, exports, checkpoints,
statistics, reports): the bytes go to ``<name>.tmp`` in the destination folder (so the final rename never crosses
filesystems), are flushed to disk, and `os.replace` puts them in place in one step; then the folder entry is flushed.
Until the rename the previous file, if any, is untouched; on any error the temporary file is removed. Files get the
usual permissions (0666 minus the umask), whatever wrote them.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

TMP_SUFFIX = ".tmp"


def fsync_dir(path: Path) -> None:
    """Flush a directory entry (after a rename) to disk; a no-op where the OS does not support it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    """Flush a file's data to disk (whoever wrote it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def default_mode() -> int:
    """The permissions `open()` gives a new file: 0o666 minus the process umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def temporary_path(path: Path) -> Path:
    """Where `atomic_write` stages `path`: ``<name>.tmp`` beside it."""
    return path.with_name(path.name + TMP_SUFFIX)


def atomic_write(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Create or replace `path` atomically: `write(tmp)` writes the whole file to a temporary path in the same
    folder, which is then flushed, renamed over `path` and its folder flushed (see the module doc). Returns `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        write(tmp)
        os.chmod(tmp, default_mode())  # some writers (safetensors, mkstemp) create 0600 files
        fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """Write `obj` as indented, key-sorted JSON (byte-stable for equal content) atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def sha256_file(path: Path, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()
