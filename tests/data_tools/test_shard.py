"""Sharding image folders: round trip, bad input, splits, zip sources and CLI errors."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_tools import shard as shard_cli
from data_tools.errors import DataToolError
from data_tools.files import sha256_file
from data_tools.images_to_shards import ShardOptions, shard_images
from data_tools.sources import FolderSource, open_source
from data_tools.split import assign_split, parse_split, resolve_split
from tests.support.data_fixtures import dir_bytes, read_shards, write_corrupt_corpus, write_random_images


def _shard(src: Path, out: Path, **kw) -> dict:
    options = ShardOptions(name=kw.pop("name", "faces"), resolution=kw.pop("resolution", 16), workers=0,
                           progress=False, **kw)
    return shard_images(open_source(src), out, options).manifest


def test_round_trip_identical_pixels_and_manifest(tmp_path: Path) -> None:
    images = write_random_images(tmp_path / "src", n=23, size=16)
    manifest = _shard(tmp_path / "src", tmp_path / "out", shard_size=5, split="train=18,val=5", seed=3)
    samples = read_shards(sorted((tmp_path / "out").glob("*.tar")))
    assert len(samples) == 23 == sum(s["count"] for s in manifest["splits"].values())
    for sample in samples.values():
        np.testing.assert_array_equal(sample["pixels"], images[sample["file"]])
    assert manifest["complete"] and manifest["config"]["split_seed"] == 3 and manifest["skipped"] == []
    assert {s: v["count"] for s, v in manifest["splits"].items()} == {"train": 18, "val": 5}
    for split, state in manifest["splits"].items():
        assert [r["count"] for r in state["shards"]] == [5] * (state["count"] // 5) + (
            [state["count"] % 5] if state["count"] % 5 else [])
        for i, record in enumerate(state["shards"]):
            path = tmp_path / "out" / record["file"]
            assert record["file"] == f"faces-{split}-{i:06d}.tar"
            assert sha256_file(path) == record["sha256"] and path.stat().st_size == record["nbytes"]
    keys = sorted(s["key"] for s in samples.values() if s["shard"].startswith("faces-train"))
    assert keys == [f"{i:06d}" for i in range(18)] and all(re.fullmatch(r"\d{6}", s["key"]) for s in samples.values())


def test_split_is_deterministic_and_seeded() -> None:
    counts = resolve_split(parse_split("train=0.9,val=0.1"), 30000)
    assert counts == {"train": 27000, "val": 3000}
    a, b = assign_split(100, {"train": 90, "val": 10}, 0), assign_split(100, {"train": 90, "val": 10}, 0)
    assert a == b and sorted(a["train"] + a["val"]) == list(range(100))
    assert assign_split(100, {"train": 90, "val": 10}, 1)["val"] != a["val"]
    with pytest.raises(DataToolError):
        resolve_split(parse_split("train=10,val=5"), 20)


def test_same_input_gives_byte_identical_shards_from_folder_and_zip(tmp_path: Path) -> None:
    write_random_images(tmp_path / "src", n=12, size=16)
    with zipfile.ZipFile(tmp_path / "src.zip", "w") as zf:
        for path in sorted((tmp_path / "src").iterdir()):
            zf.write(path, path.name)
    _shard(tmp_path / "src", tmp_path / "a", shard_size=4)
    _shard(tmp_path / "src.zip", tmp_path / "b", shard_size=4)
    a, b = dir_bytes(tmp_path / "a"), dir_bytes(tmp_path / "b")
    assert {k: v for k, v in a.items() if k.endswith(".tar")} == {k: v for k, v in b.items() if k.endswith(".tar")}


def test_corrupt_corpus_is_skipped_and_listed(tmp_path: Path) -> None:
    fates = write_corrupt_corpus(tmp_path / "src", size=32)
    write_random_images(tmp_path / "src", n=4, size=48)
    manifest = _shard(tmp_path / "src", tmp_path / "out", resolution=32, split="train=1.0")
    reasons = {s["file"]: s["reason"] for s in manifest["skipped"]}
    for name, fate in fates.items():
        if fate == "ok":
            assert name not in reasons
        else:
            assert fate in reasons[name], (name, reasons.get(name))
    samples = read_shards(sorted((tmp_path / "out").glob("*.tar")))
    assert manifest["splits"]["train"]["count"] == len(samples) == 6
    by_file = {s["file"]: s["pixels"] for s in samples.values()}
    assert all(p.shape == (32, 32, 3) for p in by_file.values())
    gray = np.asarray(Image.open(tmp_path / "src" / "gray.png"))
    np.testing.assert_array_equal(by_file["gray.png"], np.repeat(gray[..., None], 3, axis=2))
    assert (by_file["rgba.png"][:, :16] == 255).all() and (by_file["rgba.png"][:, 16:] == [200, 0, 0]).all()


def test_strict_flag_turns_a_skip_into_an_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_random_images(tmp_path / "src", n=3, size=16)
    (tmp_path / "src" / "zz_broken.png").write_bytes(b"")
    argv = [str(tmp_path / "src"), str(tmp_path / "out"), "--resolution", "16", "--split", "train=1.0",
            "--workers", "0", "--quiet"]
    assert shard_cli.main([*argv, "--strict"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "zz_broken.png" in err and "empty" in err
    assert not list((tmp_path / "out").glob("*.tmp"))


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "empty").mkdir()
    assert shard_cli.main([str(tmp_path / "empty"), str(tmp_path / "out"), "--quiet"]) == 1
    assert "holds no JPEG/PNG files" in capsys.readouterr().err
    write_random_images(tmp_path / "src", n=4, size=16)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "other.txt").write_text("x")
    assert shard_cli.main([str(tmp_path / "src"), str(tmp_path / "busy"), "--quiet", "--workers", "0"]) == 1
    assert "holds other data" in capsys.readouterr().err
    argv = [str(tmp_path / "src"), str(tmp_path / "out"), "--quiet", "--workers", "0", "--split", "train=1.0"]
    assert shard_cli.main([*argv, "--resolution", "16"]) == 0
    assert "train: 4 images in 1 shards" in capsys.readouterr().out
    assert [p.name for p in (tmp_path / "out").glob("*.tar")] == ["src-train-000000.tar"]  # named after the source
    assert shard_cli.main([*argv, "--resolution", "8"]) == 1
    err = capsys.readouterr().err
    assert "different dataset" in err and "resolution" in err and err.count("\n") == 1


def test_crop_and_resize_to_resolution(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    wide = np.zeros((40, 80, 3), np.uint8)
    wide[:, 20:60] = 255  # the central square is white, the sides black
    Image.fromarray(wide).save(src / "wide.png")
    _shard(src, tmp_path / "out", resolution=20, split="train=1.0")
    (sample,) = read_shards(sorted((tmp_path / "out").glob("*.tar"))).values()
    assert sample["pixels"].shape == (20, 20, 3) and sample["pixels"].min() >= 250


def test_workers_give_the_same_shards(tmp_path: Path) -> None:
    write_random_images(tmp_path / "src", n=40, size=16)
    _shard(tmp_path / "src", tmp_path / "serial", shard_size=16)
    options = ShardOptions(name="faces", resolution=16, shard_size=16, workers=2, progress=False)
    shard_images(FolderSource(tmp_path / "src"), tmp_path / "parallel", options)
    assert dir_bytes(tmp_path / "serial") == dir_bytes(tmp_path / "parallel")
    assert json.loads((tmp_path / "serial" / "manifest.json").read_text())["complete"]
