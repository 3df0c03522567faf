"""Iterable datasets over webdataset shards: resampled training batches and exact-once evaluation batches.

Shards are read by a webdataset `DataPipeline` from any location (local, ``http(s)://``, ``pipe:``, ``s3://``,
``gs://``): the shard source below, then `data_tools.reading`'s stages (open, the tar expander, webdataset's
`group_by_keys`), webdataset's shuffle buffer and `map` (decoding), each stage reporting errors to one handler
(`ShardFaults`). Both streams yield whole batches (use them with ``DataLoader(batch_size=None)``) so that the number
of batches per rank is fixed here rather than by how shards happen to divide:

* `TrainStream`: shards are split by node (rank) and then by DataLoader worker, each worker resamples its
  own shards with replacement, shuffles samples in a seeded buffer, flips at random, and stops after its share
  of ``batches_per_epoch``. Every rank yields exactly ``batches_per_epoch`` batches. Every epoch starts a fresh
  stream seeded by (seed, epoch, rank, worker) only, so the batches of an epoch can be replayed by a new process
  (a run resumed from a checkpoint draws what the uninterrupted run drew). The shard draws, the shuffle and the
  flips share one seeded generator (webdataset's `ResampledShards` seeds with Python's per-process string hash,
  and a separate generator would change every stream this project has measured).
* Faults while training: a shard that cannot be opened or read (404, stall, cut off, corrupt tar) is named in one
  warning and not drawn again this epoch; an undecodable sample is named and passed over; both are counted. The
  same damage gives the same stream, so resuming stays exact. ``on_error="raise"`` stops instead.
* `EvalStream`: the N samples (in shard order) are cut into ``world_size * K`` contiguous batches of
  near-equal size (K = ceil(N / (world_size * batch_size))); rank r reads batches r*K .. r*K+K-1. Every
  sample is read exactly once across ranks, and all ranks yield K batches, so DDP never waits on a rank. Any fault
  stops evaluation with an error naming the shard: no number is computed on fewer samples than the manifest
  promises.
"""

from __future__ import annotations

import logging
import math
import random
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from itertools import islice
from typing import Any

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import IterableDataset, get_worker_info
from webdataset.tariterators import group_by_keys

from data_tools.http_stream import DEFAULT_READ, ReadOptions, ShardReadError
from data_tools.imageproc import UnusableImage, open_image, rgb_pixels
from data_tools.latent_shards import npy_array
from data_tools.reading import SampleError, open_shards, shard_samples, tar_members

Batch = torch.Tensor | dict[str, Any]
log = logging.getLogger(__name__)


def worker_slot() -> tuple[int, int]:
    """(worker id, number of workers) of the current DataLoader worker; (0, 1) in the main process."""
    info = get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


def assign_shards(paths: list[str], rank: int, world_size: int, worker: int, num_workers: int) -> list[str]:
    """Disjoint shards per (rank, worker) when there are enough; otherwise every slot reads them all."""
    node = paths[rank::world_size] if len(paths) >= world_size else paths
    return node[worker::num_workers] if len(node) >= num_workers else node


def share(total: int, part: int, parts: int) -> tuple[int, int]:
    """[start, stop) of `part` when `total` items are cut into `parts` contiguous near-equal pieces."""
    return total * part // parts, total * (part + 1) // parts


def delivered_per_worker(sizes: list[int], delivered: int) -> list[int]:
    """How many of its `sizes[w]` batches each worker has given when a DataLoader has yielded `delivered` batches.

    A DataLoader takes one batch from each worker in turn, passing over workers that have run out.
    """
    taken, left = [0] * len(sizes), min(delivered, sum(sizes))
    while left > 0:
        for w, size in enumerate(sizes):
            if left > 0 and taken[w] < size:
                taken[w] += 1
                left -= 1
    return taken


class CorruptSample(ValueError):
    """A sample whose bytes do not decode (or that lacks a field); the message names its key and shard."""


