"""Conversions between nats and bits per dimension (bits/dim = nats / (D ln 2), D the modelled dimensions)."""

from __future__ import annotations

import math

import torch


def nats_to_bpd(nll_nats: torch.Tensor | float, num_dims: int) -> torch.Tensor | float:
    """bits/dim = nats / (D ln 2), with D the number of modelled dimensions (3*256*256 for CelebA-HQ-256)."""
    if num_dims <= 0:
        raise ValueError(f"num_dims must be positive, got {num_dims}")
    return nll_nats / (num_dims * math.log(2.0))


def bpd_to_nats(bpd: torch.Tensor | float, num_dims: int) -> torch.Tensor | float:
    """nats = bits/dim * D ln 2."""
    if num_dims <= 0:
        raise ValueError(f"num_dims must be positive, got {num_dims}")
    return bpd * num_dims * math.log(2.0)


def bits_per_dim(nats: torch.Tensor, image_shape: tuple[int, ...]) -> torch.Tensor:
    """bits/dim = nats / (D ln 2) with D = C * H * W pixels, image_shape = (C, H, W)."""
    return nats_to_bpd(nats, math.prod(image_shape))
