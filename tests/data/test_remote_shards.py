"""Shards from anywhere, on the loopback only: HTTP (with 404s, stalls, cuts and 503s), pipe:, s3:// and gs:// (with
stand-in clients), read through the same webdataset pipeline as local shards and giving the same batches."""

from __future__ import annotations

import io
import os
import shutil
import stat
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from data_tools.errors import DataToolError
from data_tools.http_stream import ReadOptions, ShardReadError
from data_tools.locations import expand_shards, folder_of, join, name_of
from data_tools.reading import iter_shard_samples, read_bytes
from data_tools.shard_index import shard_info, split_pattern, split_shards
from latent_ndm.data.module import ShardDataModule
from latent_ndm.data.streams import SampleDecoder, TrainStream
from tests.support.http_server import ShardServer

FAST = ReadOptions(timeout=0.5, retries=1, backoff=0.01)  # faults are found within a second or two


@pytest.fixture
def served(tmp_path: Path, tiny_data: Path):
    """A copy of the tiny dataset (36 train images in 3 shards, 12 val) served over HTTP; faults are set per test."""
    root = tmp_path / "www" / "synthetic-16"
    shutil.copytree(tiny_data, root)
    with ShardServer(tmp_path / "www") as server:
        yield server, root, f"{server.url}/synthetic-16"


def _train_stream(paths: list[str], on_error: str = "warn", **kwargs: object) -> TrainStream:
    return TrainStream(paths, SampleDecoder("images", 16), batch_size=8, batches_per_epoch=6, shuffle_buffer=8,
                       seed=3, flip=True, on_error=on_error, read=FAST, **kwargs)


# --- the HTTP stream -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fault", ["", "503x2", "cut-once", "cut-once-no-range"])
def test_transient_faults_are_retried_and_give_the_exact_bytes(served, fault: str) -> None:
    server, root, base = served
    name = "synthetic-train-000000.tar"
    server.faults[name] = fault
    patient = ReadOptions(timeout=0.5, retries=2, backoff=0.01)
    assert read_bytes(join(base, name), patient) == (root / name).read_bytes()
    assert server.requests[name] == {"": 1, "503x2": 3, "cut-once": 2, "cut-once-no-range": 2}[fault]


@pytest.mark.parametrize(("fault", "message", "requests"), [
    ("404", r"HTTP 404 \(Not Found\)", 1),  # permanent: not retried
    ("truncate", r"the connection closed after \d+ of \d+ bytes \(2 attempts", 2),
    ("stall", r"stalled \(no data for 0.5 s\) \(2 attempts", 2),
])
def test_permanent_faults_name_the_shard_and_never_hang(served, fault: str, message: str, requests: int) -> None:
    server, _, base = served
    name = "synthetic-train-000001.tar"
    server.faults[name] = fault
    start = time.monotonic()
    with pytest.raises(ShardReadError, match=rf"synthetic-train-000001.tar: {message}"):
        read_bytes(join(base, name), FAST)
    assert time.monotonic() - start < 5 and server.requests[name] == requests


# --- locations -------------------------------------------------------------------------------------------------------

def test_url_patterns_folders_and_the_manifest_beside_the_shards(served) -> None:
    server, root, base = served
    urls = expand_shards(f"{base}/synthetic-train-{{000000..000002}}.tar")
    assert [name_of(u) for u in urls] == [p.name for p in sorted(root.glob("*-train-*.tar"))]
    assert folder_of(urls[0]) == base and split_shards(base, "val") == [f"{base}/synthetic-val-000000.tar"]
    info = shard_info(urls)  # counts from the manifest at <base>/manifest.json: no shard is read
    assert info.counts == [12, 12, 12] and info.resolution == 16 and info.kind == "images"
    assert server.requests["manifest.json"] == 2 and not any(n.endswith(".tar") for n in server.requests)
    (root / "manifest.json").unlink()
    with pytest.raises(DataToolError, match=r"no manifest.json under http://127.0.0.1:\d+/synthetic-16: a remote "
                                            r"shard folder is known by its manifest"):
        split_shards(base, "train")
    assert shard_info(urls).counts == [12, 12, 12]  # without it, the shards are counted by reading them


def _stand_in_client(folder: Path, name: str, body: str) -> None:
    """An executable `name` in `folder` (put first on PATH) that behaves like the real client for one command."""
    script = folder / name
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


