"""The contract of a first stage: what the latent model, `stage=ndm`, `sample` and `evaluate` use of a VAE.

Any `torch.nn.Module` with these members can be the VAE of a latent NDM ("bring your own VAE"): `vae.VAE` is one,
`vae.pixel_shuffle.PixelShuffleVAE` (a wrapped module of another package, in one file) another. Its export (written by
`python -m latent_ndm.export_vae`) holds its weights and `config()`, whose `_target_` names the class; loading builds
it only when that class is on the allow-list (`latent_ndm.runs.targets`) or named by the user in
`LATENT_NDM_TRUSTED_TARGETS`.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch

from vae.distributions import DiagonalGaussian


class ImageLikelihood(Protocol):
    """p(x | z) over images on the VAE's `bits`-bit grid in [-1, 1]."""

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x | z) in nats per image, shape (B,): a proper (normalised) discrete likelihood, so that the NELBO
        in bits/dim is a bound."""

    def mean(self) -> torch.Tensor:
        """The image the decoder means, in [-1, 1] (what `sample` writes)."""


@torch.no_grad()
def store_latent_scale(buffer: torch.Tensor, value: float | torch.Tensor) -> None:
    """Write the std of encoder samples into a VAE's `latent_scale` buffer: a positive finite scalar, else ValueError.
    The one rule every `LatentVAE.set_latent_scale` follows."""
    value = torch.as_tensor(value, dtype=torch.float32)
    if value.numel() != 1 or not torch.isfinite(value) or value <= 0:
        raise ValueError(f"latent_scale must be a positive finite scalar, got {value}")
    buffer.fill_(value.item())


@runtime_checkable
class LatentVAE(Protocol):
    """The members a latent NDM uses. `latent_scale` is a registered buffer (saved with the weights): the std of
    encoder samples, which the NDM divides the latents by; `bits` the bit depth of the data the likelihood models."""

    bits: int
    image_channels: int
    latent_scale: torch.Tensor

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] snapped to the `bits`-bit grid the likelihood models."""

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        """q(z | x) for images (B, image_channels, H, W) in [-1, 1]."""

    def decode(self, z: torch.Tensor) -> ImageLikelihood:
        """p(x | z)."""

    def latent_shape(self, resolution: int) -> tuple[int, int, int]:
        """(C, H, W) of the latents of a square image of side `resolution`."""

    def set_latent_scale(self, value: float | torch.Tensor) -> None:
        """Store the std of encoder samples in the `latent_scale` buffer."""

    def config(self) -> dict[str, Any]:
        """Plain constructor arguments; an external class adds its `_target_` (its import path)."""


# the members of the contract in the order `LatentVAE` declares them: its attributes, then its methods
MEMBERS = tuple(dict.fromkeys([*LatentVAE.__annotations__,
                               *(name for name, value in vars(LatentVAE).items()
                                 if callable(value) and not name.startswith("_"))]))


def missing_members(obj: object) -> list[str]:
    """The members of `LatentVAE` that `obj` lacks (empty for a VAE that meets the contract)."""
    return [name for name in MEMBERS if not hasattr(obj, name)]
