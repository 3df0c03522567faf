"""Real-image sets that install from the package registries: the pictures scikit-learn and scikit-image ship inside
their wheels.

    python -m data_tools.real_images digits OUT --size 32    # 1,797 scanned handwritten digits
    python -m data_tools.real_images photos OUT --size 32    # 848 tiles of two colour photographs
    python -m data_tools.real_images textures OUT --size 32  # 3,756 tiles of 13 photographs, textures included
    python -m data_tools.real_images faces OUT --size 32     # 100 portraits (Labeled Faces in the Wild, grey)

- ``digits``: the UCI optical-recognition digits (8x8 pixels, 17 grey levels), upscaled (bicubic) to ``size``,
  written as RGB PNGs ``OUT/<label>/<index>.png``.
- ``photos``: the two sample photographs (``china.jpg``, ``flower.jpg``, 427x640), each at scales 1, 2/3 and 1/2,
  cut into non-overlapping ``size`` x ``size`` tiles (no two tiles of one scale share a pixel), written as
  ``OUT/<photo>/s<scale>_<row>_<col>.png``: natural texture.
- ``textures``: the two photographs above and eleven of scikit-image's (astronaut, brick, camera, chelsea, coffee,
  coins, grass, gravel, immunohistochemistry, moon, rocket; grey ones as RGB), each at scales 1 and 1/2, cut into
  non-overlapping tiles the same way: people, a cat, objects, a microscope slide, and surface textures whose detail
  is close to noise (brick, gravel, grass), the hardest kind for a VAE's latent.
- ``faces``: the 100 face images of scikit-image's ``lfw_subset`` (Labeled Faces in the Wild, 25x25 grey crops),
  upscaled (bicubic) to ``size`` and written as RGB ``OUT/faces/<index>.png``. One image per face: no two files
  share a picture, so a split of the files is a split of the faces.

Then ``python -m data_tools.shard OUT SHARDS --resolution 32`` shards the folder like any other. Needs scikit-learn
and, for ``textures`` and ``faces``, scikit-image (``pip install -e '.[real]'``); nothing is downloaded. Rerunning
keeps the files already written.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from data_tools.errors import DataToolError, run_cli
from data_tools.files import atomic_write

DIGITS_SIZE = 8
DIGITS_MAX_LEVEL = 16  # the digits' grey levels are 0..16
PHOTO_SCALES = (1.0, 2 / 3, 0.5)
TEXTURE_SCALES = (1.0, 0.5)
SKIMAGE_PHOTOS = ("astronaut", "brick", "camera", "chelsea", "coffee", "coins", "grass", "gravel",
                  "immunohistochemistry", "moon", "rocket")
LFW_FACES = 100  # lfw_subset holds 100 faces, then 100 crops that are not faces


def _optional(module: str, package: str, sets: str):  # noqa: ANN202 (a module)
    """`module` imported, or one sentence saying that `sets` need `package` and how to install it."""
    try:
        importlib.import_module(module.partition(".")[0])  # the package itself, even when the submodule is cached
        return importlib.import_module(module)
    except ImportError as err:
        raise DataToolError(f"{sets} come from {package}, which is not installed; run `pip install -e '.[real]'` "
                            f"(or `pip install {package}`)") from err


def _sklearn_datasets():  # noqa: ANN202 (a module)
    return _optional("sklearn.datasets", "scikit-learn", "the real-image sets")


def _skimage_data():  # noqa: ANN202 (a module)
    return _optional("skimage.data", "scikit-image", "the textures and faces sets")


def _rgb(pixels: np.ndarray) -> Image.Image:
    image = Image.fromarray(np.asarray(pixels, dtype=np.uint8))
    return image.convert("RGB")


def digit_images(size: int) -> Iterator[tuple[str, Image.Image]]:
    """(relative name, RGB image) of every digit, upscaled from 8x8 to `size` (bicubic: smooth strokes)."""
    if size < DIGITS_SIZE:
        raise DataToolError(f"--size must be at least {DIGITS_SIZE} for the digits, got {size}")
    digits = _sklearn_datasets().load_digits()
    pixels = np.rint(np.asarray(digits.images) * (255.0 / DIGITS_MAX_LEVEL)).astype(np.uint8)
    width = len(str(len(pixels) - 1))
    for i, (image, label) in enumerate(zip(pixels, digits.target, strict=True)):
        grey = Image.fromarray(image, mode="L").resize((size, size), Image.Resampling.BICUBIC)
        yield f"{label}/{i:0{width}d}.png", grey.convert("RGB")


def photo_tiles(size: int, stride: int | None = None) -> Iterator[tuple[str, Image.Image]]:
    """(relative name, tile) of the sample photographs at each of `PHOTO_SCALES`, cut into tiles `stride` pixels
    apart (default `size`: non-overlapping; a smaller stride gives more, overlapping crops, e.g. 48 at 256x256 with
    stride 64, for the 256-pixel rehearsal)."""
    return _sklearn_photo_tiles(size, _stride(size, stride), PHOTO_SCALES)


def texture_tiles(size: int, stride: int | None = None) -> Iterator[tuple[str, Image.Image]]:
    """(relative name, tile) of scikit-learn's two photographs and scikit-image's `SKIMAGE_PHOTOS` at each of
    `TEXTURE_SCALES`, non-overlapping by default (`stride` = `size`)."""
    stride = _stride(size, stride)
    skimage_data = _skimage_data()
    yield from _sklearn_photo_tiles(size, stride, TEXTURE_SCALES)
    for name in SKIMAGE_PHOTOS:
        yield from _tiles(name, _rgb(getattr(skimage_data, name)()), size, stride, TEXTURE_SCALES)


def _stride(size: int, stride: int | None) -> int:
    """The tiles' spacing (`size` when None), after checking both."""
    stride = size if stride is None else int(stride)
    if size < 8 or stride < 1:
        raise DataToolError(f"--size must be at least 8 and --stride at least 1, got {size}, {stride}")
    return stride


