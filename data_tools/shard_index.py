"""Finding shards and what they hold: pattern expansion, the shards of each split of a folder, per-shard sample
counts, the manifest behind them.

Shards are named ``{name}-{split}-{index:06d}.tar`` (`data_tools.writer.shard_filename`) and live in a local folder
or under a URL prefix (`data_tools.locations`). A local folder is listed; a remote one is known by its manifest (a
server cannot be listed). The data module, the latent encoder, ``fid_stats`` and ``data_tools.inspect`` all build on
these functions.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_tools.errors import DataToolError
from data_tools.http_stream import DEFAULT_READ, ReadOptions
from data_tools.locations import Location, expand_shards, folder_of, is_remote, join, local_path, name_of, scheme
from data_tools.manifest import read_manifest
from data_tools.reading import iter_shard_samples

__all__ = ["expand_shards"]

_SHARD = re.compile(r"^(?P<name>[A-Za-z0-9_-]+)-(?P<split>[A-Za-z0-9_]+)-\d{6,}\.tar$")

HOW_TO_CREATE = ("create shards with `python -m data_tools.synthetic data/synthetic-32` (embedded default set) "
                 "or `python -m data_tools.shard SRC OUT` (your images)")


def split_pattern(root: str | Path, split: str) -> str:
    """The glob of one split's shards in a shard folder, e.g. ``data/synthetic-32/*-train-*.tar``."""
    return str(local_path(root) / f"*-{split}-*.tar")


def resolve_shards(spec: str | Path | Sequence[str | Path], options: ReadOptions = DEFAULT_READ) -> list[Location]:
    """`expand_shards`, where a remote folder (a URL that does not name a ``.tar``) means every shard its manifest
    lists."""
    specs = [spec] if isinstance(spec, str | Path) else list(spec)
    found: set[str] = set()
    for item in specs:
        if is_remote(item) and scheme(item) != "pipe" and not str(item).rstrip("/").endswith((".tar", "}")):
            found.update(p for paths in shards_by_split(str(item).rstrip("/"), (), options)[1].values() for p in paths)
        else:
            found.update(expand_shards(item))
    return sorted(found)


def split_shards(root: str | Path, split: str, options: ReadOptions = DEFAULT_READ) -> str | list[Location]:
    """The shards of one split of a shard folder, as a spec for `expand_shards`: a glob for a local folder, the
    manifest's list for a remote one."""
    if not is_remote(root):
        return split_pattern(root, split)
    return shards_by_split(str(root), [split], options)[1][split]


def shards_by_split(folder: str | Path, wanted: Sequence[str] = (), options: ReadOptions = DEFAULT_READ
                    ) -> tuple[str, dict[str, list[Location]]]:
    """(dataset name, split -> its shards) of a shard folder holding one dataset; `wanted` limits the splits
    (empty: all of them). One-sentence `DataToolError`s when the folder is missing, empty or mixed.

    A local folder is listed; a remote folder (a URL prefix) must have its ``manifest.json``, which lists them."""
    found: dict[str, list[Location]] = {}
    names = set()
    if is_remote(folder):
        manifest = read_manifest(str(folder), options)
        if manifest is None:
            raise DataToolError(f"no manifest.json under {folder}: a remote shard folder is known by its manifest; "
                                "serve the folder with it, or name the shards with a brace pattern "
                                "(NAME-SPLIT-{000000..000009}.tar)")
        names.add(manifest["name"])
        for split, state in sorted(manifest.get("splits", {}).items()):
            found[split] = [join(folder, r["file"]) for r in state["shards"]]
    else:
        path = local_path(folder)
        if not path.is_dir():
            raise DataToolError(f"no shard folder {folder}; {HOW_TO_CREATE}")
        for shard in sorted(path.glob("*.tar")):
            if match := _SHARD.match(shard.name):
                names.add(match["name"])
                found.setdefault(match["split"], []).append(str(shard))
    if not found:
        raise DataToolError(f"no shards (NAME-SPLIT-000000.tar) in {folder}; {HOW_TO_CREATE}")
    if len(names) > 1:
        raise DataToolError(f"{folder} holds shards of several datasets ({', '.join(sorted(names))}); one per folder")
    absent = [s for s in wanted if s not in found]
    if absent:
        raise DataToolError(f"{folder} has no {', '.join(absent)} shards (it has {', '.join(sorted(found))})")
    return names.pop(), {s: found[s] for s in (wanted or sorted(found))}


