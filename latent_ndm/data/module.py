"""`ShardDataModule`: streams webdataset shards (images or pre-encoded latents) to 1 or N processes.

Batches of images are float tensors of shape (B, 3, R, R) in [-1, 1]; batches of latents are dicts of
float tensors, one per stored field (e.g. ``{"mean": (B, C, H, W), "logvar": (B, C, H, W)}``). With
``return_meta=True`` every batch is a dict that also carries the sample ``key`` and ``shard`` lists.

Training resamples shards split by rank and by worker and yields exactly `batches_per_epoch` batches on every
rank; validation and test read every sample exactly once across ranks (see `latent_ndm.data.streams`).
Create shards with ``python -m data_tools.synthetic`` or ``python -m data_tools.shard``.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from PIL import Image
from torch.utils.data import DataLoader

from data_tools.errors import DataToolError
from data_tools.http_stream import DEFAULT_READ, ReadOptions, ShardReadError
from data_tools.locations import folder_of
from data_tools.reading import tar_members
from data_tools.shard_index import (
    HOW_TO_CREATE,
    ShardInfo,
    damaged_shards,
    iter_tar_samples,
    resolve_shards,
    shard_info,
    without,
)
from latent_ndm.data.streams import EvalStream, SampleDecoder, TrainStream

ShardSpec = str | Path | Sequence[str | Path]
ON_ERROR = ("warn", "raise")
log = logging.getLogger(__name__)


def read_shard_info(shards: ShardSpec, read: ReadOptions = DEFAULT_READ) -> ShardInfo:
    """Expand `shards` (local paths, patterns or URLs) and read counts, kind and resolution (manifest first, else
    the tar files).

    Raises a one-sentence ValueError when nothing matches or a manifest (or an unlisted shard) cannot be read.
    """
    try:
        paths = resolve_shards(shards, read)
        if not paths:
            raise ValueError(f"no shards match {shards!s}; {HOW_TO_CREATE}")
        info = shard_info(paths, read)
    except ShardReadError as err:
        raise ValueError(f"cannot count the samples of shard {err}; serve its manifest.json beside it") from err
    except DataToolError as err:
        raise ValueError(str(err)) from err
    if info.resolution is None and info.kind == "images":
        for _, fields in iter_tar_samples(paths[0], read):  # no manifest: the first image tells
            if "png" in fields:
                info.resolution = Image.open(io.BytesIO(fields["png"])).size[0]
            break
    return info


Position = tuple[int, int]  # (epoch, batches of it already trained on)


def trainer_position(trainer: L.Trainer) -> Position:
    """(current epoch, training batches of it already run): the latter is nonzero only when a fit resumes from a
    checkpoint written in the middle of an epoch (Lightning restores both before it iterates the loader)."""
    progress = getattr(getattr(trainer.fit_loop, "epoch_loop", None), "batch_progress", None)
    done = int(progress.current.completed) if progress is not None and trainer.training else 0
    return trainer.current_epoch, done if done < trainer.num_training_batches else 0


class _EpochLoader(DataLoader):
    """A DataLoader that tells its stream the epoch (and the batches to pass over) before each pass; shared memory
    reaches the workers. Without a `position_fn`, pass k is epoch k."""

    def __init__(self, *args: Any, position_fn: Callable[[], Position] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._position_fn = position_fn
        self._passes = 0

    def state_dict(self) -> dict[str, Any]:
        """Nothing to store: a resumed pass takes its position from the trainer's restored progress (having these
        two methods tells Lightning the loader resumes mid-epoch exactly, which it does)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """See `state_dict`."""

    def __iter__(self) -> Iterator[Any]:
        epoch, start_batch = self._position_fn() if self._position_fn is not None else (self._passes, 0)
        self.dataset.set_epoch(epoch, start_batch)
        self._passes += 1
        return super().__iter__()