def _sklearn_photo_tiles(size: int, stride: int, scales: Sequence[float]) -> Iterator[tuple[str, Image.Image]]:
    photos = _sklearn_datasets().load_sample_images()
    for path, pixels in zip(photos.filenames, photos.images, strict=True):
        yield from _tiles(Path(path).stem, _rgb(pixels), size, stride, scales)


def _tiles(name: str, photo: Image.Image, size: int, stride: int,
           scales: Sequence[float]) -> Iterator[tuple[str, Image.Image]]:
    """(relative name, crop) of `photo` at each scale, `stride` pixels apart."""
    for scale in scales:
        w, h = round(photo.width * scale), round(photo.height * scale)
        scaled = photo if scale == 1.0 else photo.resize((w, h), Image.Resampling.LANCZOS)
        for row in range((h - size) // stride + 1 if h >= size else 0):
            for col in range((w - size) // stride + 1 if w >= size else 0):
                box = (col * stride, row * stride, col * stride + size, row * stride + size)
                yield f"{name}/s{scale:.2f}_{row:02d}_{col:02d}.png", scaled.crop(box)


def face_images(size: int) -> Iterator[tuple[str, Image.Image]]:
    """(relative name, RGB image) of the `LFW_FACES` faces of scikit-image's `lfw_subset`, upscaled (bicubic)."""
    if size < 8:
        raise DataToolError(f"--size must be at least 8, got {size}")
    faces = _skimage_data().lfw_subset()[:LFW_FACES]
    for i, face in enumerate(faces):
        grey = Image.fromarray(np.rint(np.clip(face, 0.0, 1.0) * 255).astype(np.uint8), mode="L")
        yield f"faces/{i:03d}.png", grey.resize((size, size), Image.Resampling.BICUBIC).convert("RGB")


SETS: dict[str, Callable[..., Iterator[tuple[str, Image.Image]]]] = {
    "digits": digit_images, "photos": photo_tiles, "textures": texture_tiles, "faces": face_images}
TILED = ("photos", "textures")  # the sets that take a stride


def write_real_images(name: str, out: Path, size: int = 32, stride: int | None = None) -> int:
    """Write the set `name` (see `SETS`) into `out` as PNGs; files already there are kept. Returns how many.
    `stride`: the photos' tile spacing (default: the size)."""
    if name not in SETS:
        raise DataToolError(f"unknown set {name!r}; choose one of {sorted(SETS)}")
    n = 0
    if stride is not None and name not in TILED:
        raise DataToolError(f"--stride applies to the tiled sets {list(TILED)}, not {name!r}")
    for relative, image in (SETS[name](size) if stride is None else SETS[name](size, stride)):
        n += 1
        path = out / relative
        if not path.is_file():
            atomic_write(path, lambda tmp, image=image: image.save(tmp, format="PNG"))
    return n


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data_tools.real_images", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("set", choices=sorted(SETS), help="which set")
    parser.add_argument("out", type=Path, help="folder for the PNGs")
    parser.add_argument("--size", type=int, default=32, help="side length of the written images")
    parser.add_argument("--stride", type=int, default=None,
                        help="photos, textures: pixels between tiles (default: --size)")
    args = parser.parse_args(argv)

    def body() -> int:
        n = write_real_images(args.set, args.out, args.size, args.stride)
        print(f"{n} {args.set} images written to {args.out} at {args.size}x{args.size}; next: python -m "
              f"data_tools.shard {args.out} <shard folder> --resolution {args.size}")
        return 0

    return run_cli(body)


if __name__ == "__main__":
    raise SystemExit(main())
