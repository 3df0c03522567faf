"""Memory is bounded per sample, not only per member, and a latent's `.npy` header is checked before anything is
allocated: a sample whose members together pass `MAX_SAMPLE_BYTES` is dropped before the member that passes it is
read, and an array whose header declares more (or fewer) bytes than follow is a corrupt sample; in training (passed
over under `data.on_error=warn`), evaluation, encode and `data_tools.inspect`. The bounds are made small here, so no
test allocates more than a few MiB."""

from __future__ import annotations

import io
import shutil
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

from data_tools import inspect, tarread
from data_tools.latent_shards import npy_array, npy_bytes, write_latent_shards
from data_tools.shard_index import iter_tar_samples
from latent_ndm.data.streams import EvalStream, SampleDecoder, TrainStream
from tests.support.hostile import assert_evaluate_and_encode_refuse, publish, tar_of

SAMPLE_BOUND = 8000  # bytes: the tiny dataset's samples are ~1 KB; the heavy one holds 12 KB
HEAVY = "has members of more than 8000 bytes together"


@pytest.fixture
def small_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tarread, "MAX_SAMPLE_BYTES", SAMPLE_BOUND)


@pytest.fixture
def dataset(tmp_path: Path, tiny_data: Path) -> Path:
    root = tmp_path / "synthetic-16"
    shutil.copytree(tiny_data, root)
    return root


def heavy_shard(dataset: Path, split: str, tiny_data: Path) -> Path:
    """Publish 9 samples whose fifth holds its image and 12 members of 1,000 bytes each (each far under the
    per-member bound, 12 KB together)."""
    good = [fields["png"] for _, fields in iter_tar_samples(tiny_data / "synthetic-val-000000.tar")]
    heavy = [("000004.png", good[4]), *((f"000004.extra{i:02d}.bin", bytes([i]) * 1000) for i in range(12))]
    before, after = ([(f"{i:06d}.png", good[i]) for i in span] for span in (range(4), range(5, 9)))
    members = [*before, *heavy, *after]
    return publish(dataset, split, 0, tar_of(members), 9)


