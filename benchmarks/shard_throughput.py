"""Read throughput, side by side: loose image files (a torchvision ImageFolder), local shards, local shards through
webdataset's own tar expander, and the same shards over HTTP from a server on the loopback.

Every loader uses the same PNG files' bytes, the same PIL decode, the same conversion (uint8 per image, float in
[-1, 1] per batch), a random horizontal flip, the same batch size and number of worker processes; all shuffle. The
shard loaders are `ShardDataModule`'s training loader (the webdataset pipeline); the HTTP one reads
``http://127.0.0.1:PORT/...`` from ``python -m http.server`` run as a separate process. They are measured
alternately in one run; the script prints images/s for each and the ratio to local shards.

    python -m benchmarks.shard_throughput --n 2048 --workers 2

By default the images are the embedded synthetic set (written to a temporary directory); ``--shards DIR``
uses an existing shard directory instead (its ``train`` split). By default files are read from the page cache
after the warm-up pass (per-file overhead only); ``--cold`` evicts both loaders' files before every timed pass.
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder
from webdataset.tariterators import tar_file_expander

from data_tools.locations import name_of
from data_tools.shard_index import expand_shards, iter_tar_samples, split_pattern, split_shards
from data_tools.synthetic import write_synthetic
from latent_ndm.data.module import ShardDataModule, read_shard_info
from latent_ndm.data.streams import to_unit_range

LOCAL = "local shards"


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


@contextmanager
def http_server(folder: Path) -> Iterator[str]:
    """``python -m http.server`` serving `folder` on 127.0.0.1 (a free port) in its own process; yields its URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                               "--directory", str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(url, timeout=1).close()  # noqa: S310 (the loopback)
                break
            except OSError:
                time.sleep(0.05)
        yield url
    finally:
        server.terminate()
        server.wait()


def build_loaders(shard_dir: Path, loose_dir: Path, url: str, n: int, batch_size: int,
                  workers: int) -> dict[str, Iterable]:
    def shards(spec: object, **kwargs: object) -> Iterable:
        dm = ShardDataModule(spec, batch_size=batch_size, num_workers=workers, batches_per_epoch=n // batch_size,
                             shuffle_buffer=1000, seed=0, flip=True, **kwargs)
        dm.setup("fit")
        return dm.train_dataloader()

    folder = ImageFolder(str(loose_dir), loader=pil_loader, transform=FlipToTensor())
    loose = DataLoader(folder, batch_size=batch_size, shuffle=True, num_workers=workers, drop_last=True,
                       persistent_workers=workers > 0, collate_fn=collate_images)
    return {
        LOCAL: shards(split_pattern(shard_dir, "train")),
        "local shards, tarfile expander": shards(split_pattern(shard_dir, "train"), tar_expander=tar_file_expander),
        "shards over loopback HTTP": shards(split_shards(f"{url}/{shard_dir.name}", "train")),
        "loose files (ImageFolder)": loose,
    }


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
        shard_files = [Path(p) for p in expand_shards(split_pattern(shard_dir, "train"))]
        resolution = read_shard_info([str(p) for p in shard_files]).resolution
        n = export_loose_files(shard_files, Path(tmp) / "loose")
        with http_server(Path(shard_dir).parent) as url:
            loaders = build_loaders(Path(shard_dir), Path(tmp) / "loose", url, n, args.batch_size, args.workers)
            loose = sorted((Path(tmp) / "loose").rglob("*.png"))
            files = {name: loose if name.startswith("loose") else shard_files for name in loaders}
            rates = measure(loaders, files, args.rounds, args.cold)
    cache = "cold (evicted from the page cache before each pass)" if args.cold else "warm page cache"
    print(f"{n} images of {resolution}x{resolution} in {len(shard_files)} shards ({name_of(shard_files[0])}, ...), "
          f"batch {args.batch_size}, {args.workers} workers, {args.rounds} alternating rounds, {cache}:")
    print(f"  {'loader':34s} {'images/s':>9s}  (median; min-max)   x local shards (median of per-round ratios)")
    for name, r in rates.items():
        ratios = [a / b for a, b in zip(r, rates[LOCAL], strict=True)]
        print(f"  {name:34s} {statistics.median(r):9.1f}  ({min(r):.0f}-{max(r):.0f})  "
              f"{statistics.median(ratios):6.2f}x ({min(ratios):.2f}-{max(ratios):.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