def test_pipe_s3_and_gs_shards_stream_through_their_clients(tmp_path: Path, tiny_data: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    shard = tiny_data / "synthetic-val-000000.tar"
    expected = [s["__key__"] for s in iter_shard_samples(shard)]
    assert [s["__key__"] for s in iter_shard_samples(f"pipe:cat {shard}")] == expected
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    # `aws s3 cp s3://bucket/KEY -` and `gsutil cat gs://bucket/KEY` both print KEY's bytes from the local dataset
    _stand_in_client(bin_dir, "aws", f'cat "{tiny_data}/${{3#s3://bucket/}}"')
    _stand_in_client(bin_dir, "gsutil", f'cat "{tiny_data}/${{2#gs://bucket/}}"')
    for url in ("s3://bucket/synthetic-val-000000.tar", "gs://bucket/synthetic-val-000000.tar"):
        assert [s["__key__"] for s in iter_shard_samples(url)] == expected
        assert shard_info([url]).counts == [12]  # the manifest is read through the client too
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(DataToolError, match=r"reading s3://bucket/x.tar needs the `aws` command-line client"):
        list(iter_shard_samples("s3://bucket/x.tar"))


def test_a_pipe_that_stalls_or_fails_is_an_error_naming_it() -> None:
    start = time.monotonic()
    with pytest.raises(ShardReadError, match=r"pipe:sleep 30: stalled \(no data for 0.5 s\)"):
        read_bytes("pipe:sleep 30", FAST)
    assert time.monotonic() - start < 5
    with pytest.raises(ShardReadError, match=r"pipe:exit 3: the command exited with status 3"):
        read_bytes("pipe:exit 3", FAST)


# --- the data module over URLs ---------------------------------------------------------------------------------------

def test_url_shards_give_the_batches_local_shards_give(served) -> None:
    _, root, base = served
    local = sorted(str(p) for p in root.glob("*-train-*.tar"))
    urls = expand_shards(f"{base}/synthetic-train-{{000000..000002}}.tar")
    for a, b in zip(_train_stream(local), _train_stream(urls), strict=True):
        assert torch.equal(a, b)


def test_url_evaluation_reads_every_sample_once_and_resume_is_exact(served) -> None:
    _, root, base = served
    module = ShardDataModule(split_shards(base, "train"), split_shards(base, "val"), batch_size=5, seed=1,
                             return_meta=True, read=FAST)
    module.setup("fit")
    keys = [k for batch in module.val_dataloader() for k in batch["key"]]
    assert sorted(keys) == sorted(s["__key__"] for s in iter_shard_samples(root / "synthetic-val-000000.tar"))
    stream = module.train_dataloader().dataset
    stream.set_epoch(2)
    full = [b["key"] for b in stream]
    stream.set_epoch(2, start_batch=2)
    assert [b["key"] for b in stream] == full[2:]


def _corrupt_one_png(shard: Path) -> str:
    """Overwrite the middle of the first PNG in `shard` (the tar stays valid); the key of that sample."""
    data = bytearray(shard.read_bytes())
    first = next(iter_shard_samples(shard))
    png = first["png"]
    at = bytes(data).index(png) + len(png) // 2
    data[at:at + 64] = bytes(64)
    shard.write_bytes(bytes(data))
    return first["__key__"]


@pytest.mark.parametrize("fault", ["404", "stall", "truncate", "corrupt-sample"])
def test_training_goes_on_past_each_fault_and_names_it(served, fault: str) -> None:
    server, root, base = served
    name = "synthetic-train-000001.tar"
    what = name
    if fault == "corrupt-sample":
        what = rf"sample {_corrupt_one_png(root / name)} in shard .*{name} does not decode"
    else:
        server.faults[name] = fault
    urls = expand_shards(f"{base}/synthetic-train-{{000000..000002}}.tar")
    start = time.monotonic()
    with pytest.warns(UserWarning, match=what):
        batches = list(_train_stream(urls, counts=[12, 12, 12]))
    assert time.monotonic() - start < 30
    assert len(batches) == 6 and all(b.shape == (8, 3, 16, 16) and torch.isfinite(b).all() for b in batches)
    with pytest.raises(ValueError, match=rf"{what}.*data.on_error=warn"):
        list(_train_stream(urls, on_error="raise"))


def test_an_evaluation_shard_cut_off_mid_stream_stops_evaluation_naming_it(served) -> None:
    server, _, base = served
    server.faults["synthetic-val-000000.tar"] = "truncate"
    module = ShardDataModule(None, split_shards(base, "val"), batch_size=4, read=FAST)
    with pytest.raises(ValueError, match=r"evaluation shard .*synthetic-val-000000.tar cannot be read \(the "
                                         r"connection closed after \d+ of \d+ bytes .*evaluation reads every sample"):
        list(module.val_dataloader())


def test_local_and_url_specs_mix_in_one_list(served) -> None:
    _, root, base = served
    spec = [split_pattern(root, "val"), f"{base}/synthetic-train-000000.tar"]
    assert sorted(name_of(p) for p in expand_shards(spec)) == ["synthetic-train-000000.tar", "synthetic-val-000000.tar"]
    assert shard_info(expand_shards(spec)).counts == [12, 12]  # each counted from the manifest beside it


def test_a_served_png_decodes_to_the_local_pixels(served) -> None:
    _, root, base = served
    remote = next(iter_shard_samples(f"{base}/synthetic-val-000000.tar", FAST))
    local = next(iter_shard_samples(root / "synthetic-val-000000.tar"))
    assert remote["__key__"] == local["__key__"]
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(remote["png"]))),
                          np.asarray(Image.open(io.BytesIO(local["png"]))))
