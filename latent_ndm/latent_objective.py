"""The LSGM-style negative ELBO of a VAE whose prior is an NDM (MATH.md section 7).

NELBO(x) = E_q[-log p(x|z)] + E_q[log q(z|x)] + CE(q(z|x) || p_NDM(z)),
with the cross-entropy bounded by the NDM objective on one encoder sample z ~ q(z|x). The NDM models the
normalised latent z / s (s = the VAE's stored latent scale), so -log p(z) = -log p_NDM(z / s) + D_z log s.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from latent_ndm.objectives.terms import NDMLoss
from latent_ndm.transforms import Transform

NDMObjective = Callable[..., NDMLoss]


@dataclass(frozen=True)
class LatentNELBO:
    """Per-example terms in nats, each (B,). total = rec + neg_entropy + cross_entropy; `ndm` holds the NDM's own
    terms (in normalised-latent units); num_dims is the number of pixels C*H*W for bits/dim."""

    rec: torch.Tensor
    neg_entropy: torch.Tensor
    cross_entropy: torch.Tensor
    total: torch.Tensor
    ndm: NDMLoss
    num_dims: int


def latent_nelbo(vae: nn.Module, objective: NDMObjective, denoiser: nn.Module, transform: Transform,
                 x: torch.Tensor, generator: torch.Generator | None = None) -> LatentNELBO:
    """One-sample estimate of the NELBO of images x in [-1, 1] (B, C, H, W), snapped to the VAE's bit depth.

    Gradients flow to every part: freeze the VAE (requires_grad_(False), eval()) for the disjoint stage.
    """
    from vae.likelihoods import quantize  # the VAE package is the first stage; keep the math layer importable alone

    x = quantize(x, vae.bits) if vae.bits <= 8 else x
    q = vae.encode(x)
    z = q.sample(generator)
    rec = -vae.decode(z).log_prob(x)
    neg_entropy = -q.entropy()
    scale = vae.latent_scale.to(z.dtype)
    ndm = objective(denoiser, transform, z / scale, generator=generator)
    cross_entropy = ndm.total + z[0].numel() * torch.log(scale)
    return LatentNELBO(rec=rec, neg_entropy=neg_entropy, cross_entropy=cross_entropy,
                       total=rec + neg_entropy + cross_entropy, ndm=ndm, num_dims=math.prod(x.shape[1:]))
