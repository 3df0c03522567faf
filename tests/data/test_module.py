"""ShardDataModule in one process: batch format, epoch length, exact-once evaluation, errors, latents."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image
from torch.utils.data import DataLoader

from data_tools.latent_shards import write_latent_shards
from data_tools.shard_index import iter_tar_samples, split_pattern
from latent_ndm.data.module import ShardDataModule, read_shard_info
from latent_ndm.data.streams import EvalStream, SampleDecoder, delivered_per_worker
from tests.support.data_fixtures import tiny_synthetic


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_synthetic(tmp_path_factory.mktemp("dm") / "syn", n=96, resolution=16, shard_size=8)


def _module(root: Path, **kw) -> ShardDataModule:
    kw = {"batch_size": 8, "shuffle_buffer": 16, "batches_per_epoch": 5, **kw}
    dm = ShardDataModule(split_pattern(root, "train"), split_pattern(root, "val"), **kw)
    dm.setup("fit")
    return dm


@pytest.mark.parametrize("num_workers", [0, 2])
def test_train_batches_have_fixed_count_format_and_seeded_order(shards: Path, num_workers: int) -> None:
    dm = _module(shards, num_workers=num_workers, return_meta=True)
    loader = dm.train_dataloader()
    first, second = list(loader), list(loader)
    assert len(loader) == len(first) == len(second) == 5
    x = first[0]["image"]
    assert x.shape == (8, 3, 16, 16) and x.dtype == torch.float32 and -1 <= x.min() < x.max() <= 1
    assert [b["key"] for b in first] != [b["key"] for b in second]  # a new epoch, a new order
    again = list(_module(shards, num_workers=num_workers, return_meta=True).train_dataloader())
    assert [b["key"] for b in again] == [b["key"] for b in first]  # same seed and epoch, same batches
    plain = next(iter(_module(shards, num_workers=num_workers).train_dataloader()))
    assert isinstance(plain, torch.Tensor) and plain.shape == (8, 3, 16, 16)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_validation_reads_every_sample_once(shards: Path, num_workers: int) -> None:
    dm = _module(shards, num_workers=num_workers, return_meta=True, batch_size=5)
    keys = Counter((shard, key) for b in dm.val_dataloader() for key, shard in zip(b["key"], b["shard"], strict=True))
    expected = {(str(p), k) for p in sorted(shards.glob("*-val-*.tar")) for k, _ in iter_tar_samples(p)}
    assert set(keys) == expected and set(keys.values()) == {1} and len(expected) == dm.info["val"].total == 24


@pytest.mark.parametrize("total,world,batch", [(24, 2, 5), (23, 3, 4), (7, 4, 1), (3000, 8, 64)])
def test_eval_partition_is_exact_and_balanced(total: int, world: int, batch: int) -> None:
    streams = [EvalStream(["x"], [total], SampleDecoder(), batch, rank, world) for rank in range(world)]
    k = streams[0].batches_per_rank
    bounds = [streams[0]._bounds(b) for b in range(world * k)]
    assert bounds[0][0] == 0 and bounds[-1][1] == total
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))
    assert all(hi > lo for lo, hi in bounds) and all(len(s) == k for s in streams)
    if batch > 1:
        assert all(hi - lo <= batch for lo, hi in bounds)


def test_read_shard_info_and_flip(shards: Path) -> None:
    info = read_shard_info(split_pattern(shards, "train"))
    assert info.resolution == 16 and info.total == 72 and len(info.paths) == 9 and info.kind == "images"
    keep = _module(shards, flip=False, shuffle_buffer=0, return_meta=True)
    flip = _module(shards, flip=True, shuffle_buffer=0, return_meta=True)
    a, b = next(iter(keep.train_dataloader())), next(iter(flip.train_dataloader()))
    assert a["key"] == b["key"]
    same = [torch.equal(x, y) for x, y in zip(a["image"], b["image"], strict=True)]
    mirrored = [torch.equal(x.flip(-1), y) for x, y in zip(a["image"], b["image"], strict=True)]
    assert all(s or m for s, m in zip(same, mirrored, strict=True)) and any(mirrored) and any(same)


def test_setup_errors_are_clear(shards: Path, tmp_path: Path) -> None:
    missing = str(tmp_path / "nothing-*.tar")
    with pytest.raises(ValueError, match=r"no shards match .*nothing-\*\.tar.*python -m data_tools\.synthetic"):
        ShardDataModule(missing).setup("fit")
    with pytest.raises(ValueError, match="are 16px but data.resolution=32"):
        ShardDataModule(split_pattern(shards, "train"), resolution=32).setup("fit")
    bad = tmp_path / "odd-train-000000.tar"
    with wds.TarWriter(str(bad)) as writer:
        for key, side in (("000000", 16), ("000001", 8)):
            buf = io.BytesIO()
            Image.fromarray(np.zeros((side, side, 3), np.uint8)).save(buf, format="PNG")
            writer.write({"__key__": key, "png": buf.getvalue()})
    dm = ShardDataModule(str(bad), val_shards=str(bad), batch_size=2)
    dm.setup("fit")
    with pytest.raises(ValueError, match=r"sample 000001 in shard .*odd-train-000000\.tar is 8x8, expected 16x16"):
        list(dm.val_dataloader())


def test_latent_shards_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    latents = {split: [(f"{i:06d}", {"mean": rng.normal(size=(4, 2, 2)).astype(np.float32),
                                     "logvar": rng.normal(size=(4, 2, 2)).astype(np.float32)}) for i in range(n)]
               for split, n in (("train", 10), ("val", 7))}
    for split, items in latents.items():
        manifest = write_latent_shards(tmp_path / "lat", "enc", split, items, shard_size=4)
    assert manifest["complete"] and manifest["splits"]["val"]["count"] == 7
    assert manifest["config"]["fields"] == {"logvar": [4, 2, 2], "mean": [4, 2, 2]}
    dm = ShardDataModule(split_pattern(tmp_path / "lat", "train"), split_pattern(tmp_path / "lat", "val"),
                         batch_size=3, kind="latents", batches_per_epoch=2, return_meta=True)
    dm.setup("fit")
    train = next(iter(dm.train_dataloader()))
    assert train["mean"].shape == (3, 4, 2, 2) and train["logvar"].dtype == torch.float32
    wanted = dict(latents["val"])
    for batch in dm.val_dataloader():
        for key, mean in zip(batch["key"], batch["mean"], strict=True):
            np.testing.assert_array_equal(mean.numpy(), wanted.pop(key)["mean"])
    assert not wanted
    with pytest.raises(ValueError, match="hold latents"):
        ShardDataModule(split_pattern(tmp_path / "lat", "train")).setup("fit")


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_pass_started_mid_epoch_yields_the_rest_of_that_epoch(shards: Path, num_workers: int) -> None:
    """What a run resumed after k batches of an epoch reads: batches k.. of the uninterrupted pass, flips included."""
    stream = _module(shards, num_workers=num_workers, return_meta=True, batches_per_epoch=5).train_dataloader().dataset
    loader = DataLoader(stream, batch_size=None, num_workers=num_workers)
    stream.set_epoch(3)
    whole = list(loader)
    for k in (0, 2, 5):
        stream.set_epoch(3, start_batch=k)
        rest = list(loader)
        assert [b["key"] for b in rest] == [b["key"] for b in whole[k:]]
        assert all(torch.equal(a["image"], b["image"]) for a, b in zip(rest, whole[k:], strict=True))


@pytest.mark.parametrize(("sizes", "delivered", "taken"), [
    ([3, 3], 3, [2, 1]), ([2, 3], 5, [2, 3]), ([2, 3], 4, [2, 2]), ([1, 2, 2], 4, [1, 2, 1]), ([5], 2, [2]),
])
def test_delivered_per_worker_follows_the_loader_round_robin(sizes: list[int], delivered: int,
                                                             taken: list[int]) -> None:
    assert delivered_per_worker(sizes, delivered) == taken