class ShardDataModule(L.LightningDataModule):
    """Lightning data module over shard patterns (a glob, brace pattern, directory or list of files).

    Args:
        train_shards, val_shards, test_shards: shard specs; val/test may be None.
        batch_size: samples per batch (evaluation batches may be slightly smaller, never larger).
        num_workers: DataLoader worker processes (0: load in the training process).
        resolution: expected image side; None reads it from the manifest. Ignored for latents.
        batches_per_epoch: training batches per rank per epoch; None: train samples // (batch * ranks).
        shuffle_buffer: samples held in the shuffle buffer of each worker (<= 1: no shuffling).
        seed: seeds shard resampling, shuffling and flips (combined with epoch, rank and worker).
        flip: random horizontal flip of training images.
        kind: "images" or "latents".
        return_meta: yield dict batches with "key" and "shard" lists besides the tensors.
        multiprocessing_context: start method of the loader workers ("fork", "spawn", ...); None: torch's
            default (fork on Linux). "spawn" re-imports everything per worker, but is the safe choice in a
            process that already runs threads (a DDP rank's gloo threads): a forked child can deadlock on a lock
            one of them held.
        on_error: a damaged shard (its size differs from the manifest's record, or it cannot be opened or read while
            training: HTTP 404, a stall, a cut, a corrupt tar) is named in a warning and left out, and a sample
            that does not decode is passed over ("warn"); or the run stops ("raise"). Evaluation always stops: it
            never reports a number over fewer samples than the manifest promises.
        read: how remote shards are read: {"timeout": seconds without a byte before a stall is declared,
            "retries": further attempts after a transient failure, "backoff": seconds before the first retry}
            (`data_tools.http_stream.ReadOptions`).
        tar_expander: the training pipeline's tar expander stage (`TrainStream`).
    """

    def __init__(self, train_shards: ShardSpec | None, val_shards: ShardSpec | None = None,
                 test_shards: ShardSpec | None = None, batch_size: int = 64, num_workers: int = 0,
                 resolution: int | None = None, batches_per_epoch: int | None = None, shuffle_buffer: int = 1000,
                 seed: int = 0, flip: bool = True, kind: str = "images", return_meta: bool = False,
                 multiprocessing_context: str | None = None, on_error: str = "warn",
                 read: ReadOptions | dict[str, Any] | None = None,
                 tar_expander: Callable[..., Iterator[dict[str, Any]]] = tar_members) -> None:
        super().__init__()
        if kind not in ("images", "latents"):
            raise ValueError(f"kind must be 'images' or 'latents', got {kind!r}")
        if on_error not in ON_ERROR:
            raise ValueError(f"data.on_error must be one of {ON_ERROR}, got {on_error!r}")
        if batch_size < 1 or num_workers < 0:
            raise ValueError(f"need batch_size >= 1 and num_workers >= 0, got {batch_size}, {num_workers}")
        self.specs = {"train": train_shards, "val": val_shards, "test": test_shards}
        self.batch_size, self.num_workers, self.resolution = batch_size, num_workers, resolution
        self.batches_per_epoch, self.shuffle_buffer, self.seed = batches_per_epoch, shuffle_buffer, seed
        self.flip, self.kind, self.return_meta = flip, kind, return_meta
        self.multiprocessing_context, self.on_error = multiprocessing_context, on_error
        self.read = read if isinstance(read, ReadOptions) else ReadOptions(**dict(read or {}))
        self.tar_expander = tar_expander
        self.info: dict[str, ShardInfo] = {}

    def setup(self, stage: str | None = None) -> None:
        """Find the shards this stage needs and check their kind and resolution."""
        needed = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ()}
        for split in needed.get(stage or "", ("train", "val", "test")):
            if self.specs[split] is not None and split not in self.info:
                self.info[split] = self._checked_info(split)

    def _checked_info(self, split: str) -> ShardInfo:
        info = self._intact(split, read_shard_info(self.specs[split], self.read))
        if info.kind != self.kind:
            raise ValueError(f"{split} shards {self.specs[split]!s} hold {info.kind}, but kind={self.kind!r}")
        if self.kind == "images":
            if self.resolution is None:
                self.resolution = info.resolution
            elif info.resolution is not None and info.resolution != self.resolution:
                raise ValueError(f"{split} shards {self.specs[split]!s} are {info.resolution}px but data.resolution="
                                 f"{self.resolution}; reshard them, or set data.resolution={info.resolution} (or null: "
                                 "the manifest's)")
        return info

    def _intact(self, split: str, info: ShardInfo) -> ShardInfo:
        """`info` without the shards whose size differs from the manifest (each named in a warning), or an error
        with on_error="raise" (or when no shard is left)."""
        damaged = damaged_shards(info)
        if not damaged:
            return info
        role = {"train": "training", "val": "validation", "test": "evaluation"}[split]
        names = ", ".join(f"{d.path} ({d.problem})" for d in damaged)
        fix = (f"re-create them (`python -m data_tools.shard ...`), or check every shard with `python -m "
               f"data_tools.inspect {folder_of(damaged[0].path)} --verify`")
        if self.on_error == "raise" or len(damaged) == len(info.paths):
            raise ValueError(f"damaged {role} shards: {names}; {fix}")
        lost = sum(d.count for d in damaged)
        for d in damaged:
            warnings.warn(f"damaged {role} shard {d.path} ({d.problem}): going on without its {d.count} samples "
                          f"(data.on_error=raise stops instead); {fix}", stacklevel=2)
        log.warning("%d damaged %s shard(s) left out, %d of %d samples", len(damaged), role, lost, info.total)
        return without(info, [d.path for d in damaged])

    def _placement(self) -> tuple[int, int]:
        """(rank, world size) from the trainer, else torch.distributed, else (0, 1)."""
        if self.trainer is not None:
            return self.trainer.global_rank, self.trainer.world_size
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def _info(self, split: str) -> ShardInfo:
        if split not in self.info:
            if self.specs[split] is None:
                raise ValueError(f"no {split}_shards were given to ShardDataModule")
            self.info[split] = self._checked_info(split)
        return self.info[split]

    def _loader(self, stream: TrainStream | EvalStream) -> DataLoader:
        position_fn = (lambda: trainer_position(self.trainer)) if self.trainer is not None else None
        workers = self.num_workers > 0
        return _EpochLoader(stream, batch_size=None, num_workers=self.num_workers, position_fn=position_fn,
                            pin_memory=torch.cuda.is_available(), persistent_workers=workers,
                            multiprocessing_context=self.multiprocessing_context if workers else None)

    def train_batches_per_epoch(self) -> int:
        """Batches per rank per epoch: the given value, else one pass over the train set across ranks."""
        if self.batches_per_epoch is not None:
            return self.batches_per_epoch
        return max(1, self._info("train").total // (self.batch_size * self._placement()[1]))

    def train_dataloader(self) -> DataLoader:
        info = self._info("train")
        rank, world = self._placement()
        slots = world * max(1, self.num_workers)
        if len(info.paths) < slots:
            warnings.warn(f"{len(info.paths)} training shards for {world} process(es) x {max(1, self.num_workers)} "
                          "worker(s): some read the same shards; write smaller shards (--shard-size) for disjoint "
                          "streams", stacklevel=2)
        stream = TrainStream(info.paths, self._decoder(info), self.batch_size, self.train_batches_per_epoch(),
                             self.shuffle_buffer, self.seed, self.flip, rank, world, self.return_meta, self.on_error,
                             counts=info.counts, read=self.read, expander=self.tar_expander)
        return self._loader(stream)

    def _eval_loader(self, split: str) -> DataLoader:
        info = self._info(split)
        rank, world = self._placement()
        stream = EvalStream(info.paths, info.counts, self._decoder(info), self.batch_size, rank, world,
                            self.return_meta, read=self.read)
        return self._loader(stream)

    def _decoder(self, info: ShardInfo) -> SampleDecoder:
        return SampleDecoder(self.kind, self.resolution, tuple(info.fields) if self.kind == "latents" else ())

    def val_dataloader(self) -> DataLoader | list:
        """The validation loader, or an empty list (Lightning then skips validation) without val_shards."""
        return [] if self.specs["val"] is None else self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")
