"""Atomic shard writing on top of webdataset's `ShardWriter`.

Each shard is written to ``<name>.tar.tmp`` and renamed to ``<name>.tar`` only when complete, so a killed
run never leaves a partial shard under a final name. Tar headers are pinned (mtime, owner, mode) so equal
samples give byte-identical shards, which is what lets an interrupted run resume.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import webdataset as wds

from data_tools.files import TMP_SUFFIX, fsync_dir, fsync_file, sha256_file

# Fixed tar header fields: 2000-01-01T00:00:00Z, a neutral owner, read-only files. The mtime must be an int:
# a float mtime makes tarfile add a PAX header to every member, doubling the headers readers must parse.
TAR_MTIME = 946684800
TAR_USER = "data"
_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_SPLIT = re.compile(r"^[A-Za-z0-9_]+$")
TAR_MODE = 0o444


def shard_filename(name: str, split: str, index: int) -> str:
    """``{name}-{split}-{index:06d}.tar``, the one naming scheme for shards."""
    return f"{name}-{split}-{index:06d}.tar"


def format_key(index: int, width: int = 6) -> str:
    """A zero-padded sample key without dots, e.g. ``000123``."""
    return f"{index:0{width}d}"


@dataclass
class ShardRecord:
    """What the manifest stores about one complete shard.

    `end_position` is the position (in the split's sample order) just after the shard's last sample;
    a resumed run continues from the last complete shard's `end_position`.
    """

    file: str
    count: int
    sha256: str
    nbytes: int
    first_key: str
    last_key: str
    end_position: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class AtomicShardWriter:
    """Write samples (dicts with ``__key__`` and encoded fields) into ``shard_size``-sample shards.

    webdataset's `ShardWriter` writes each shard under a temporary name; its `post` hook fsyncs the file,
    records size and sha256 and renames it into place, then `on_shard(record)` is called. Empty shards are
    never created: a shard that received no sample is deleted instead of renamed.
    """

    def __init__(
        self,
        out_dir: Path,
        name: str,
        split: str,
        shard_size: int,
        start_shard: int = 0,
        on_shard: Callable[[ShardRecord], None] | None = None,
    ) -> None:
        if shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {shard_size}")
        if not _NAME.match(name) or not _SPLIT.match(split):
            raise ValueError(f"dataset name {name!r} must be [A-Za-z0-9_-]+ and split {split!r} [A-Za-z0-9_]+")
        self.on_shard = on_shard
        self._count = 0
        self._first_key = ""
        self._last_key = ""
        self._last_position = -1
        pattern = str(Path(out_dir) / f"{name}-{split}-%06d.tar{TMP_SUFFIX}")
        self._writer = wds.ShardWriter(
            pattern,
            maxcount=shard_size,
            maxsize=float("inf"),
            post=self._commit,
            start_shard=start_shard,
            verbose=0,
            mtime=TAR_MTIME,
            user=TAR_USER,
            group=TAR_USER,
            mode=TAR_MODE,
            encoder=False,
        )

    def _commit(self, tmp_name: str) -> None:
        """ShardWriter's `post` hook: make the finished temporary file durable and rename it (or drop it if empty)."""
        tmp = Path(tmp_name)
        if self._count == 0:
            tmp.unlink(missing_ok=True)
            return
        fsync_file(tmp)
        final = tmp.with_name(tmp.name.removesuffix(TMP_SUFFIX))
        record = ShardRecord(file=final.name, count=self._count, sha256=sha256_file(tmp), nbytes=tmp.stat().st_size,
                             first_key=self._first_key, last_key=self._last_key,
                             end_position=self._last_position + 1)
        os.replace(tmp, final)
        fsync_dir(final.parent)
        self._count = 0
        if self.on_shard is not None:
            self.on_shard(record)

    def write(self, sample: dict[str, Any], position: int) -> None:
        """Add one sample; `position` is its place in the split's order (for resuming)."""
        key = sample["__key__"]
        if "." in key:
            raise ValueError(f"sample keys must not contain dots, got {key!r}")
        self._writer.write(sample)
        if self._count == 0:
            self._first_key = key
        self._count += 1
        self._last_key = key
        self._last_position = position

    def close(self) -> None:
        """Finish the last shard."""
        self._writer.close()

    def abort(self) -> None:
        """Drop the shard in progress (its temporary file) without renaming it."""
        tar, tmp_name = getattr(self._writer, "tarstream", None), getattr(self._writer, "fname", None)
        if tar is not None:
            try:  # flush the tar stream into the file we are about to delete, so nothing writes later
                tar.close()
            except Exception:  # noqa: BLE001 - the run is already failing; keep the original error
                pass
            self._writer.tarstream = None
        if tmp_name:
            Path(tmp_name).unlink(missing_ok=True)

    def __enter__(self) -> AtomicShardWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