def iter_tar_samples(location: str | Path, options: ReadOptions = DEFAULT_READ
                     ) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Yield (key, {field: bytes}) for each sample of a webdataset tar, in file order."""
    for sample in iter_shard_samples(location, options):
        yield str(sample["__key__"]), {k: v for k, v in sample.items() if not k.startswith("__")}


def count_tar_samples(location: str | Path, options: ReadOptions = DEFAULT_READ) -> int:
    """Number of samples (distinct consecutive keys) in a tar."""
    return sum(1 for _ in iter_shard_samples(location, options))


@dataclass
class ShardInfo:
    """Shards and what the manifest next to them says (`manifest` is None without one).

    `counts[i]` is the number of samples in `paths[i]` (from the manifest, else counted from the tar).
    `resolution` is the image side for image shards; `fields` maps array names to shapes for latent shards.
    """

    paths: list[Location]
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


def shard_info(paths: Sequence[str | Path], options: ReadOptions = DEFAULT_READ) -> ShardInfo:
    """Counts and metadata of the shards at `paths`, from the manifest(s) beside them when available (a shard
    without a manifest record is counted by reading it)."""
    manifests: dict[str, dict[str, Any] | None] = {}
    records: dict[str, dict[str, dict[str, Any]]] = {}
    counts: list[int] = []
    first_manifest = None
    for path in paths:
        folder = folder_of(path)
        if folder not in manifests:
            manifests[folder] = read_manifest(folder, options) if folder else None
            records[folder] = manifest_records(manifests[folder]) if manifests[folder] else {}
        record = records[folder].get(name_of(path))
        counts.append(record["count"] if record else count_tar_samples(path, options))
        first_manifest = first_manifest or manifests[folder]
    info = ShardInfo(paths=[str(p) for p in paths], counts=counts, manifest=first_manifest)
    if first_manifest is not None:
        info.kind = first_manifest.get("kind", "images")
        info.resolution = first_manifest.get("config", {}).get("resolution")
        info.fields = first_manifest.get("config", {}).get("fields", {})
    return info


@dataclass
class DamagedShard:
    """A shard that does not match its manifest record (or cannot be read), and how many samples it should hold."""

    path: Location
    problem: str
    count: int


def damaged_shards(info: ShardInfo) -> list[DamagedShard]:
    """The local shards of `info` whose size differs from their manifest record (a cheap check: no shard is read).
    Shards without a manifest record cannot be checked and are not listed; nor are remote shards, which are checked
    as they are read."""
    records = manifest_records(info.manifest) if info.manifest else {}
    out = []
    for path, count in zip(info.paths, info.counts, strict=True):
        record = records.get(name_of(path))
        if record is None or "nbytes" not in record or is_remote(path):
            continue
        file = local_path(path)
        size = file.stat().st_size if file.is_file() else None
        if size != record["nbytes"]:
            found = "missing" if size is None else f"{size} bytes"
            out.append(DamagedShard(path, f"{found}, the manifest says {record['nbytes']} bytes", int(count)))
    return out


def without(info: ShardInfo, dropped: Sequence[str]) -> ShardInfo:
    """`info` with the shards `dropped` left out."""
    keep = [(p, c) for p, c in zip(info.paths, info.counts, strict=True) if p not in set(dropped)]
    return ShardInfo(paths=[p for p, _ in keep], counts=[c for _, c in keep], kind=info.kind,
                     resolution=info.resolution, fields=dict(info.fields), manifest=info.manifest)
