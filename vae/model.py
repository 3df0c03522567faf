"""The VAE of the first stage: q(z|x) (encoder), p(x|z) (decoder likelihood), p(z) = N(0, I).

Public interface used by the NDM stage: `quantize(x)` (the data the likelihood models), `encode(x) ->
DiagonalGaussian`, `decode(z) -> likelihood`, `latent_shape(resolution)`, the `latent_scale` buffer (std of encoder
samples; the NDM models z / latent_scale), and `config()` / `from_config()` (plain-dict constructor primitives).
A pure torch module: files are written and read by the application (`latent_ndm.runs.export`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from vae.distributions import DiagonalGaussian
from vae.likelihoods import LIKELIHOODS, quantize
from vae.networks import Decoder, Encoder
from vae.protocol import store_latent_scale
from vae.units import nats_to_bpd

LikelihoodFactory = Callable[..., Any]  # (params (B, P, H, W), bits=...) -> object with log_prob/sample/mean


@dataclass
class NELBO:
    """Per-example terms in nats, each (B,): rec = -log p(x|z), z ~ q(z|x); kl = KL(q(z|x) || N(0, I));
    total = rec + beta_kl * kl (the NELBO itself when beta_kl = 1). `num_dims` = C * H * W."""

    rec: torch.Tensor
    kl: torch.Tensor
    total: torch.Tensor
    num_dims: int

    @property
    def bpd(self) -> torch.Tensor:
        """total in bits per dimension."""
        return nats_to_bpd(self.total, self.num_dims)


class VAE(nn.Module):
    """Encoder + decoder + discretised likelihood at `bits` bits.

    Args:
        encoder: x (B, C, H, W) -> (mean, logvar); exposes `latent_channels` and `downsample_factor`.
        decoder: z -> likelihood params (B, P, H, W).
        likelihood: a name in `LIKELIHOODS` ("dml", "gaussian") or a factory `(params, bits=...) -> likelihood`
            (a factory cannot be exported with `config()`).
        bits: bit depth of the modelled data (5 for CelebA-HQ-256).
        likelihood_kwargs: extra arguments of the named likelihood, e.g. {"num_mix": 10}.
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        likelihood: str | LikelihoodFactory = "dml",
        bits: int = 8,
        likelihood_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.encoder, self.decoder, self.bits = encoder, decoder, bits
        self.image_channels: int = getattr(encoder, "config", {}).get("in_channels", 3)
        self.likelihood_kwargs = dict(likelihood_kwargs or {})
        if isinstance(likelihood, str):
            if likelihood not in LIKELIHOODS:
                raise ValueError(f"unknown likelihood {likelihood!r}; choose one of {sorted(LIKELIHOODS)}")
            cls = LIKELIHOODS[likelihood]
            kwargs = {"channels": self.image_channels, **self.likelihood_kwargs}
            expected = cls.num_params(**kwargs)
            if getattr(decoder, "out_channels", expected) != expected:
                raise ValueError(
                    f"decoder.out_channels is {decoder.out_channels} but likelihood {likelihood!r} with "
                    f"{kwargs} needs {expected}"
                )
            self._factory: LikelihoodFactory = functools.partial(cls.from_params, **kwargs)
            self.likelihood_name: str | None = likelihood
        else:
            self._factory, self.likelihood_name = likelihood, None
        self.register_buffer("latent_scale", torch.tensor(1.0))

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """The data p(x|z) models: x in [-1, 1] snapped to the VAE's bit depth (`likelihoods.quantize`; a no-op for
        data already on that grid, and for bits > 8). Every caller that encodes images for a likelihood uses it."""
        return quantize(x, self.bits) if self.bits <= 8 else x

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        """q(z|x) for images x in [-1, 1], shape (B, C, H, W)."""
        if x.ndim != 4 or x.shape[1] != self.image_channels:
            raise ValueError(f"x must have shape (B, {self.image_channels}, H, W), got {tuple(x.shape)}")
        mean, logvar = self.encoder(x)
        return DiagonalGaussian(mean, logvar)

    def decode(self, z: torch.Tensor) -> Any:
        """p(x|z): a likelihood object with log_prob(x) -> (B,), sample(), mean(), mode()."""
        return self._factory(self.decoder(z), bits=self.bits)

    def latent_shape(self, resolution: int) -> tuple[int, int, int]:
        """(C_z, H_z, W_z) of the latents of a square image of side `resolution`."""
        factor = self.encoder.downsample_factor
        if resolution % factor != 0:
            raise ValueError(f"resolution {resolution} is not divisible by the downsampling factor {factor}")
        return (self.encoder.latent_channels, resolution // factor, resolution // factor)

    def set_latent_scale(self, value: float | torch.Tensor) -> None:
        """Store the std of encoder samples (a positive finite scalar); saved with the weights."""
        store_latent_scale(self.latent_scale, value)

    def nelbo(self, x: torch.Tensor, beta_kl: float = 1.0, generator: torch.Generator | None = None) -> NELBO:
        """-ELBO with p(z) = N(0, I) and one reparameterised sample; x is snapped to the b-bit grid first
        (`quantize`, a no-op for data already on it)."""
        x = self.quantize(x)
        q = self.encode(x)
        rec = -self.decode(q.sample(generator)).log_prob(x)
        kl = q.kl()
        return NELBO(rec=rec, kl=kl, total=rec + beta_kl * kl, num_dims=math.prod(x.shape[1:]))

    def config(self) -> dict[str, Any]:
        """Plain-dict constructor primitives, inverse of `from_config`."""
        enc, dec = getattr(self.encoder, "config", None), getattr(self.decoder, "config", None)
        if self.likelihood_name is None or enc is None or dec is None:
            raise ValueError("config() needs a named likelihood and vae.networks Encoder/Decoder")
        return {
            "encoder": dict(enc),
            "decoder": dict(dec),
            "likelihood": self.likelihood_name,
            "likelihood_kwargs": dict(self.likelihood_kwargs),
            "bits": self.bits,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> VAE:
        """Build an (untrained) VAE from `config()`'s dict."""
        missing = {"encoder", "decoder", "likelihood", "bits"} - set(config)
        if missing:
            raise ValueError(f"VAE config lacks the keys {sorted(missing)}")

        def tuples(d: dict[str, Any]) -> dict[str, Any]:
            return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}

        return cls(
            Encoder(**tuples(config["encoder"])),
            Decoder(**tuples(config["decoder"])),
            likelihood=config["likelihood"],
            bits=int(config["bits"]),
            likelihood_kwargs=config.get("likelihood_kwargs") or {},
        )
