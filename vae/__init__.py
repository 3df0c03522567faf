"""First stage of latent NDM: a VAE mapping images in [-1, 1] to spatial latents (pure torch modules).

Nothing happens at import beyond defining classes.
"""

from vae.distributions import DiagonalGaussian
from vae.likelihoods import (
    LIKELIHOODS,
    BinGrid,
    DiscretizedGaussian,
    DiscretizedMixtureOfLogistics,
    quantize,
)
from vae.model import NELBO, VAE
from vae.networks import Decoder, Encoder
from vae.units import bits_per_dim, bpd_to_nats, nats_to_bpd

__all__ = [
    "LIKELIHOODS",
    "NELBO",
    "VAE",
    "BinGrid",
    "Decoder",
    "DiagonalGaussian",
    "DiscretizedGaussian",
    "DiscretizedMixtureOfLogistics",
    "Encoder",
    "bits_per_dim",
    "bpd_to_nats",
    "nats_to_bpd",
    "quantize",
]
