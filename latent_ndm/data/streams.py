"""Iterable datasets over webdataset shards: resampled training batches and exact-once evaluation batches.

Shards are read with `data_tools.tarread` (a header parser ~6x faster than tarfile + webdataset's expander)
and shuffled with webdataset's buffer. Both yield whole batches (use them with ``DataLoader(batch_size=None)``)
so that the number of batches per rank is fixed here rather than by how shards happen to divide:

* `TrainStream`: shards are split by node (rank) and then by DataLoader worker, each worker resamples its
  own shards with replacement, shuffles samples in a seeded buffer, flips at random, and stops after its share
  of ``batches_per_epoch``. Every rank yields exactly ``batches_per_epoch`` batches. Every epoch starts a fresh
  stream seeded by (seed, epoch, rank, worker) only, so the batches of an epoch can be replayed by a new process
  (a run resumed from a checkpoint draws what the uninterrupted run drew).
* `EvalStream`: the N samples (in shard order) are cut into ``world_size * K`` contiguous batches of
  near-equal size (K = ceil(N / (world_size * batch_size))); rank r reads batches r*K .. r*K+K-1. Every
  sample is read exactly once across ranks, and all ranks yield K batches, so DDP never waits on a rank.
"""

from __future__ import annotations

import io
import math
import random
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any

import numpy as np
import torch
import webdataset as wds
from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info

from data_tools.tarread import iter_samples

Batch = torch.Tensor | dict[str, Any]


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


@dataclass
class SampleDecoder:
    """Turns a raw webdataset sample into tensors.

    ``kind="images"``: the ``png`` field becomes a uint8 tensor (3, R, R) (`collate` scales it); any other size than
    `resolution` is an error naming the key and shard. ``kind="latents"``: every ``<field>.npy`` becomes a
    float tensor named ``<field>``.
    """

    kind: str = "images"
    resolution: int | None = None

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"key": sample["__key__"], "shard": sample.get("__url__", "?")}
        if self.kind == "images":
            out["image"] = self._image(sample)
        else:
            fields = {k[:-4]: v for k, v in sample.items() if k.endswith(".npy")}
            if not fields:
                raise ValueError(f"sample {out['key']} in shard {out['shard']} holds no .npy latents")
            for name, data in fields.items():
                out[name] = torch.from_numpy(np.load(io.BytesIO(data), allow_pickle=False).astype(np.float32))
        return out

    def _image(self, sample: dict[str, Any]) -> torch.Tensor:
        data = sample.get("png") or sample.get("jpg")
        where = f"sample {sample['__key__']} in shard {sample.get('__url__', '?')}"
        if data is None:
            raise ValueError(f"{where} has no png image; is this a latent shard (use kind='latents')?")
        img = Image.open(io.BytesIO(data))
        arr = np.array(img if img.mode == "RGB" else img.convert("RGB"))
        if self.resolution is not None and arr.shape[:2] != (self.resolution, self.resolution):
            raise ValueError(f"{where} is {arr.shape[1]}x{arr.shape[0]}, expected "
                             f"{self.resolution}x{self.resolution}; reshard with --resolution {self.resolution}")
        return torch.from_numpy(arr).permute(2, 0, 1)  # uint8 (3, R, R); `collate` scales whole batches


def to_unit_range(x: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float32 in [-1, 1] (x / 127.5 - 1)."""
    return x.float().div_(127.5).sub_(1.0)


def collate(samples: list[dict[str, Any]], return_meta: bool) -> Batch:
    """Stack decoded samples; a plain image tensor unless `return_meta` or the samples are latents.

    Images are stacked as uint8 and scaled to float in [-1, 1] once per batch.
    """
    tensors = {k: torch.stack([s[k] for s in samples]) for k in samples[0] if k not in ("key", "shard")}
    if "image" in tensors:
        tensors["image"] = to_unit_range(tensors["image"])
    if return_meta:
        return {**tensors, "key": [s["key"] for s in samples], "shard": [s["shard"] for s in samples]}
    return tensors["image"] if list(tensors) == ["image"] else tensors


class TrainStream(IterableDataset):
    """Endless resampled stream cut into exactly `batches_per_epoch` batches per rank (see module doc)."""

    def __init__(self, paths: list[str], decoder: SampleDecoder, batch_size: int, batches_per_epoch: int,
                 shuffle_buffer: int, seed: int, flip: bool, rank: int = 0, world_size: int = 1,
                 return_meta: bool = False, on_error: str = "raise") -> None:
        super().__init__()
        self.on_error = on_error
        self.paths, self.decoder = [str(p) for p in paths], decoder
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

    def _resampled(self, rng: random.Random, shards: list[str]) -> Iterator[dict[str, Any]]:
        """Samples of shards drawn with replacement, forever. A shard that cannot be read stops the stream
        (on_error="raise") or is named in one warning and passed over from then on ("warn"); the samples read
        before the damage are kept. The same damage gives the same stream, so resuming stays exact."""
        bad: set[str] = set()
        while True:
            path = rng.choice(shards)
            if path in bad:
                if len(bad) == len(set(shards)):
                    raise ValueError(f"none of the training shards {sorted(bad)} can be read; re-create them")
                continue
            try:
                yield from iter_samples(path)
            except (ValueError, OSError) as err:
                if self.on_error == "raise":
                    raise ValueError(f"training shard {path} cannot be read ({err}); data.on_error=warn goes on "
                                     "without it") from err
                bad.add(path)
                warnings.warn(f"training shard {path} cannot be read ({err}); going on without the rest of it",
                              stacklevel=2)

    def _samples(self, rng: random.Random, shards: list[str]) -> Iterator[dict[str, Any]]:
        samples = self._resampled(rng, shards)
        if self.shuffle_buffer > 1:
            samples = wds.shuffle(self.shuffle_buffer, initial=self.shuffle_buffer, rng=rng)(samples)
        return samples

    def _stream(self, worker: int, num_workers: int, skip: int = 0) -> Iterator[dict[str, Any]]:
        """This worker's decoded samples for the current epoch: a fresh stream seeded by (seed, epoch, rank, worker).

        Nothing carries over from the previous epoch (the shuffle buffer is refilled each epoch), so the stream
        depends on the epoch number alone, not on what this process read before. The first `skip` samples are
        drawn (with their flips) but not decoded.
        """
        rng = random.Random(f"train-{self.seed}-{self.epoch}-{self.rank}-{worker}")
        shards = assign_shards(self.paths, self.rank, self.world_size, worker, num_workers)
        samples = self._samples(rng, shards)
        flips = self.flip and self.decoder.kind == "images"
        for _ in range(skip):
            next(samples)
            if flips:
                rng.random()  # the draw `_decode_and_flip` would have made
        return map(self._decode_and_flip(rng), samples)

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


class EvalStream(IterableDataset):
    """Every sample exactly once across ranks, the same number of batches on every rank (see module doc)."""

    def __init__(self, paths: list[str], counts: list[int], decoder: SampleDecoder, batch_size: int,
                 rank: int = 0, world_size: int = 1, return_meta: bool = False) -> None:
        super().__init__()
        self.paths, self.counts, self.decoder = [str(p) for p in paths], list(counts), decoder
        self.rank, self.world_size, self.return_meta = rank, world_size, return_meta
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
                for local, sample in enumerate(iter_samples(path)):
                    n_read = local + 1
                    if offset + local >= stop:
                        break
                    if offset + local >= start:
                        seen += 1
                        yield self.decoder(sample)
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