@dataclass
class SampleDecoder:
    """Turns a raw webdataset sample into tensors.

    ``kind="images"``: the ``png`` field becomes a uint8 tensor (3, R, R) (`collate` scales it); any other size than
    `resolution` is an error naming the key and shard. ``kind="latents"``: every ``<field>.npy`` becomes a
    float tensor named ``<field>``; with `fields` given, a sample must hold exactly those. Bytes that do not decode
    are a `CorruptSample`, and so is a ``.npy`` whose header declares another size than the bytes it holds, or no
    plain number type (`data_tools.latent_shards.npy_array`: checked before anything is allocated).
    """

    kind: str = "images"
    resolution: int | None = None
    fields: tuple[str, ...] = ()

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"key": sample["__key__"], "shard": sample.get("__url__", "?")}
        if self.kind == "images":
            out["image"] = self._image(sample)
        else:
            fields = {k[:-4]: v for k, v in sample.items() if k.endswith(".npy")}
            where = f"sample {out['key']} in shard {out['shard']}"
            if not fields:
                raise CorruptSample(f"{where} holds no .npy latents")
            if self.fields and sorted(fields) != sorted(self.fields):
                raise CorruptSample(f"{where} holds {sorted(fields)}, not the fields {sorted(self.fields)}")
            for name, data in fields.items():
                try:
                    array = npy_array(data)  # the header is checked before anything is allocated
                except ValueError as err:
                    raise CorruptSample(f"{where}: {name}.npy does not load ({err})") from err
                out[name] = torch.from_numpy(array.astype(np.float32))
        return out

    def _image(self, sample: dict[str, Any]) -> torch.Tensor:
        data = sample.get("png") or sample.get("jpg")
        where = f"sample {sample['__key__']} in shard {sample.get('__url__', '?')}"
        if data is None:
            raise ValueError(f"{where} has no png image; is this a latent shard (use kind='latents')?")
        try:
            img = open_image(data)  # the size is checked before any pixel is decoded (a few KB can declare GBs)
        except UnusableImage as err:
            raise CorruptSample(f"{where} {err}") from err
        if self.resolution is not None and img.size != (self.resolution, self.resolution):
            raise ValueError(f"{where} is {img.size[0]}x{img.size[1]}, expected "
                             f"{self.resolution}x{self.resolution}; reshard with --resolution {self.resolution}")
        try:
            arr = rgb_pixels(img)
        except UnusableImage as err:
            raise CorruptSample(f"{where} {err}") from err
        return torch.from_numpy(arr).permute(2, 0, 1)  # uint8 (3, R, R); `collate` scales whole batches


