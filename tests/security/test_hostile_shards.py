"""Hostile shards are passed over or named, never a traceback: decompression bombs, members that declare impossible
sizes, non-images, a field given twice, manifest counts that lie either way, and the preview of a huge image; in
training (the data module's `on_error` policy), evaluation, encode and `data_tools.inspect`."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from data_tools import inspect
from data_tools.shard_index import iter_tar_samples
from latent_ndm import evaluate
from latent_ndm.data.streams import SampleDecoder, TrainStream
from latent_ndm.training.run import train
from tests.support.hostile import assert_evaluate_and_encode_refuse, error_lines, png_header_only, publish, tar_of
from tests.support.tiny_runs import base_overrides, command


@pytest.fixture(scope="module")
def good(tiny_data: Path) -> list[bytes]:
    """The PNG bytes of the tiny dataset's first 12 validation images."""
    return [fields["png"] for _, fields in iter_tar_samples(tiny_data / "synthetic-val-000000.tar")]


def hostile_members(kind: str, good: list[bytes]) -> tuple[list[tuple[str, bytes]], dict[str, int], int]:
    """(members, declared sizes, samples claimed) of a shard: good images around one hostile sample of `kind`."""
    before = [(f"{i:06d}.png", good[i]) for i in range(4)]
    after = [(f"{i:06d}.png", good[i]) for i in range(5, 9)]
    bad = {
        "bomb": [("000004.png", png_header_only(20000, 20000))],             # 1.2 GB of pixels in 76 bytes
        "huge": [("000004.png", png_header_only(9600, 9600))],
        "not-an-image": [("000004.png", b"<html>not found</html>")],
        "twice": [("000004.png", good[4]), ("000004.png", good[0])],          # one of them would be dropped silently
        "7GB": [("000004.png", good[4][:100])],
        "2^80": [("000004.png", good[4][:100])],
    }[kind]
    declared = {"7GB": {"000004.png": 7 * 10**9}, "2^80": {"000004.png": 2**80}}.get(kind, {})
    return before + bad + after, declared, 9


TOO_LARGE = "declares an image too large to decode safely"
SAMPLE_FAULTS = {"bomb": TOO_LARGE, "huge": TOO_LARGE, "not-an-image": "is not a decodable image",
                 "twice": "has two 'png' members"}
SHARD_FAULTS = {"7GB": "declares 7000000000 bytes", "2^80": f"declares {2**80} bytes"}
KINDS = [*SAMPLE_FAULTS, *SHARD_FAULTS]


@pytest.fixture
def dataset(tmp_path: Path, tiny_data: Path) -> Path:
    root = tmp_path / "synthetic-16"
    shutil.copytree(tiny_data, root)
    return root


def _hostile(dataset: Path, split: str, kind: str, good: list[bytes]) -> Path:
    members, declared, claimed = hostile_members(kind, good)
    return publish(dataset, split, 0, tar_of(members, declared), claimed)


@pytest.mark.parametrize("kind", KINDS)
def test_training_passes_over_a_hostile_sample_or_shard(kind: str, dataset: Path, good: list[bytes]) -> None:
    shard = _hostile(dataset, "train", kind, good)
    paths = [str(shard), str(dataset / "synthetic-train-000001.tar")]
    stream = TrainStream(paths, SampleDecoder("images", 16), batch_size=8, batches_per_epoch=6, shuffle_buffer=1,
                         seed=0, flip=False, on_error="warn")
    fault = SAMPLE_FAULTS.get(kind) or SHARD_FAULTS[kind]
    with pytest.warns(UserWarning, match=fault):
        batches = list(stream)
    assert len(batches) == 6 and all(b.shape == (8, 3, 16, 16) and torch.isfinite(b).all() for b in batches)
    strict = TrainStream(paths, SampleDecoder("images", 16), 8, 6, 1, seed=0, flip=False, on_error="raise")
    with pytest.raises(ValueError, match=fault):
        list(strict)


def test_a_training_run_goes_on_past_a_bomb(tmp_path: Path, dataset: Path, good: list[bytes]) -> None:
    _hostile(dataset, "train", "bomb", good)
    common = [o for o in base_overrides(tmp_path / "run", dataset) if not o.startswith("data.num_images")]
    overrides = ["stage=vae", "data=shards", *common, "trainer.max_steps=3", "trainer.val_check_interval=3"]
    with pytest.warns(UserWarning, match="too large to decode safely"):
        assert command("train", train, overrides) == 0


@pytest.mark.parametrize("kind", KINDS)
def test_evaluation_and_encode_name_a_hostile_sample_in_one_line(kind: str, dataset: Path, good: list[bytes],
                                                                 tiny_vae_run: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    shard = _hostile(dataset, "val", kind, good)
    fault = SAMPLE_FAULTS.get(kind) or SHARD_FAULTS[kind]
    assert_evaluate_and_encode_refuse(dataset, tiny_vae_run, tmp_path / "latents", capsys, fault, shard.name)


@pytest.mark.parametrize(("claimed", "message"), [
    (3, "holds more samples than the 3 its manifest says"),  # under-counts: read silently before
    (20, "holds 12 samples but its manifest says 20"),
])
def test_evaluation_refuses_a_manifest_that_lies_about_a_count(claimed: int, message: str, dataset: Path,
                                                               tiny_vae_run: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    tar = (dataset / "synthetic-val-000000.tar").read_bytes()
    publish(dataset, "val", 0, tar, claimed)
    code = command("evaluate", evaluate.run, [f"ckpt={tiny_vae_run}", f"shards={dataset}", "metrics=[nelbo]",
                                              "progress=false", "accelerator=cpu", "batch_size=3"])
    lines = error_lines(capsys.readouterr().err)
    assert code == 1 and len(lines) == 1 and message in lines[0], lines


@pytest.mark.parametrize("kind", KINDS)
def test_inspect_names_what_is_wrong_and_never_raises(kind: str, dataset: Path, good: list[bytes], tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    _hostile(dataset, "val", kind, good)
    status = inspect.main([str(dataset), "--verify", "--preview", str(tmp_path / "grid.png")])
    out = capsys.readouterr().out
    if kind in SHARD_FAULTS:
        assert status == 1 and "unreadable (" in out and SHARD_FAULTS[kind] in out
    elif kind == "twice":
        assert status == 1 and "sample 000004 has two 'png' members" in out
    else:
        assert status == 0 and f"preview: passed over 1 sample(s), e.g. 000004: {SAMPLE_FAULTS[kind]}" in out[:4000]
    assert Image.open(tmp_path / "grid.png").size[0] <= 8 * 18 + 2


def test_the_preview_of_a_huge_image_is_a_thumbnail(dataset: Path, good: list[bytes], tmp_path: Path) -> None:
    big = io.BytesIO()
    Image.fromarray(np.full((3000, 3000, 3), 200, np.uint8)).save(big, format="PNG")
    publish(dataset, "train", 0, tar_of([("000000.png", big.getvalue()), ("000001.png", good[1])]), 2)
    assert inspect.main([str(dataset), "--preview", str(tmp_path / "grid.png"), "--preview-images", "4"]) == 0
    grid = np.asarray(Image.open(tmp_path / "grid.png"))
    assert grid.shape == (2 * 18 + 2, 2 * 18 + 2, 3)  # 16-px tiles (the manifest's resolution), 2 x 2
    assert (grid[2:18, 2:18] == 200).all()
