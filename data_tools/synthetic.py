"""The embedded default dataset: procedural faces, written through the same sharding path as real images.

``python -m data_tools.synthetic OUT --n 4096 --resolution 64`` writes ``OUT/synthetic-{split}-*.tar`` and
``OUT/manifest.json``. From Python, `ensure_default_dataset(root)` creates it on first use (idempotent;
an interrupted creation resumes). Nothing is downloaded.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from data_tools.errors import DataToolError, run_cli
from data_tools.faces import draw_parameters, render_faces
from data_tools.imageproc import UnusableImage
from data_tools.images_to_shards import ShardOptions, default_workers, shard_images
from data_tools.locks import exclusive
from data_tools.manifest import read_manifest, shard_is_intact
from data_tools.sources import Listing

DEFAULT_ROOT = Path("data/synthetic-32")  # where `python -m latent_ndm.train` (data=synthetic) looks
DEFAULT_N = 4096
DEFAULT_RESOLUTION = 32
DEFAULT_SPLIT = "train=0.9,val=0.1"


def default_shard_size(n: int) -> int:
    """About 16 shards per set (so ranks x workers get disjoint shards), 16 to 512 images each."""
    return min(512, max(16, n // 16))

GENERATOR_VERSION = 1  # bump when faces.py changes the pictures


class SyntheticSource:
    """An `ImageSource` of `n` procedural faces; file names are ``synthetic/000123.png``."""

    def __init__(self, n: int, resolution: int, seed: int = 0) -> None:
        if n < 1 or resolution < 8:
            raise DataToolError(f"synthetic set needs n >= 1 and resolution >= 8, got n={n}, resolution={resolution}")
        self.n, self.resolution, self.seed = n, resolution, seed
        self._params: np.ndarray | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_params": None}

    def describe(self) -> dict[str, Any]:
        return {"type": "synthetic", "path": f"synthetic(n={self.n}, seed={self.seed})",
                "generator_version": GENERATOR_VERSION}

    def listing(self) -> Listing:
        width = max(6, len(str(self.n - 1)))
        names = [f"synthetic/{i:0{width}d}.png" for i in range(self.n)]
        tag = f"synthetic-v{GENERATOR_VERSION}-n{self.n}-r{self.resolution}-s{self.seed}"
        return Listing(names=names, fingerprint=tag)

    def load(self, indices: Sequence[int]) -> list[Image.Image | UnusableImage]:
        if self._params is None:
            self._params = draw_parameters(self.n, self.seed)
        pixels = render_faces(self._params[np.asarray(indices, dtype=np.int64)], self.resolution)
        return [Image.fromarray(img) for img in pixels]


def write_synthetic(
    out_dir: Path,
    n: int = DEFAULT_N,
    resolution: int = DEFAULT_RESOLUTION,
    seed: int = 0,
    shard_size: int | None = None,
    split: str = DEFAULT_SPLIT,
    workers: int | None = None,
    progress: bool = True,
) -> Path:
    """Render and shard `n` faces into `out_dir` (resuming an interrupted run); return `out_dir`.

    `shard_size` None means `default_shard_size(n)`.
    """
    shard_size = default_shard_size(n) if shard_size is None else shard_size
    options = ShardOptions(name="synthetic", resolution=resolution, shard_size=shard_size, split=split, seed=seed,
                           min_size=resolution, workers=default_workers() if workers is None else workers,
                           progress=progress)
    shard_images(SyntheticSource(n, resolution, seed), Path(out_dir), options)
    return Path(out_dir)


def _is_complete(root: Path, n: int, resolution: int) -> bool:
    """A complete manifest of `n` images at `resolution` whose shards exist with their recorded sizes."""
    try:
        manifest = read_manifest(root)
    except DataToolError:
        return False
    if manifest is None or not manifest.get("complete"):
        return False
    config = manifest.get("config", {})
    if config.get("resolution") != resolution or sum(config.get("split", {}).values()) != n:
        return False
    records = [r for split in manifest["splits"].values() for r in split["shards"]]
    return all(shard_is_intact(root, r, full=False) for r in records)


def ensure_default_dataset(
    root: Path | str = DEFAULT_ROOT,
    n: int = DEFAULT_N,
    resolution: int = DEFAULT_RESOLUTION,
    seed: int = 0,
    progress: bool = False,
) -> Path:
    """Return `root`, creating the synthetic shards there first unless a complete set is already present.

    Safe to call on every start: a complete set costs one manifest read; an interrupted creation resumes;
    a directory holding something else raises a `DataToolError`. Processes that call it at the same time
    (e.g. every rank under torchrun) take turns on a lock file beside `root`; the first one creates the set.
    """
    root = Path(root)
    if _is_complete(root, n, resolution):
        return root
    with exclusive(root.parent / f".{root.name}.lock"):
        if not _is_complete(root, n, resolution):
            write_synthetic(root, n=n, resolution=resolution, seed=seed, progress=progress)
    return root


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m data_tools.synthetic",
        description="Write the embedded procedural face dataset as shards.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("out", type=Path, nargs="?", default=DEFAULT_ROOT, help="output directory")
    p.add_argument("--num-images", "--n", type=int, default=DEFAULT_N, help="number of images")
    p.add_argument("--resolution", type=int, default=DEFAULT_RESOLUTION, help="side length in pixels")
    p.add_argument("--seed", type=int, default=0, help="seed of the pictures and of the split")
    p.add_argument("--shard-size", type=int, default=None,
                   help="images per shard (default: num_images // 16, 16 to 512)")
    p.add_argument("--split", default=DEFAULT_SPLIT, help="NAME=COUNT or NAME=FRACTION, comma-separated")
    p.add_argument("--workers", type=int, default=default_workers(), help="parallel processes (<= 1: none)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        write_synthetic(args.out, n=args.num_images, resolution=args.resolution, seed=args.seed,
                        shard_size=args.shard_size, split=args.split, workers=args.workers, progress=not args.quiet)
        manifest = read_manifest(args.out)
        counts = {s: v["count"] for s, v in manifest["splits"].items()}
        print(f"wrote {args.out}: " + ", ".join(f"{s}={c}" for s, c in counts.items()))
        return 0

    return run_cli(body)


if __name__ == "__main__":
    raise SystemExit(main())
