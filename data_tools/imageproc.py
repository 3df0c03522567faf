"""Per-image processing: decode, convert to RGB, centre-crop, resize, encode as PNG.

A file that cannot be used raises `UnusableImage` with a short reason; the sharder records the
reason in the manifest (or stops, under ``--strict``).
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

PNG_COMPRESS_LEVEL = 6


class UnusableImage(Exception):
    """An input file that is skipped; the message is the reason recorded in the manifest."""


def decode_image(data: bytes) -> Image.Image:
    """Fully decode image bytes (so truncation is caught here) and apply EXIF orientation."""
    if len(data) == 0:
        raise UnusableImage("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            img.load()
            return ImageOps.exif_transpose(img)
    except UnidentifiedImageError as err:
        raise UnusableImage("not a decodable image (unknown format)") from err
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as err:
        raise UnusableImage(f"image too large to decode safely ({err})") from err
    except Exception as err:  # noqa: BLE001 - any decoder failure means "corrupt input", never a crash
        raise UnusableImage(f"corrupt or truncated image ({type(err).__name__}: {err})") from err


def open_image(data: bytes, max_pixels: int | None = None) -> Image.Image:
    """The image in `data`, opened but not decoded (its size is known, its pixels are not in memory yet).

    `UnusableImage` when the bytes are not an image, or when it declares more pixels than `max_pixels` (None: PIL's
    decompression-bomb limit, about 89 million), checked before a pixel is decoded: a few kilobytes of PNG can
    declare gigabytes of pixels.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as err:
        raise UnusableImage("is not a decodable image (unknown format)") from err
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as err:
        raise UnusableImage(f"declares an image too large to decode safely ({err})") from err
    except Exception as err:  # noqa: BLE001 - any decoder failure means "corrupt input", never a crash
        raise UnusableImage(f"is a corrupt image ({type(err).__name__}: {err})") from err
    width, height = img.size
    if max_pixels is not None and width * height > max_pixels:
        raise UnusableImage(f"declares a {width}x{height} image, more than the {max_pixels} pixels allowed here")
    return img


def rgb_pixels(img: Image.Image) -> np.ndarray:
    """The decoded pixels of an opened image as uint8 (H, W, 3) RGB; `UnusableImage` when decoding fails."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return np.array(img if img.mode == "RGB" else img.convert("RGB"))
    except Exception as err:  # noqa: BLE001 - a truncated or corrupt image, whatever the decoder says
        raise UnusableImage(f"does not decode ({type(err).__name__}: {err})") from err


def _high_bit_depth_to_8bit(img: Image.Image) -> Image.Image:
    """Map 16-bit / 32-bit integer and float grayscale to 8-bit grayscale."""
    arr = np.asarray(img)
    if img.mode == "F":
        arr8 = np.clip(arr, 0, 255).astype(np.uint8)
    elif arr.max(initial=0) > 255:
        arr8 = (arr.astype(np.int64) >> 8).clip(0, 255).astype(np.uint8)
    else:
        arr8 = arr.astype(np.uint8)
    return Image.fromarray(arr8, mode="L")


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB; transparent pixels are composited onto white."""
    if img.mode == "RGB":
        return img
    if img.mode.startswith("I") or img.mode == "F":
        img = _high_bit_depth_to_8bit(img)
    has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    if has_alpha:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def center_crop_resize(img: Image.Image, resolution: int) -> Image.Image:
    """Crop the central square and resize it to `resolution` with Lanczos; exact when no resize is needed."""
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    box = (left, top, left + side, top + side)
    square = img if (w, h) == (side, side) else img.crop(box)  # crop first: no bleeding from cut-off borders
    if side == resolution:
        return square
    return square.resize((resolution, resolution), Image.Resampling.LANCZOS)


def encode_png(img: Image.Image) -> bytes:
    """Lossless, deterministic PNG bytes."""
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buf.getvalue()


def prepare_image(img: Image.Image, resolution: int, min_size: int) -> bytes:
    """RGB, square, `resolution` x `resolution` PNG bytes; `UnusableImage` if the image is too small."""
    w, h = img.size
    if min(w, h) < min_size:
        raise UnusableImage(f"too small ({w}x{h}; the shorter side must be >= {min_size} px)")
    return encode_png(center_crop_resize(to_rgb(img), resolution))
