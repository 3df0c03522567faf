"""Finding shards and what they hold: pattern expansion, the shards of each split of a folder, per-shard sample
counts, the manifest behind them.

Shards are named ``{name}-{split}-{index:06d}.tar`` (`data_tools.writer.shard_filename`). No torch here: the data
module, the latent encoder and ``data_tools.inspect`` all build on these functions.
"""

from __future__ import annotations

import glob
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import braceexpand

from data_tools.errors import DataToolError
from data_tools.manifest import read_manifest
from data_tools.tarread import iter_samples

_SHARD = re.compile(r"^(?P<name>[A-Za-z0-9_-]+)-(?P<split>[A-Za-z0-9_]+)-\d{6,}\.tar$")

HOW_TO_CREATE = ("create shards with `python -m data_tools.synthetic data/synthetic-32` (embedded default set) "
                 "or `python -m data_tools.shard SRC OUT` (your images)")


def expand_shards(spec: str | Path | Sequence[str | Path]) -> list[Path]:
    """Shard files named by a directory, a glob / brace pattern (``x-{000000..000009}.tar``) or a list.

    A directory means every ``*.tar`` in it. The result is sorted and free of duplicates; it may be empty.
    """
    specs = [spec] if isinstance(spec, str | Path) else list(spec)
    found: set[Path] = set()
    for item in specs:
        item = str(item)
        if Path(item).is_dir():
            found.update(Path(item).glob("*.tar"))
            continue
        for pattern in braceexpand.braceexpand(item):
            matches = glob.glob(pattern) if glob.has_magic(pattern) else [pattern]
            found.update(Path(m) for m in matches if Path(m).is_file())
    return sorted(found)


def split_pattern(root: str | Path, split: str) -> str:
    """The glob of one split's shards in a shard folder, e.g. ``data/synthetic-32/*-train-*.tar``."""
    return str(Path(root) / f"*-{split}-*.tar")


def shards_by_split(folder: Path, wanted: Sequence[str] = ()) -> tuple[str, dict[str, list[Path]]]:
    """(dataset name, split -> its shard files) of a shard folder holding one dataset; `wanted` limits the splits
    (empty: all of them). One-sentence `DataToolError`s when the folder is missing, empty or mixed."""
    if not folder.is_dir():
        raise DataToolError(f"no shard folder {folder}; {HOW_TO_CREATE}")
    found: dict[str, list[Path]] = {}
    names = set()
    for path in sorted(folder.glob("*.tar")):
        if match := _SHARD.match(path.name):
            names.add(match["name"])
            found.setdefault(match["split"], []).append(path)
    if not found:
        raise DataToolError(f"no shards (NAME-SPLIT-000000.tar) in {folder}; {HOW_TO_CREATE}")
    if len(names) > 1:
        raise DataToolError(f"{folder} holds shards of several datasets ({', '.join(sorted(names))}); one per folder")
    absent = [s for s in wanted if s not in found]
    if absent:
        raise DataToolError(f"{folder} has no {', '.join(absent)} shards (it has {', '.join(sorted(found))})")
    return names.pop(), {s: found[s] for s in (wanted or sorted(found))}


def iter_tar_samples(path: Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Yield (key, {field: bytes}) for each sample of a webdataset tar, in file order."""
    for sample in iter_samples(path):
        yield str(sample["__key__"]), {k: v for k, v in sample.items() if not k.startswith("__")}


def count_tar_samples(path: Path) -> int:
    """Number of samples (distinct consecutive keys) in a tar."""
    return sum(1 for _ in iter_samples(path))


@dataclass
class ShardInfo:
    """Shards and what the manifest next to them says (`manifest` is None without one).

    `counts[i]` is the number of samples in `paths[i]` (from the manifest, else counted from the tar).
    `resolution` is the image side for image shards; `fields` maps array names to shapes for latent shards.
    """

    paths: list[Path]
    counts: list[int]
    kind: str = "images"
    resolution: int | None = None
    fields: dict[str, list[int]] = field(default_factory=dict)
    manifest: dict[str, Any] | None = None

    @property
    def total(self) -> int:
        return sum(self.counts)


def manifest_records(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Shard file name -> its manifest record (with its split added)."""
    return {r["file"]: {**r, "split": split} for split, state in manifest.get("splits", {}).items()
            for r in state["shards"]}


def shard_info(paths: Sequence[Path]) -> ShardInfo:
    """Counts and metadata of `paths`, from the manifest(s) beside them when available."""
    manifests: dict[Path, dict[str, Any] | None] = {}
    records: dict[Path, dict[str, dict[str, Any]]] = {}
    counts: list[int] = []
    first_manifest = None
    for path in paths:
        parent = path.parent
        if parent not in manifests:
            manifests[parent] = read_manifest(parent)
            records[parent] = manifest_records(manifests[parent]) if manifests[parent] else {}
        record = records[parent].get(path.name)
        counts.append(record["count"] if record else count_tar_samples(path))
        first_manifest = first_manifest or manifests[parent]
    info = ShardInfo(paths=list(paths), counts=counts, manifest=first_manifest)
    if first_manifest is not None:
        info.kind = first_manifest.get("kind", "images")
        info.resolution = first_manifest.get("config", {}).get("resolution")
        info.fields = first_manifest.get("config", {}).get("fields", {})
    return info


@dataclass
class DamagedShard:
    """A shard that does not match its manifest record (or cannot be read), and how many samples it should hold."""

    path: Path
    problem: str
    count: int


def damaged_shards(info: ShardInfo) -> list[DamagedShard]:
    """The shards of `info` whose size differs from their manifest record (a cheap check: no shard is read).
    Shards without a manifest record cannot be checked and are not listed."""
    records = manifest_records(info.manifest) if info.manifest else {}
    out = []
    for path, count in zip(info.paths, info.counts, strict=True):
        record = records.get(path.name)
        if record is None or "nbytes" not in record:
            continue
        size = path.stat().st_size if path.is_file() else None
        if size != record["nbytes"]:
            found = "missing" if size is None else f"{size} bytes"
            out.append(DamagedShard(path, f"{found}, the manifest says {record['nbytes']} bytes", int(count)))
    return out


def without(info: ShardInfo, dropped: Sequence[Path]) -> ShardInfo:
    """`info` with the shards `dropped` left out."""
    keep = [(p, c) for p, c in zip(info.paths, info.counts, strict=True) if p not in set(dropped)]
    return ShardInfo(paths=[p for p, _ in keep], counts=[c for _, c in keep], kind=info.kind,
                     resolution=info.resolution, fields=dict(info.fields), manifest=info.manifest)
