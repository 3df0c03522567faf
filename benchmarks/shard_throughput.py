"""Read throughput: the webdataset shard pipeline against loose image files (a torchvision ImageFolder).

Both loaders use the same PNG files' bytes, the same PIL decode, the same conversion (uint8 per image, float in
[-1, 1] per batch), a random horizontal flip, the same batch size and number of worker processes; both shuffle.
They are measured alternately in one run; the script prints images/s for each and the ratio.

    python -m benchmarks.shard_throughput --n 2048 --workers 2

By default the images are the embedded synthetic set (written to a temporary directory); ``--shards DIR``
uses an existing shard directory instead (its ``train`` split). By default files are read from the page cache
after the warm-up pass (per-file overhead only); ``--cold`` evicts both loaders' files before every timed pass.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder

from data_tools.shard_index import expand_shards, iter_tar_samples, split_pattern
from data_tools.synthetic import write_synthetic
from latent_ndm.data.module import ShardDataModule, read_shard_info
from latent_ndm.data.streams import to_unit_range


def to_uint8_tensor(img: Image.Image) -> torch.Tensor:
    """The per-image conversion both loaders use: RGB uint8 (3, R, R); batches are scaled to [-1, 1]."""
    return torch.from_numpy(np.array(img if img.mode == "RGB" else img.convert("RGB"))).permute(2, 0, 1)


class FlipToTensor:
    """ImageFolder transform: `to_uint8_tensor` plus a random horizontal flip (as the shard pipeline does)."""

    def __call__(self, img: Image.Image) -> torch.Tensor:
        x = to_uint8_tensor(img)
        return x.flip(-1) if random.random() < 0.5 else x


def collate_images(samples: list[tuple[torch.Tensor, int]]) -> torch.Tensor:
    """Stack uint8 images and scale once per batch, exactly as the shard pipeline's `collate` does."""
    return to_unit_range(torch.stack([x for x, _ in samples]))


def pil_loader(path: str) -> Image.Image:
    with open(path, "rb") as f:
        img = Image.open(f)
        img.load()
        return img


def export_loose_files(shard_paths: list[Path], folder: Path) -> int:
    """Write every sample's PNG bytes as ``folder/faces/<shard>-<key>.png`` (ImageFolder layout)."""
    (folder / "faces").mkdir(parents=True, exist_ok=True)
    n = 0
    for path in shard_paths:
        for key, fields in iter_tar_samples(path):
            (folder / "faces" / f"{path.stem}-{key}.png").write_bytes(fields["png"])
            n += 1
    return n


def evict_from_page_cache(paths: list[Path]) -> None:
    """Drop these files' pages from the OS page cache (POSIX fadvise), so the next read goes to the disk."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def timed_pass(loader: Iterable) -> tuple[int, float]:
    """(images, seconds) for one pass over `loader`."""
    start, images = time.perf_counter(), 0
    for batch in loader:
        images += batch.shape[0]
    return images, time.perf_counter() - start


def build_loaders(shard_dir: Path, loose_dir: Path, n: int, batch_size: int, workers: int) -> dict[str, Iterable]:
    dm = ShardDataModule(split_pattern(shard_dir, "train"), batch_size=batch_size, num_workers=workers,
                         batches_per_epoch=n // batch_size, shuffle_buffer=1000, seed=0, flip=True)
    dm.setup("fit")
    folder = ImageFolder(str(loose_dir), loader=pil_loader, transform=FlipToTensor())
    loose = DataLoader(folder, batch_size=batch_size, shuffle=True, num_workers=workers, drop_last=True,
                       persistent_workers=workers > 0, collate_fn=collate_images)
    return {"shards (ShardDataModule)": dm.train_dataloader(), "loose files (ImageFolder)": loose}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Shard vs loose-file read throughput (images/s).")
    p.add_argument("--n", type=int, default=2048, help="synthetic images to generate")
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers for both loaders")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--rounds", type=int, default=7, help="timed passes per loader (alternating)")
    p.add_argument("--shards", type=Path, default=None, help="existing shard directory (uses its train split)")
    p.add_argument("--cold", action="store_true", help="evict both loaders' files from the page cache before "
                   "every timed pass (reads hit the disk)")
    return p.parse_args(argv)


def measure(loaders: dict[str, Iterable], files: dict[str, list[Path]], rounds: int,
            cold: bool) -> dict[str, list[float]]:
    """images/s of each loader per round; the loaders alternate so that both see the same machine load."""
    for loader in loaders.values():
        timed_pass(loader)  # warm-up: start workers, fill the page cache
    rates: dict[str, list[float]] = {name: [] for name in loaders}
    for _ in range(rounds):
        for name, loader in loaders.items():
            if cold:
                evict_from_page_cache(files[name])
            images, seconds = timed_pass(loader)
            rates[name].append(images / seconds)
    return rates


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="shard-bench-") as tmp:
        shard_dir = args.shards or write_synthetic(Path(tmp) / "shards", n=args.n, resolution=args.resolution,
                                                   split="train=1.0", shard_size=256, progress=False)
        shard_files = expand_shards(split_pattern(shard_dir, "train"))
        resolution = read_shard_info(shard_files).resolution
        n = export_loose_files(shard_files, Path(tmp) / "loose")
        loaders = build_loaders(shard_dir, Path(tmp) / "loose", n, args.batch_size, args.workers)
        files = dict(zip(loaders, [shard_files, sorted((Path(tmp) / "loose").rglob("*.png"))], strict=True))
        rates = measure(loaders, files, args.rounds, args.cold)
    cache = "cold (evicted from the page cache before each pass)" if args.cold else "warm page cache"
    print(f"{n} images of {resolution}x{resolution}, batch {args.batch_size}, {args.workers} workers, "
          f"{args.rounds} alternating rounds, {cache}:")
    for name, r in rates.items():
        print(f"  {name:28s} {statistics.median(r):9.1f} images/s (median; min {min(r):.0f}, max {max(r):.0f})")
    ratios = [a / b for a, b in zip(*rates.values(), strict=True)]
    print(f"  ratio shards / loose files: {statistics.median(ratios):.2f}x "
          f"(median of per-round ratios; range {min(ratios):.2f}-{max(ratios):.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
