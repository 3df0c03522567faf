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

from data_tools import tarread
from data_tools.errors import DataToolError, run_cli
from data_tools.files import atomic_write
from data_tools.http_stream import ShardReadError
from data_tools.imageproc import UnusableImage, open_image, rgb_pixels
from data_tools.locations import Location, name_of
from data_tools.manifest import PREVIEW_NAME
from data_tools.reading import open_location
from data_tools.shard_index import HOW_TO_CREATE, iter_tar_samples, manifest_records, resolve_shards, shard_info


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


@dataclass
class Scan:
    """What one pass over a shard found: samples (distinct consecutive keys), bytes, the sha256 (when asked) and
    the samples that a reader would not take as they are (a field given twice, a key that comes back)."""

    samples: int
    nbytes: int
    sha256: str | None
    problems: list[str]


class _Sizes:
    """An `iter_tar_members` admit function that keeps no member (a scan needs only names and sizes) and remembers
    the declared size of the last one."""

    def __init__(self) -> None:
        self.last = 0

    def __call__(self, name: str, size: int) -> bool:
        self.last = size
        return False


def scan_shard(location: Location, digest: bool) -> Scan:
    """One pass over the shard at `location`, front to back (see `Scan`); no member's bytes are held."""
    problems: list[str] = []
    limit = tarread.MAX_SAMPLE_BYTES
    with open_location(location) as stream:
        tally = _Tally(stream, digest)
        reader = io.BufferedReader(tally, 1 << 20)
        keys, last, seen, fields, nbytes, sizes = 0, None, set(), set(), 0, _Sizes()
        for name, _ in tarread.iter_tar_members(reader, "the tar", sizes):
            key, field = base_plus_ext(name)
            if key != last:
                if key in seen:
                    problems.append(f"sample {key} comes twice")
                keys, last, fields, nbytes = keys + 1, key, set(), 0
                seen.add(key)
            if field is not None and field.lower() in fields:
                problems.append(f"sample {key} has two '{field.lower()}' members")
            fields.add(None if field is None else field.lower())
            nbytes += sizes.last
            if nbytes - sizes.last <= limit < nbytes:
                problems.append(f"sample {key} has members of more than {limit} bytes together (the most read for "
                                "one sample)")
        while reader.read(1 << 20):  # the blocks after the end-of-archive marker count towards the size
            pass
    return Scan(keys, tally.nbytes, tally.sha256.hexdigest() if tally.sha256 is not None else None, problems)


def check_shard(path: Location, record: dict | None, verify: bool = False) -> ShardCheck:
    """Count samples and compare size, sample count (and with `verify` the sha256) with the manifest record."""
    try:
        scan = scan_shard(path, digest=verify and record is not None)
    except (ValueError, ShardReadError, MemoryError) as err:
        return ShardCheck(path, record["split"] if record else "?", 0, f"unreadable ({err})")
    samples, nbytes, sha256 = scan.samples, scan.nbytes, scan.sha256
    shown = scan.problems[:2] + ([f"{len(scan.problems) - 2} more such"] if len(scan.problems) > 2 else [])
    if record is None:
        return ShardCheck(path, "?", samples, "; ".join(["not in a manifest (unverified)", *shown]))
    problems = list(shown)
    if "nbytes" in record and nbytes != record["nbytes"]:
        problems.append(f"{nbytes} bytes, manifest says {record['nbytes']}")
    if samples != record["count"]:
        problems.append(f"{samples} samples, manifest says {record['count']}")
    if verify and sha256 != record["sha256"]:
        problems.append("sha256 mismatch")
    return ShardCheck(path, record["split"], samples, "; ".join(problems) or "ok")


PREVIEW_TILE = 128  # the largest tile of the preview grid, in pixels
PREVIEW_MAX_PIXELS = 1 << 24  # an image declaring more is not decoded for the preview (a 4096x4096 one at most)


@dataclass
class Preview:
    """The preview grid (None: no image to show) and the samples it passed over, each with its reason."""

    grid: np.ndarray | None
    passed_over: list[str]


def _tile(data: bytes, side: int | None) -> np.ndarray:
    """One preview tile: the image centre-cropped and shrunk to `side` x `side` (None: its shorter side, at most
    `PREVIEW_TILE`); `UnusableImage` if it cannot be."""
    img = open_image(data, max_pixels=PREVIEW_MAX_PIXELS)
    side = side or min(PREVIEW_TILE, *img.size)
    img.draft("RGB", (side, side))  # JPEG: decode at a reduced size
    pixels = rgb_pixels(img)
    h, w = pixels.shape[:2]
    square = min(h, w)
    top, left = (h - square) // 2, (w - square) // 2
    tile = Image.fromarray(pixels[top:top + square, left:left + square])
    return np.asarray(tile.resize((side, side), Image.Resampling.BILINEAR) if square != side else tile)


def preview_grid(paths: list[Location], n: int, side: int | None = None) -> Preview:
    """The first `n` images of `paths` (in order), each shrunk to `side` pixels (None: the first image's shorter
    side, at most `PREVIEW_TILE`), tiled into one uint8 RGB array. Samples that are not images, or too large to
    decode safely, are passed over and named; so is the rest of a shard that cannot be read."""
    images: list[np.ndarray] = []
    passed_over: list[str] = []
    for path in paths:
        try:
            for key, fields in iter_tar_samples(path):
                data = fields.get("png") or fields.get("jpg")
                if data is None:
                    passed_over.append(f"{key}: no png or jpg member")
                    continue
                try:
                    images.append(_tile(data, side))
                    side = images[-1].shape[0]
                except UnusableImage as err:
                    passed_over.append(f"{key}: {err}")
                if len(images) >= n:
                    break
        except (ValueError, ShardReadError) as err:
            passed_over.append(f"{name_of(path)}: {' '.join(str(err).split())[:160]}")
        if len(images) >= n:
            break
    if not images or side is None:
        return Preview(None, passed_over)
    cols = math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / cols)
    grid = np.full((rows * (side + 2) + 2, cols * (side + 2) + 2, 3), 255, np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        grid[2 + r * (side + 2): 2 + r * (side + 2) + side, 2 + c * (side + 2): 2 + c * (side + 2) + side] = img
    return Preview(grid, passed_over)


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
    side = min(PREVIEW_TILE, int(info.resolution)) if info.resolution else None
    _write_preview(paths, info.kind, preview or Path(PREVIEW_NAME), n_preview, side)
    return 1 if bad else 0


def _write_preview(paths: list[Location], kind: str, grid_path: Path, n: int, side: int | None) -> None:
    if kind != "images" or n <= 0:
        return
    preview = preview_grid(paths, n, side)
    if preview.passed_over:
        print(f"preview: passed over {len(preview.passed_over)} sample(s), e.g. {preview.passed_over[0]}")
    if preview.grid is not None:
        grid = preview.grid
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