class Zeros(io.RawIOBase):
    """A tar stream made on the fly: one member `name` declaring `size` bytes (all zero), then the end-of-archive
    blocks; nothing of it is held."""

    def __init__(self, name: str, size: int) -> None:
        super().__init__()
        header = tar_of([(name, b"")], {name: size})
        self.header, self.left = header[:512], size + (-size % 512) + 1024

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:
        n = len(buffer)
        if self.header:
            n = min(n, len(self.header))
            buffer[:n], self.header = self.header[:n], self.header[n:]
            return n
        n = min(n, self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n


def test_a_refused_member_is_read_past_without_being_held() -> None:
    asked: list[tuple[str, int]] = []
    tracemalloc.start()
    try:
        members = list(tarread.iter_tar_members(Zeros("000000.npy", tarread.MAX_MEMBER_BYTES), "zeros.tar",
                                                lambda name, size: asked.append((name, size)) is not None))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert asked == [("000000.npy", tarread.MAX_MEMBER_BYTES)] and members == [("000000.npy", None)]
    assert peak < 16 << 20, f"{peak} bytes were held to read past a 256 MiB member"


def test_training_passes_over_a_sample_over_the_bound(small_bound: None, dataset: Path, tiny_data: Path) -> None:
    paths = [str(heavy_shard(dataset, "train", tiny_data)), str(dataset / "synthetic-train-000001.tar")]
    stream = TrainStream(paths, SampleDecoder("images", 16), batch_size=8, batches_per_epoch=6, shuffle_buffer=1,
                         seed=0, flip=False, on_error="warn")
    with pytest.warns(UserWarning, match=f"sample 000004 in shard .*synthetic-train-000000.tar {HEAVY}"):
        batches = list(stream)
    assert len(batches) == 6 and all(b.shape == (8, 3, 16, 16) for b in batches)
    strict = TrainStream(paths, SampleDecoder("images", 16), 8, 6, 1, seed=0, flip=False, on_error="raise")
    with pytest.raises(ValueError, match=HEAVY):
        list(strict)


def test_evaluation_encode_and_inspect_name_a_sample_over_the_bound(small_bound: None, dataset: Path, tiny_data: Path,
                                                                   tiny_vae_run: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    shard = heavy_shard(dataset, "val", tiny_data)
    assert_evaluate_and_encode_refuse(dataset, tiny_vae_run, tmp_path / "latents", capsys, HEAVY, shard.name)
    assert inspect.main([str(dataset), "--preview-images", "0"]) == 1
    assert f"sample 000004 {HEAVY}" in capsys.readouterr().out


# --- .npy headers ---------------------------------------------------------------------------------------------------

def npy_declaring(shape: tuple[int, ...], descr: str, payload: bytes) -> bytes:
    """A .npy header declaring `shape` of `descr`, followed by `payload` (whatever its length)."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue() + payload


LATENT = (3, 4, 4)
HOSTILE_NPY = {
    "8 TiB in 16 bytes": (npy_declaring((1 << 40,), "<f8", bytes(16)), "declares 8796093022208 bytes"),
    "64 GiB in 16 bytes": (npy_declaring((1 << 34,), "<f4", bytes(16)), "declares 68719476736 bytes"),
    "trailing bytes": (npy_declaring(LATENT, "<f4", bytes(4 * 48 * 2)), "declares 192 bytes"),
    "complex": (npy_bytes(np.ones(LATENT, np.complex64)), "is not a plain number type"),
}


@pytest.fixture
def latents(tmp_path: Path) -> Path:
    """A latent-shard folder: 12 samples of (3, 4, 4) `mean` and `logvar` in one training shard."""
    rng = np.random.default_rng(0)
    items = [(f"{i:06d}", {f: rng.standard_normal(LATENT).astype(np.float32) for f in ("mean", "logvar")})
             for i in range(12)]
    write_latent_shards(tmp_path / "latents", "lat", "train", items, shard_size=12)
    return tmp_path / "latents"


def hostile_latents(folder: Path, mean_of_4: bytes) -> Path:
    """Publish the training shard again with sample 000004's `mean.npy` replaced by `mean_of_4`."""
    good = dict(iter_tar_samples(folder / "lat-train-000000.tar"))
    members = [(f"{key}.{field}", mean_of_4 if (key, field) == ("000004", "mean.npy") else fields[field])
               for key, fields in good.items() for field in ("logvar.npy", "mean.npy")]
    return publish(folder, "train", 0, tar_of(members), 12)


@pytest.mark.parametrize("kind", HOSTILE_NPY)
def test_a_hostile_npy_header_is_a_corrupt_sample(kind: str, latents: Path) -> None:
    data, reason = HOSTILE_NPY[kind]
    shard = str(hostile_latents(latents, data))
    decoder = SampleDecoder("latents", fields=("logvar", "mean"))
    message = rf"sample 000004 in shard .*lat-train-000000.tar: mean.npy does not load \(its .*{reason}"
    stream = TrainStream([shard], decoder, batch_size=4, batches_per_epoch=3, shuffle_buffer=1, seed=0, flip=False,
                         on_error="warn")
    with pytest.warns(UserWarning, match=message):
        batches = list(stream)
    assert len(batches) == 3 and all(b["mean"].shape == (4, *LATENT) and torch.isfinite(b["mean"]).all()
                                     for b in batches)
    with pytest.raises(ValueError, match=message + ".*evaluation reads every sample"):
        list(EvalStream([shard], [12], decoder, batch_size=4))


def test_npy_array_reads_what_numpy_writes() -> None:
    for array in (np.arange(12, dtype=np.float32).reshape(3, 4), np.asfortranarray(np.arange(6.0).reshape(2, 3)),
                  np.zeros((0, 3), np.float16), np.arange(5, dtype=">i4"), np.arange(4, dtype=np.uint8)):
        loaded = npy_array(npy_bytes(array))
        assert loaded.dtype == array.dtype and loaded.shape == array.shape and np.array_equal(loaded, array)
    for version in ((1, 0), (2, 0)):
        buf = io.BytesIO()
        np.lib.format.write_array(buf, np.float32([[1.5, 2.5]]), version=version)
        assert np.array_equal(npy_array(buf.getvalue()), [[1.5, 2.5]])
    for descr in ("|O", "|b1", "<c8", [("a", "<f4")], ("<f4", (2,))):
        with pytest.raises(ValueError, match="is not a plain number type"):
            npy_array(npy_declaring(LATENT, descr, bytes(8 * 48)))
