"""``python -m data_tools.inspect SHARDS [--verify]``: counts, resolution, integrity and a preview grid.

SHARDS is a shard directory (with its ``manifest.json``), a glob or brace pattern, a URL brace pattern
(``https://host/data/x-train-{000000..000009}.tar``, ``s3://...``, ``pipe:...``), a URL folder (the shards its
``manifest.json`` lists), or several of them. Every shard is
read once, front to back, and compared with its manifest record (size and sample count; with ``--verify`` also its
sha256). Exit status 0 when every shard matches, 1 otherwise.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from webdataset.tariterators import base_plus_ext

from data_tools.errors import DataToolError, run_cli
from data_tools.files import atomic_write
from data_tools.http_stream import ShardReadError
from data_tools.locations import Location, name_of
from data_tools.manifest import PREVIEW_NAME
from data_tools.reading import open_location
from data_tools.shard_index import HOW_TO_CREATE, iter_tar_samples, manifest_records, resolve_shards, shard_info
from data_tools.tarread import iter_tar_members


@dataclass
class ShardCheck:
    """The verdict on one shard: samples counted in the tar, and a status (``ok`` or what is wrong)."""

    path: Location
    split: str
    samples: int
    status: str


class _Tally(io.RawIOBase):
    """Passes a stream through, counting its bytes and (when asked) hashing them."""

    def __init__(self, stream: io.BufferedIOBase, digest: bool) -> None:
        super().__init__()
        self.stream, self.nbytes = stream, 0
        self.sha256 = hashlib.sha256() if digest else None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:
        data = self.stream.read(len(buffer))
        buffer[:len(data)] = data
        self.nbytes += len(data)
        if self.sha256 is not None:
            self.sha256.update(data)
        return len(data)


def scan_shard(location: Location, digest: bool) -> tuple[int, int, str | None]:
    """(samples, bytes, sha256 or None) of the shard at `location`, read once front to back."""
    with open_location(location) as stream:
        tally = _Tally(stream, digest)
        reader = io.BufferedReader(tally, 1 << 20)
        keys, last = 0, None
        for name, _ in iter_tar_members(reader, "the tar"):
            key = base_plus_ext(name)[0]
            keys, last = keys + (key != last), key
        while reader.read(1 << 20):  # the blocks after the end-of-archive marker count towards the size
            pass
    return keys, tally.nbytes, tally.sha256.hexdigest() if tally.sha256 is not None else None


def check_shard(path: Location, record: dict | None, verify: bool = False) -> ShardCheck:
    """Count samples and compare size, sample count (and with `verify` the sha256) with the manifest record."""
    try:
        samples, nbytes, sha256 = scan_shard(path, digest=verify and record is not None)
    except (ValueError, ShardReadError) as err:
        return ShardCheck(path, record["split"] if record else "?", 0, f"unreadable ({err})")
    if record is None:
        return ShardCheck(path, "?", samples, "not in a manifest (unverified)")
    problems = []
    if "nbytes" in record and nbytes != record["nbytes"]:
        problems.append(f"{nbytes} bytes, manifest says {record['nbytes']}")
    if samples != record["count"]:
        problems.append(f"{samples} samples, manifest says {record['count']}")
    if verify and sha256 != record["sha256"]:
        problems.append("sha256 mismatch")
    return ShardCheck(path, record["split"], samples, "; ".join(problems) or "ok")


def preview_grid(paths: list[Location], n: int) -> np.ndarray | None:
    """The first `n` images of `paths` (in order) tiled into one uint8 RGB array, or None if there are none."""
    images: list[np.ndarray] = []
    for path in paths:
        for _, fields in iter_tar_samples(path):
            data = fields.get("png") or fields.get("jpg")
            if data is not None:
                images.append(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
            if len(images) >= n:
                break
        if len(images) >= n:
            break
    if not images:
        return None
    side = images[0].shape[0]
    cols = math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / cols)
    grid = np.full((rows * (side + 2) + 2, cols * (side + 2) + 2, 3), 255, np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        grid[2 + r * (side + 2): 2 + r * (side + 2) + side, 2 + c * (side + 2): 2 + c * (side + 2) + side] = img
    return grid


def report(spec: list[str], preview: Path | None, n_preview: int, verify: bool = False) -> int:
    """Print the report for the shards named by `spec`; return the exit status."""
    paths = resolve_shards(spec)
    if not paths:
        raise DataToolError(f"no shards match {' '.join(spec)}; {HOW_TO_CREATE}")
    info = shard_info(paths)
    records = manifest_records(info.manifest) if info.manifest else {}
    checks = [check_shard(p, records.get(name_of(p)), verify) for p in paths]
    if info.manifest:
        m = info.manifest
        print(f"dataset {m['name']!r} ({m['kind']}), complete: {m['complete']}, split seed: "
              f"{m['config'].get('split_seed')}, resolution: {info.resolution}")
        if info.fields:
            print("fields: " + ", ".join(f"{k}{tuple(v)}" for k, v in info.fields.items()))
    per_split: dict[str, list[ShardCheck]] = defaultdict(list)
    for check in checks:
        per_split[check.split].append(check)
    for split, items in per_split.items():
        expected = info.manifest["splits"][split]["count"] if split in (info.manifest or {}).get("splits", {}) else "?"
        print(f"{split}: {sum(c.samples for c in items)} samples in {len(items)} shards (manifest: {expected})")
    bad = [c for c in checks if c.status != "ok"]
    for c in bad:
        print(f"  {name_of(c.path)}: {c.status}")
    what = "size, count and sha256" if verify else "size and count; --verify adds the sha256"
    print(f"integrity ({what}): {len(checks) - len(bad)}/{len(checks)} shards match the manifest")
    skipped = (info.manifest or {}).get("skipped", [])
    if skipped:
        print(f"skipped at sharding: {len(skipped)} files, e.g. {skipped[0]['file']}: {skipped[0]['reason']}")
    _write_preview(paths, info.kind, preview or Path(PREVIEW_NAME), n_preview)
    return 1 if bad else 0


def _write_preview(paths: list[Location], kind: str, grid_path: Path, n: int) -> None:
    if kind != "images" or n <= 0:
        return
    grid = preview_grid(paths, n)
    if grid is not None:
        atomic_write(grid_path, lambda tmp: Image.fromarray(grid).save(tmp, format="PNG"))
        print(f"preview of the first {n} images: {grid_path}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m data_tools.inspect",
                                description="Counts, resolution, checksum verification and a preview grid of shards.")
    p.add_argument("shards", nargs="+", help="shard directory, glob or brace pattern, URL pattern or URL folder")
    p.add_argument("--preview", type=Path, default=None,
                   help=f"where the preview grid PNG goes (default: {PREVIEW_NAME} in the working directory; never "
                        "into the dataset)")
    p.add_argument("--preview-images", type=int, default=64, help="images in the preview grid (0: no preview)")
    p.add_argument("--verify", action="store_true", help="also compare every shard's sha256 with the manifest")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(lambda: report(args.shards, args.preview, args.preview_images, args.verify))


if __name__ == "__main__":
    raise SystemExit(main())
