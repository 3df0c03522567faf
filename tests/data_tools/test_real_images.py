"""The real-image sets of `data_tools.real_images` (scikit-learn's bundled pictures), written and sharded."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_tools.errors import DataToolError
from data_tools.real_images import main, photo_tiles, write_real_images
from data_tools.shard import main as shard_main


def test_digits_are_written_upscaled_grey_and_labelled(tmp_path: Path) -> None:
    from sklearn.datasets import load_digits

    assert write_real_images("digits", tmp_path / "png", size=16) == 1797
    files = sorted((tmp_path / "png").glob("*/*.png"))
    assert len(files) == 1797 and {f.parent.name for f in files} == {str(d) for d in range(10)}
    first = np.asarray(Image.open(tmp_path / "png" / "0" / "0000.png"))
    assert first.shape == (16, 16, 3) and (first[..., 0] == first[..., 1]).all()  # grey, as RGB
    ink = load_digits().images[0] > 8  # the digit's bright strokes stay bright after upscaling
    small = np.asarray(Image.fromarray(first[..., 0]).resize((8, 8), Image.Resampling.BOX)).astype(float)
    assert small[ink].mean() > small[~ink].mean() + 80
    before = files[5].stat().st_mtime_ns
    assert write_real_images("digits", tmp_path / "png", size=16) == 1797  # a rerun keeps what is there
    assert files[5].stat().st_mtime_ns == before


def test_photo_tiles_do_not_overlap_and_shard_like_any_folder(tmp_path: Path) -> None:
    names = [name for name, _ in photo_tiles(32)]
    assert len(names) == len(set(names)) == 848  # 2 photos x (13x20 + 8x13 + 6x10) tiles
    assert main(["photos", str(tmp_path / "png")]) == 0
    assert shard_main([str(tmp_path / "png"), str(tmp_path / "shards"), "--resolution", "32", "--quiet"]) == 0
    assert (tmp_path / "shards" / "manifest.json").is_file() and list((tmp_path / "shards").glob("png-val-*.tar"))


def test_without_scikit_learn_the_error_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "sklearn", None)  # import sklearn now raises ImportError
    with pytest.raises(DataToolError, match=r"scikit-learn, which is not installed; run `pip install -e '\.\[real\]'`"):
        write_real_images("digits", tmp_path)
    with pytest.raises(DataToolError, match="unknown set 'mnist'"):
        write_real_images("mnist", tmp_path)


def test_photo_tiles_with_a_stride_overlap_and_stay_inside_the_photo() -> None:
    pytest.importorskip("sklearn")
    tiles = list(photo_tiles(256, stride=64))
    assert len(tiles) == 48  # 2 photos x (3 x 7 at scale 1 + 1 x 3 at 2/3; none at 1/2: 213 px high)
    assert all(image.size == (256, 256) for _, image in tiles)
    assert len({name for name, _ in tiles}) == 48


def test_textures_tile_thirteen_photographs_and_faces_are_one_file_per_face(tmp_path: Path) -> None:
    pytest.importorskip("skimage")
    from data_tools.real_images import face_images, texture_tiles

    tiles = list(texture_tiles(32))
    names = [name for name, _ in tiles]
    assert len(names) == len(set(names)) == 3756 and all(image.size == (32, 32) for _, image in tiles[:50])
    assert {name.split("/")[0] for name in names} >= {"china", "flower", "brick", "gravel", "chelsea", "rocket"}
    grey = np.asarray(next(image for name, image in tiles if name.startswith("gravel/")))
    assert grey.shape == (32, 32, 3) and (grey[..., 0] == grey[..., 2]).all()  # a grey photograph, as RGB
    assert write_real_images("faces", tmp_path / "faces", size=32) == 100
    assert len(list((tmp_path / "faces" / "faces").glob("*.png"))) == 100
    assert len({np.asarray(image).tobytes() for _, image in face_images(32)}) == 100  # no face twice
    with pytest.raises(DataToolError, match="--stride applies to the tiled sets"):
        write_real_images("faces", tmp_path / "x", stride=16)


def test_without_scikit_image_the_error_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "skimage", None)
    with pytest.raises(DataToolError, match=r"scikit-image, which is not installed; run `pip install -e '\.\[real\]'`"):
        write_real_images("faces", tmp_path)
