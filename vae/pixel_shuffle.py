"""A worked bring-your-own-VAE example (docs/BYO_VAE.md): a first stage made of a module another package ships,
wrapped in one file to meet `vae.protocol.LatentVAE`.

The wrapped modules are torch's `nn.PixelUnshuffle` / `nn.PixelShuffle` (space-to-depth and back): the latent of an
image is its pixels regrouped into `factor^2 x C` channels at `1/factor` the resolution, the posterior a Gaussian of
fixed width `noise_std` around it, and the decoder a discretised Gaussian on the data's `bits`-bit grid around the
regrouped-back latent, with a learned log-scale per image channel. The likelihood is proper, so the NELBO is a bound
in bits/dim; with a prior trained on these latents the model is a diffusion model on (regrouped) pixels. Nothing
here is trained by `stage=vae`: `python -m latent_ndm.export_vae` writes its export, `stage=ndm` trains a prior on it.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from vae.distributions import DiagonalGaussian
from vae.likelihoods import DiscretizedGaussian, quantize
from vae.protocol import store_latent_scale

TARGET = "vae.pixel_shuffle.PixelShuffleVAE"


class PixelShuffleVAE(nn.Module):
    """z ~ N(unshuffle(x), noise_std^2), p(x | z) = discretised N(shuffle(z), exp(log_scale)^2) at `bits` bits."""

    def __init__(self, factor: int = 2, image_channels: int = 3, bits: int = 8, noise_std: float = 0.05) -> None:
        super().__init__()
        if factor < 1 or image_channels < 1 or not 1 <= bits <= 8 or noise_std <= 0:
            raise ValueError(f"need factor >= 1, image_channels >= 1, 1 <= bits <= 8 and noise_std > 0, got "
                             f"{factor}, {image_channels}, {bits}, {noise_std}")
        self.factor, self.image_channels, self.bits, self.noise_std = int(factor), int(image_channels), int(bits), \
            float(noise_std)
        self.unshuffle, self.shuffle = nn.PixelUnshuffle(self.factor), nn.PixelShuffle(self.factor)
        self.log_scale = nn.Parameter(torch.full((self.image_channels,), math.log(self.noise_std)))
        self.register_buffer("latent_scale", torch.tensor(1.0))

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        return quantize(x, self.bits)

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        if x.ndim != 4 or x.shape[1] != self.image_channels:
            raise ValueError(f"x must have shape (B, {self.image_channels}, H, W), got {tuple(x.shape)}")
        mean = self.unshuffle(x)
        return DiagonalGaussian(mean, torch.full_like(mean, 2 * math.log(self.noise_std)))

    def decode(self, z: torch.Tensor) -> DiscretizedGaussian:
        mean = self.shuffle(z)
        log_scale = self.log_scale.view(1, -1, 1, 1).expand_as(mean)
        return DiscretizedGaussian(mean, log_scale, bits=self.bits)

    def latent_shape(self, resolution: int) -> tuple[int, int, int]:
        if resolution % self.factor:
            raise ValueError(f"resolution {resolution} is not divisible by the factor {self.factor}")
        return (self.image_channels * self.factor**2, resolution // self.factor, resolution // self.factor)

    def set_latent_scale(self, value: float | torch.Tensor) -> None:
        store_latent_scale(self.latent_scale, value)

    def config(self) -> dict[str, Any]:
        return {"_target_": TARGET, "factor": self.factor, "image_channels": self.image_channels, "bits": self.bits,
                "noise_std": self.noise_std}
