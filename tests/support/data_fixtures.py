"""Shared helpers for the data tests (kept out of conftest.py, which other suites may own)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import torch
from lightning import LightningModule
from PIL import Image

from data_tools.shard_index import iter_tar_samples
from data_tools.synthetic import write_synthetic


def write_random_images(folder: Path, n: int, size: int, seed: int = 0, ext: str = "png") -> dict[str, np.ndarray]:
    """`n` random RGB images (lossless PNG unless `ext` says otherwise); returns relative name -> pixels."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    images = {}
    for i in range(n):
        name = f"img_{i:03d}.{ext}"
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / name)
        images[name] = pixels
    return images


def write_corrupt_corpus(folder: Path, size: int) -> dict[str, str]:
    """The bad-input corpus; returns file name -> expected fate ("ok" or a word of the skip reason)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, format="JPEG")
    (folder / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.png").write_text("this is not an image\n")
    Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8), mode="L").save(folder / "gray.png")
    rgba = np.zeros((size, size, 4), np.uint8)
    rgba[..., 0] = 200  # red where opaque, fully transparent on the left half
    rgba[:, size // 2:, 3] = 255
    Image.fromarray(rgba, mode="RGBA").save(folder / "rgba.png")
    Image.fromarray(rng.integers(0, 256, (10, 10, 3), dtype=np.uint8)).save(folder / "tiny.png")
    (folder / "notes.txt").write_text("not an image either\n")
    return {"truncated.jpg": "truncated", "empty.png": "empty", "text.png": "not a decodable",
            "gray.png": "ok", "rgba.png": "ok", "tiny.png": "too small", "notes.txt": "extension"}


def read_shards(paths: list[Path]) -> dict[str, dict]:
    """``shard/key`` -> {"key", "pixels", "file", "shard"} for every sample of image shards."""
    out = {}
    for path in paths:
        for key, fields in iter_tar_samples(path):
            out[f"{path.name}/{key}"] = {"key": key, "pixels": np.asarray(Image.open(io.BytesIO(fields["png"]))),
                        "file": json.loads(fields["json"])["file"], "shard": path.name}
    return out


def dir_bytes(folder: Path) -> dict[str, bytes]:
    """File name -> contents of every file in `folder` (to compare two runs byte for byte)."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def tiny_synthetic(root: Path, n: int = 96, resolution: int = 16, shard_size: int = 8) -> Path:
    """A small synthetic shard set (in-process, no progress bar)."""
    return write_synthetic(root, n=n, resolution=resolution, shard_size=shard_size, split="train=0.75,val=0.25",
                           workers=0, progress=False)


class KeyRecorder(LightningModule):
    """A one-parameter model that records which samples each rank saw (for the DDP data test)."""

    def __init__(self, out_dir: str) -> None:
        super().__init__()
        self.out_dir = out_dir
        self.scale = torch.nn.Parameter(torch.ones(()))
        self.seen: dict[str, list] = {"train_shards": [], "train_batches": [], "val_keys": [], "val_batches": []}

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        self.seen["train_shards"] += batch["shard"]
        self.seen["train_batches"].append(len(batch["key"]))
        return (self.scale * batch["image"]).mean() ** 2

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self.seen["val_keys"] += [f"{s}/{k}" for s, k in zip(batch["shard"], batch["key"], strict=True)]
        self.seen["val_batches"].append(len(batch["key"]))
        self.log("val_mean", batch["image"].mean(), sync_dist=True, batch_size=len(batch["key"]))

    def on_fit_end(self) -> None:
        Path(self.out_dir, f"rank{self.global_rank}.json").write_text(json.dumps(self.seen))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)
