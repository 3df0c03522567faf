"""Convolution blocks that both the VAE's decoder (`vae.networks`) and the denoiser's U-Net (`latent_ndm.networks`)
build from: one definition, so that neither network reaches into the other's module."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Upsample(nn.Module):
    """x2 nearest-neighbour upsampling followed by a 3x3 convolution (the counterpart of a stride-2 `Downsample`)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
