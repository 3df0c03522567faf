"""Images a run writes: [-1, 1] image batches as a grid, and PNG files written atomically."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torchvision.utils import make_grid, save_image

from data_tools.files import atomic_write


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] images -> [0, 1] floats on the CPU (clamped)."""
    return images.float().cpu().add(1).div(2).clamp(0, 1)


def image_grid(images: torch.Tensor, row: int | None = None) -> torch.Tensor:
    """A (3, H', W') grid in [0, 1] of images in [-1, 1], `row` per row (default: about square)."""
    row = row or max(1, math.isqrt(images.shape[0] - 1) + 1)
    return make_grid(to_unit(images), nrow=row, padding=2, pad_value=1.0)


def save_png(image: torch.Tensor, path: Path) -> Path:
    """A [0, 1] image or grid (C, H, W) as a PNG, written atomically."""
    return atomic_write(path, lambda tmp: save_image(image, tmp, format="png"))
