"""The data modules of the `data` config group (`configs/data/*.yaml`, one function each): an image shard folder,
the embedded synthetic set, or pre-encoded latent shards."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from data_tools.http_stream import ReadOptions
from data_tools.latent_shards import stored_vae_record
from data_tools.manifest import read_manifest
from data_tools.shard_index import split_shards
from data_tools.synthetic import ensure_default_dataset
from latent_ndm.data.module import ShardDataModule

log = logging.getLogger(__name__)


def shard_datamodule(
    root: str | Path,
    batch_size: int,
    resolution: int | None = None,
    num_workers: int = 0,
    shuffle_buffer: int = 1000,
    flip: bool = True,
    seed: int = 0,
    train_split: str = "train",
    val_split: str = "val",
    on_error: str = "warn",
    read: dict[str, Any] | None = None,
) -> ShardDataModule:
    """Image shards `<root>/*-<split>-*.tar` (as written by `python -m data_tools.shard SRC root`); `root` may be a
    URL prefix (``https://host/celebahq256``, ``s3://bucket/celebahq256``) whose ``manifest.json`` lists them."""
    options = ReadOptions(**dict(read or {}))
    return ShardDataModule(
        split_shards(root, train_split, options),
        split_shards(root, val_split, options),
        batch_size=batch_size,
        num_workers=num_workers,
        resolution=resolution,
        shuffle_buffer=shuffle_buffer,
        seed=seed,
        flip=flip,
        on_error=on_error,
        read=read,
    )


def synthetic_datamodule(root: str | Path, num_images: int, resolution: int, data_seed: int = 0, create: bool = True,
                         **kwargs: object) -> ShardDataModule:
    """The embedded procedural faces, rendered and sharded into `root` on first use (nothing is downloaded).

    Creation happens here, in the launching process, before Lightning starts any other rank. `create=False` (what a
    data config read from a file is built with, `latent_ndm.runs.file_config`) reads the set already at `root` and
    writes nothing: a file cannot choose a folder to write into.
    """
    if not (Path(root) / "manifest.json").is_file():
        if not create:
            raise ValueError(f"the run's synthetic data set is not at {root}, and a data config read from a file "
                             f"never creates one: create it with `python -m data_tools.synthetic {root} --num-images "
                             f"{num_images} --resolution {resolution}`, or give shards=<image shard folder>")
        log.info("creating the embedded synthetic dataset (%d images, %dpx) in %s", num_images, resolution, root)
    if create:
        ensure_default_dataset(root, n=num_images, resolution=resolution, seed=data_seed)
    return shard_datamodule(root, resolution=resolution, **kwargs)


def latent_datamodule(root: str | Path, batch_size: int, resolution: int | None = None, num_workers: int = 0,
                      shuffle_buffer: int = 1000, seed: int = 0, train_split: str = "train", val_split: str = "val",
                      on_error: str = "warn", read: dict[str, Any] | None = None) -> ShardDataModule:
    """Pre-encoded latent shards `<root>/*-<split>-*.tar` (written by `python -m latent_ndm.encode`).

    Batches are {"mean", "logvar"} of q(z|x); the module's `resolution` is that of the images they were encoded
    from and `vae_record` the manifest's record of the VAE that encoded them (checked by `stage=ndm`).
    """
    options = ReadOptions(**dict(read or {}))
    record = stored_vae_record(read_manifest(str(root), options), str(root))
    if resolution is not None and int(resolution) != int(record["image_resolution"]):
        raise ValueError(f"the latents in {root} were encoded from {record['image_resolution']}px images, but "
                         f"data.resolution={resolution}; leave it unset (null)")
    datamodule = ShardDataModule(
        split_shards(root, train_split, options),
        split_shards(root, val_split, options),
        batch_size=batch_size,
        num_workers=num_workers,
        resolution=int(record["image_resolution"]),  # of the images; latents are not checked against it
        shuffle_buffer=shuffle_buffer,
        seed=seed,
        flip=False,  # a latent is not mirrored with its image
        kind="latents",
        on_error=on_error,
        read=read,
    )
    datamodule.vae_record = record
    return datamodule
