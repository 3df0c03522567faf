"""Atomic file writes and checksums: a reader, or a crash, never sees a half-written file.

`atomic_write` is the project's one way to write a file that matters (shards' manifests, exports, checkpoints,
statistics, reports): the bytes go to a temporary file of its own, ``.<name>.<random>.tmp``, in the destination
folder (so the final rename never crosses filesystems, and two writers of one file never share a temporary file),
are flushed to disk, and `os.replace` puts them in place in one step; then the folder entry is flushed. Until the
rename the previous file, if any, is untouched; on any error the temporary file is removed. Files get the usual
permissions (0666 minus the umask), whatever wrote them.

Nothing is written or deleted through a symbolic link: a destination folder that is a link, a temporary file that is
one, or a ``*.tmp`` leftover that is one is refused with `LinkRefused`, which names the link (`os.replace` itself
replaces a link at the destination name, never what it points to).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from data_tools.errors import DataToolError

TMP_SUFFIX = ".tmp"
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(DataToolError, OSError):
    """A write ran out of space (ENOSPC / EDQUOT). Nothing was replaced: the previous file, if any, is intact."""


class LinkRefused(DataToolError):
    """A write, delete, truncate or append would have gone through a symbolic link; nothing was done."""


def link_refused(path: Path, action: str) -> LinkRefused:
    """The one-sentence error of `action` (e.g. "write checkpoints/last.ckpt") refused because `path` is a link."""
    try:
        target = os.readlink(path)
    except OSError:
        target = "?"
    return LinkRefused(f"{path} is a symbolic link (to {target}); refusing to {action} through it, since a link "
                       "can lead anywhere: remove the link (or write elsewhere) and rerun")


def refuse_link(path: Path, action: str) -> None:
    """Raise `link_refused(path, action)` when `path` itself is a symbolic link (dangling or not)."""
    if os.path.islink(path):
        raise link_refused(path, action)


def _mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def disk_full(path: Path, written: int, size_hint: int | None) -> DiskFullError:
    """The one-sentence error of a write of `path` that ran out of space after `written` bytes."""
    free = shutil.disk_usage(path.parent).free
    needed = f"about {_mib(size_hint)} needed" if size_hint else f"full after {_mib(written)}"
    kept = f"the previous {path.name} is intact" if path.exists() else "nothing was written"
    return DiskFullError(f"no space left in {path.parent} to write {path.name} ({needed}, {_mib(free)} free); "
                         f"{kept}: free some space and rerun the same command")


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
    """A new, empty file beside `path` where `atomic_write` stages it: ``.<name>.<random>.tmp``, unique to the call."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    os.close(fd)
    return Path(name)


def remove_temporaries(folder: Path) -> list[Path]:
    """Delete the ``*.tmp`` leftovers of a killed writer in `folder` (call it only while no other process writes
    there); returns what was deleted. A `folder` that is a symbolic link, or a ``*.tmp`` entry that is one (no writer
    of ours leaves a link), is refused before anything is deleted (`LinkRefused`)."""
    folder = Path(folder)
    refuse_link(folder, f"delete the temporary files of {folder.name}")
    found = sorted(folder.glob(f"*{TMP_SUFFIX}"))
    for path in found:
        refuse_link(path, "delete a temporary file")
    for path in found:
        path.unlink(missing_ok=True)
    return found


def atomic_write(path: str | Path, write: Callable[[Path], Any], previous: str | Path | None = None,
                 size_hint: int | None = None) -> Path:
    """Create or replace `path` atomically: `write(tmp)` writes the whole file to a temporary path in the same
    folder, which is then flushed, renamed over `path` and its folder flushed (see the module doc). With `previous`,
    the file being replaced is kept under that name (renamed once the new one is complete on disk), so that a damaged
    new file can fall back to it. A full disk raises `DiskFullError` (`size_hint`: the bytes the file needs, for its
    message). A destination folder that is a symbolic link is refused (`LinkRefused`). Returns `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    refuse_link(path.parent, f"write {path.name}")
    tmp = temporary_path(path)
    try:
        write(tmp)
        refuse_link(tmp, f"write {path.name}")  # the writer replaced its temporary file with a link
        os.chmod(tmp, default_mode())  # some writers (safetensors, mkstemp) create 0600 files
        fsync_file(tmp)
        if previous is not None and path.is_file():
            os.replace(path, previous)
        os.replace(tmp, path)
    except OSError as err:
        written = tmp.stat().st_size if tmp.exists() else 0
        tmp.unlink(missing_ok=True)
        if err.errno in DISK_FULL:
            raise disk_full(path, written, size_hint) from err
        raise
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
