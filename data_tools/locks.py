"""Advisory inter-process locks on a lock file (POSIX `flock`): take turns (`exclusive`) or refuse a second writer
(`sole_writer`).

`sole_writer` is how a folder gets one writer: the first process takes the lock and writes its pid, command and start
time into the lock file; a second process that finds it held gets `FolderInUse`, whose message names the holder. The
lock belongs to the open file, so it goes away with the process that held it, however it ended (a kill included):
a lock file left behind by a dead process is taken over, never a reason to refuse. A lock file is opened without
following a link (`O_NOFOLLOW`): a lock file that is a symbolic link, or not a regular file, is refused
(`LinkRefused`), so that taking a lock never truncates or writes a file elsewhere.
"""

from __future__ import annotations

import os
import stat
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from data_tools.errors import DataToolError
from data_tools.files import LinkRefused, link_refused

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, every lock is granted
    fcntl = None  # type: ignore[assignment]


class FolderInUse(DataToolError):
    """Another live process holds the lock of a folder this process was about to write."""


NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def open_lock_file(lock_path: Path) -> int:
    """A descriptor of `lock_path`, created if need be, opened read-write without following a link; a link or
    anything but a regular file raises `LinkRefused` (nothing was written)."""
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | NOFOLLOW, 0o666)
    except OSError as err:
        if os.path.islink(lock_path):  # ELOOP: O_NOFOLLOW met a link
            raise link_refused(lock_path, "take the lock") from err
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise LinkRefused(f"the lock file {lock_path} is not a regular file; remove it and rerun")
    return fd


@contextmanager
def exclusive(lock_path: Path) -> Iterator[None]:
    """Hold `lock_path` exclusively, waiting for whoever holds it (processes take turns)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    if fcntl is None:  # pragma: no cover
        yield
        return
    fd = open_lock_file(lock_path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def holder_of(lock_path: Path) -> str:
    """What the lock file says about the process that holds it ("process 123 (python -m ..., since 10:02:11)")."""
    try:
        text = lock_path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        text = ""
    fields = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    if "pid" not in fields:
        return "another process (it has not written its pid yet)"
    details = ", ".join(v for v in (fields.get("command", ""), f"since {fields['started']}" if "started" in fields
                                    else "") if v)
    return f"process {fields['pid']}" + (f" ({details})" if details else "")


def _same_file(handle: int, path: Path) -> bool:
    """Whether `path` still names the open file `handle` (a lock taken on a file since removed is no lock)."""
    try:
        return os.path.samestat(os.fstat(handle), os.stat(path))
    except FileNotFoundError:
        return False


@contextmanager
def sole_writer(lock_path: Path, what: str, fix: str) -> Iterator[Path]:
    """Hold `lock_path` for as long as the block runs, or raise `FolderInUse` at once when a live process holds it:
    "<what> is in use by process <pid> (...); <fix>". The lock file stays where the folder holds anything else (it
    only holds the last holder's pid); a folder left holding nothing but the lock file (a start that failed) is
    removed with it, while the lock is still held."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    if fcntl is None:  # pragma: no cover
        yield lock_path
        return
    while True:
        fd = open_lock_file(lock_path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise FolderInUse(f"{what} is in use by {holder_of(lock_path)}; {fix}") from None
        if _same_file(fd, lock_path):
            break
        os.close(fd)  # the holder removed the lock file between our open and our lock: take the new one
    try:
        argv = getattr(sys, "orig_argv", sys.argv)  # python -m latent_ndm.train stage=vae ...
        command = " ".join(Path(a).name if i == 0 else a for i, a in enumerate(argv[:5])).replace("\n", " ")[:120]
        record = f"pid={os.getpid()}\ncommand={command}\nstarted={time.strftime('%Y-%m-%d %H:%M:%S')}\n"
        os.ftruncate(fd, 0)
        os.pwrite(fd, record.encode("utf-8"), 0)
        yield lock_path
    finally:
        _remove_if_alone(lock_path)
        os.close(fd)  # closing the file releases the lock


def _remove_if_alone(lock_path: Path) -> None:
    """Remove `lock_path` and its folder when the lock file is all the folder holds. Called while the lock is held:
    a process that opened the file meanwhile finds it removed once it gets the lock, and takes a new one."""
    folder = lock_path.parent
    try:
        if [p.name for p in folder.iterdir()] == [lock_path.name]:
            lock_path.unlink()
            folder.rmdir()
    except OSError:
        pass
