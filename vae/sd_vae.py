"""A pretrained `diffusers.AutoencoderKL` (the SD-VAE family) as a frozen first stage (`vae.protocol.LatentVAE`).

The posterior is the autoencoder's diagonal Gaussian (its mean and log-variance); the decoder's mean is given a
proper likelihood on the data's `bits`-bit grid, a discretised Gaussian around it with one scale per image channel
(`log_scale`, a buffer fitted on training images by `fit_likelihood`, then frozen), so that the NELBO is a bound on
-log p(x) (docs/MATH.md section 14). Nothing is trained: every parameter has requires_grad False.

The autoencoder runs in float32, or in bfloat16 under autocast with float32 outputs; float16 is refused (the SD-VAE
overflows in it). diffusers is an optional extra (`pip install latent-ndm[sdvae]`), imported only when an adapter is
built, so `import vae` stays light. Nothing is downloaded here: `python -m latent_ndm.export_vae pretrained=<folder>`
reads a local diffusers folder (docs/BYO_VAE.md).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from vae.distributions import DiagonalGaussian
from vae.likelihoods import DiscretizedGaussian, quantize
from vae.protocol import store_latent_scale

TARGET = "vae.sd_vae.AutoencoderKLVAE"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
SCALE_TOLERANCE = 0.2  # the measured and configured latent scales differ "too much" beyond this relative gap
INSTALL = "pip install 'latent-ndm[sdvae]' (or pip install diffusers)"


def plain(value: Any) -> Any:
    """A config value as plain Python data: mappings as dicts, sequences (not text) as lists."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [plain(v) for v in value]
    return value


def autoencoder_kl(config: Mapping[str, Any]) -> nn.Module:
    """A randomly initialised `diffusers.AutoencoderKL` built from its config (the keys of its config.json; keys
    starting with "_" are diffusers' bookkeeping and are dropped). Raises ImportError without diffusers."""
    try:
        from diffusers import AutoencoderKL
    except ImportError as err:
        raise ImportError(f"the SD-VAE adapter needs diffusers, which is not installed: {INSTALL}") from err
    return AutoencoderKL.from_config({k: v for k, v in plain(config).items() if not k.startswith("_")})


class AutoencoderKLVAE(nn.Module):
    """q(z | x) = the autoencoder's N(mean, exp(logvar)); p(x | z) = discretised N(decoder(z), exp(log_scale)^2) per
    channel at `bits` bits. `autoencoder` is the AutoencoderKL's config (plain data, as in its config.json)."""

    def __init__(self, autoencoder: Mapping[str, Any], bits: int = 8, dtype: str = "float32") -> None:
        super().__init__()
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)} (float16 overflows in the SD-VAE's decoder), "
                             f"got {dtype!r}")
        if not isinstance(bits, int) or not 1 <= bits <= 8:
            raise ValueError(f"bits must be an int in 1..8, got {bits!r}")
        self.bits, self.dtype_name = bits, dtype
        self.autoencoder = autoencoder_kl(autoencoder).requires_grad_(False).eval()
        cfg = self.autoencoder.config
        self.autoencoder_config = {k: v for k, v in plain(dict(cfg)).items() if not k.startswith("_")}
        self.image_channels, self.latent_channels = int(cfg.in_channels), int(cfg.latent_channels)
        self.downsampling = 2 ** (len(cfg.block_out_channels) - 1)
        self.scaling_factor = float(cfg.scaling_factor)
        self.register_buffer("log_scale", torch.zeros(self.image_channels))
        self.register_buffer("latent_scale", torch.tensor(1.0))

    def train(self, mode: bool = True) -> AutoencoderKLVAE:
        """The autoencoder stays in eval mode: it is frozen."""
        super().train(mode)
        self.autoencoder.eval()
        return self

    def _autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        if self.dtype_name == "float32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=DTYPES[self.dtype_name])

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        return quantize(x, self.bits)

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        if x.ndim != 4 or x.shape[1] != self.image_channels:
            raise ValueError(f"x must have shape (B, {self.image_channels}, H, W), got {tuple(x.shape)}")
        with self._autocast(x.device):
            posterior = self.autoencoder.encode(x.float()).latent_dist
        return DiagonalGaussian(posterior.mean.float(), posterior.logvar.float())

    def decoder_mean(self, z: torch.Tensor) -> torch.Tensor:
        """The autoencoder's reconstruction from latents z, float32 (not clamped to [-1, 1])."""
        with self._autocast(z.device):
            return self.autoencoder.decode(z.float()).sample.float()

    def decode(self, z: torch.Tensor) -> DiscretizedGaussian:
        mean = self.decoder_mean(z)
        return DiscretizedGaussian(mean, self.log_scale.view(1, -1, 1, 1).expand_as(mean), bits=self.bits)

    @torch.no_grad()
    def fit_likelihood(self, images: Iterable[torch.Tensor], generator: torch.Generator | None = None) -> torch.Tensor:
        """Fit and store the per-channel log-scale: s_c^2 = mean over images and pixels of (x_c - decoder(z)_c)^2,
        z ~ q(z | x) (the Gaussian's maximum-likelihood scale at the latents the NELBO uses). Returns log s."""
        squares, count = torch.zeros(self.image_channels, dtype=torch.float64), 0
        for x in images:
            x = self.quantize(x.to(self.log_scale.device))
            error = x - self.decoder_mean(self.encode(x).sample(generator))
            squares += error.double().pow(2).sum(dim=(0, 2, 3)).cpu()
            count += x.shape[0] * x.shape[2] * x.shape[3]
        if not count:
            raise ValueError("fitting the likelihood's scale needs at least one training image; check data=")
        self.log_scale.copy_((0.5 * torch.log((squares / count).clamp_min(1e-12))).float())
        return self.log_scale.clone()

    def latent_shape(self, resolution: int) -> tuple[int, int, int]:
        if resolution % self.downsampling:
            raise ValueError(f"resolution {resolution} is not divisible by the autoencoder's downsampling "
                             f"{self.downsampling}")
        side = resolution // self.downsampling
        return (self.latent_channels, side, side)

    def set_latent_scale(self, value: float | torch.Tensor) -> None:
        store_latent_scale(self.latent_scale, value)

    def config(self) -> dict[str, Any]:
        return {"_target_": TARGET, "autoencoder": self.autoencoder_config, "bits": self.bits,
                "dtype": self.dtype_name}


def scale_check(measured_std: float, configured_factor: float) -> tuple[str, bool]:
    """The line that sets the measured latent scale (1 / std of encoder samples, as LDM) beside the autoencoder's
    configured `scaling_factor`, and whether they differ by more than `SCALE_TOLERANCE` (relative to the configured)."""
    measured = 1.0 / measured_std
    gap = abs(measured - configured_factor) / configured_factor if configured_factor > 0 else math.inf
    line = (f"latent scale: measured 1/std = {measured:.5f}, configured scaling_factor = {configured_factor:.5f} "
            f"({100 * gap:.0f}% apart); the NDM divides by the measured std")
    return line, gap > SCALE_TOLERANCE