def to_unit_range(x: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float32 in [-1, 1] (x / 127.5 - 1)."""
    return x.float().div_(127.5).sub_(1.0)


def collate(samples: list[dict[str, Any]], return_meta: bool) -> Batch:
    """Stack decoded samples; a plain image tensor unless `return_meta` or the samples are latents.

    Images are stacked as uint8 and scaled to float in [-1, 1] once per batch.
    """
    tensors = {k: torch.stack([s[k] for s in samples]) for k in samples[0]
               if k not in ("key", "shard") and not k.startswith("__")}
    if "image" in tensors:
        tensors["image"] = to_unit_range(tensors["image"])
    if return_meta:
        return {**tensors, "key": [s["key"] for s in samples], "shard": [s["shard"] for s in samples]}
    return tensors["image"] if list(tensors) == ["image"] else tensors


_WARNED: set[str] = set()  # faults already warned about by this process (a bad shard is warned about once)


class ShardFaults:
    """The error handler of one training stream (webdataset's convention: ``handler(exn) -> True`` goes on).

    A shard that cannot be read joins `bad` (the shard source draws it no more) and a corrupt sample is passed over,
    each named in one warning with the running counts; with ``on_error="raise"`` the first fault stops the stream.
    Anything else (a wrong image size, a bug) is raised as it is.
    """

    def __init__(self, on_error: str, counts: dict[str, int] | None = None) -> None:
        self.on_error, self.counts = on_error, counts or {}
        self.bad: set[str] = set()
        self.corrupt = 0

    def __call__(self, exn: BaseException) -> bool:
        if isinstance(exn, ShardReadError):
            what = f"training shard {exn.location} cannot be read ({exn.reason})"
            if self.on_error == "raise":
                raise ValueError(f"{what}; data.on_error=warn goes on without it") from exn
            self.bad.add(exn.location)
            held = self.counts.get(exn.location)
            lost = f"its {held} samples" if held is not None else "it"
            self._warn(exn.location, f"{what}: going on without {lost} (the samples read before the fault are kept)")
            return True
        if isinstance(exn, CorruptSample | SampleError):
            if self.on_error == "raise":
                raise ValueError(f"{exn}; data.on_error=warn passes over it") from exn
            self.corrupt += 1
            self._warn(str(exn), f"{exn}: passed over")
            return True
        raise exn

    def _warn(self, key: str, message: str) -> None:
        summary = (f"{message} [this stream so far: {len(self.bad)} shard(s) left out, {self.corrupt} corrupt "
                   "sample(s) passed over]")
        log.warning(summary)
        if key not in _WARNED:
            _WARNED.add(key)
            warnings.warn(summary, stacklevel=3)


class TrainStream(IterableDataset):
    """Endless resampled stream cut into exactly `batches_per_epoch` batches per rank (see module doc).

    `expander` is the tar expander stage: `data_tools.reading.tar_members` (a header parser) or webdataset's own
    `tar_file_expander` (Python's tarfile), which gives the same samples more slowly (benchmarks/shard_throughput.py).
    """

    def __init__(self, paths: list[str], decoder: SampleDecoder, batch_size: int, batches_per_epoch: int,
                 shuffle_buffer: int, seed: int, flip: bool, rank: int = 0, world_size: int = 1,
                 return_meta: bool = False, on_error: str = "raise", counts: list[int] | None = None,
                 read: ReadOptions = DEFAULT_READ, expander: Callable[..., Iterator[dict[str, Any]]] = tar_members
                 ) -> None:
        super().__init__()
        self.on_error, self.read, self.expander = on_error, read, expander
        self.paths, self.decoder = [str(p) for p in paths], decoder
        self.counts = dict(zip(self.paths, counts, strict=True)) if counts is not None else {}
        self.batch_size, self.batches_per_epoch = batch_size, batches_per_epoch
        self.shuffle_buffer, self.seed, self.flip = shuffle_buffer, seed, flip
        self.rank, self.world_size, self.return_meta = rank, world_size, return_meta
        # (epoch, first batch): shared memory, so persistent workers see them too
        self._position = torch.zeros(2, dtype=torch.int64).share_memory_()

    @property
    def epoch(self) -> int:
        return int(self._position[0])

    @property
    def start_batch(self) -> int:
        return int(self._position[1])

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """The epoch that seeds the next pass (the DataLoader in `latent_ndm.data.module` sets it), and the number of
        its batches to pass over (already trained on: a run resumed in the middle of an epoch)."""
        self._position[0], self._position[1] = int(epoch), int(start_batch)

    def __len__(self) -> int:
        return self.batches_per_epoch

    @staticmethod
    def _resampled(rng: random.Random, shards: list[str], bad: set[str]) -> Iterator[dict[str, str]]:
        """The shard source: shards drawn with replacement, forever, passing over those found `bad` (the draws go on
        as if they were taken, so the same damage gives the same stream)."""
        while True:
            path = rng.choice(shards)
            if path in bad:
                if bad >= set(shards):
                    raise ValueError(f"none of the training shards {sorted(bad)} can be read; re-create them or "
                                     "check the server")
                continue
            yield {"url": path}

    def pipeline(self, rng: random.Random, shards: list[str], faults: ShardFaults) -> wds.DataPipeline:
        """This worker's decoded samples: webdataset stages from the shard source to the decoder."""
        stages: list[Any] = [
            lambda: self._resampled(rng, shards, faults.bad),
            partial(open_shards, options=self.read, handler=faults),
            partial(self.expander, handler=faults),
            partial(group_by_keys, handler=faults),
        ]
        if self.shuffle_buffer > 1:
            stages.append(wds.shuffle(self.shuffle_buffer, initial=self.shuffle_buffer, rng=rng))
        stages.append(wds.map(self._decode_and_flip(rng), handler=faults))
        return wds.DataPipeline(*stages)

    def _stream(self, worker: int, num_workers: int, skip: int = 0) -> Iterator[dict[str, Any]]:
        """This worker's decoded samples for the current epoch: a fresh stream seeded by (seed, epoch, rank, worker).

        Nothing carries over from the previous epoch (the shuffle buffer is refilled each epoch), so the stream
        depends on the epoch number alone, not on what this process read before. The first `skip` samples are
        drawn, decoded (a corrupt one among them is passed over as it was the first time) and dropped.
        """
        rng = random.Random(f"train-{self.seed}-{self.epoch}-{self.rank}-{worker}")
        shards = assign_shards(self.paths, self.rank, self.world_size, worker, num_workers)
        samples = iter(self.pipeline(rng, shards, ShardFaults(self.on_error, self.counts)))
        return islice(samples, skip, None)

    def __iter__(self) -> Iterator[Batch]:
        worker, num_workers = worker_slot()
        sizes = [b - a for a, b in (share(self.batches_per_epoch, w, num_workers) for w in range(num_workers))]
        done = delivered_per_worker(sizes, self.start_batch)[worker]
        samples = self._stream(worker, num_workers, skip=done * self.batch_size)
        for _ in range(sizes[worker] - done):
            yield collate(list(islice(samples, self.batch_size)), self.return_meta)

    def _decode_and_flip(self, rng: random.Random) -> Callable[[dict[str, Any]], dict[str, Any]]:
        def f(sample: dict[str, Any]) -> dict[str, Any]:
            out = self.decoder(sample)
            if self.flip and "image" in out and rng.random() < 0.5:
                out["image"] = out["image"].flip(-1)
            return out

        return f


def _refuse(exn: BaseException) -> bool:
    """The evaluation handler: any fault stops evaluation, naming the shard."""
    if isinstance(exn, ShardReadError | CorruptSample | SampleError):
        what = (f"evaluation shard {exn.location} cannot be read ({exn.reason})" if isinstance(exn, ShardReadError)
                else str(exn))
        raise ValueError(f"{what}; evaluation reads every sample the manifest promises, so it stops here (re-create "
                         "or re-serve the shard)") from exn
    raise exn


class EvalStream(IterableDataset):
    """Every sample exactly once across ranks, the same number of batches on every rank (see module doc)."""

    def __init__(self, paths: list[str], counts: list[int], decoder: SampleDecoder, batch_size: int,
                 rank: int = 0, world_size: int = 1, return_meta: bool = False,
                 read: ReadOptions = DEFAULT_READ) -> None:
        super().__init__()
        self.paths, self.counts, self.decoder = [str(p) for p in paths], list(counts), decoder
        self.rank, self.world_size, self.return_meta, self.read = rank, world_size, return_meta, read
        total = sum(self.counts)
        if total < world_size:
            raise ValueError(f"{total} evaluation samples cannot be spread over {world_size} processes")
        self.batches_per_rank = min(math.ceil(total / (world_size * batch_size)), total // world_size)
        self.total = total

    def __len__(self) -> int:
        return self.batches_per_rank

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Evaluation order does not depend on the epoch; evaluation always reads every batch."""

    def _bounds(self, batch: int) -> tuple[int, int]:
        return share(self.total, batch, self.world_size * self.batches_per_rank)

    def _read(self, start: int, stop: int) -> Iterator[dict[str, Any]]:
        """Decoded samples with global index in [start, stop), reading only the shards that hold them."""
        offset, seen = 0, start
        for path, count in zip(self.paths, self.counts, strict=True):
            if offset + count > start and offset < stop:
                n_read = 0
                for local, sample in enumerate(shard_samples([path], self.read, _refuse)):
                    n_read = local + 1
                    if local >= count:  # read only by the process whose share reaches the end of this shard
                        raise ValueError(f"shard {path} holds more samples than the {count} its manifest says; "
                                         "evaluation reads exactly what the manifest promises, so it stops here "
                                         "(re-create the manifest with data_tools, or check where the shards came "
                                         "from)")
                    if offset + local >= stop:
                        break
                    if offset + local >= start:
                        seen += 1
                        try:
                            yield self.decoder(sample)
                        except CorruptSample as err:
                            _refuse(err)
                if n_read < min(count, stop - offset):
                    raise ValueError(f"shard {path} holds {n_read} samples but its manifest says {count}")
            offset += count
        if seen != stop:
            raise ValueError(f"evaluation shards ended after {seen} of {stop} samples")

    def __iter__(self) -> Iterator[Batch]:
        worker, num_workers = worker_slot()
        first, last = share(self.batches_per_rank, worker, num_workers)
        if first == last:
            return
        base = self.rank * self.batches_per_rank
        start, stop = self._bounds(base + first)[0], self._bounds(base + last - 1)[1]
        samples = self._read(start, stop)
        for batch in range(base + first, base + last):
            lo, hi = self._bounds(batch)
            yield collate(list(islice(samples, hi - lo)), self.return_meta)
        for _ in samples:  # run the reader to its end: its checks of the counts (at most one more sample is read)
            pass
