"""`LatentModel`: the one owner of the latent side of latent NDM (LSGM's NELBO; docs/MATH.md section 7).

    NELBO(x) = E_q[-log p(x|z)]  +  E_q[log q(z|x)]  +  CE(q(z|x) || p(z)),
with x snapped to the VAE's bit depth, q(z|x) the encoder and the cross-entropy bounded by the prior on one encoder
sample z ~ q(z|x). An NDM prior models the normalised latent u = z / s (s = the VAE's stored latent scale), so
-log p(z) = -log p_NDM(z / s) + D_z log s; the N(0, I) prior of the VAE stage models z itself (s = 1).

Training (disjoint and joint), validation, evaluation, latent encoding and the benchmark all go through this class:
`quantize -> posterior -> normalise -> cross_entropy (+ D log s) -> nelbo`. Pure torch: no files, no configs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from latent_ndm.diffusion.samplers import Sampler
from latent_ndm.model.priors import NDMPrior, Prior, PriorBound, StandardNormalPrior
from vae import VAE, DiagonalGaussian

Batch = torch.Tensor | Mapping[str, Any]  # images (B, C, H, W) in [-1, 1], or pre-encoded {"mean", "logvar"}


@dataclass(frozen=True)
class LatentNELBO:
    """Per-image terms in nats, each (B,): total = rec + neg_entropy + cross_entropy; `parts` are the prior's own
    terms (the NDM's ndm_rec, ndm_diff, ndm_prior, in normalised-latent units); `q` the encoder posterior the terms
    were drawn from; `num_dims` the number of pixels C*H*W (for bits/dim)."""

    rec: torch.Tensor
    neg_entropy: torch.Tensor
    cross_entropy: torch.Tensor
    total: torch.Tensor
    q: DiagonalGaussian
    num_dims: int
    parts: dict[str, torch.Tensor] = field(default_factory=dict)


class LatentModel(nn.Module):
    """A VAE (q(z|x), p(x|z), the stored latent scale s) and a prior over its latents.

    Args:
        vae: the first stage.
        prior: `NDMPrior` (over u = z / s) or `StandardNormalPrior` (over z; the default).
    """

    def __init__(self, vae: VAE, prior: Prior | None = None) -> None:
        super().__init__()
        self.vae = vae
        self.prior = prior if prior is not None else StandardNormalPrior()

    @property
    def latent_shape(self) -> tuple[int, int, int] | None:
        return self.prior.latent_shape

    def with_prior(self, prior: Prior) -> LatentModel:
        """The same VAE (shared) with another prior, e.g. `prior.with_objective(...)` for a validation bound."""
        return LatentModel(self.vae, prior)

    # -- the encoder side ------------------------------------------------------------------------------
    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """The data p(x|z) models: images on the VAE's bit grid."""
        return self.vae.quantize(x)

    def posterior(self, batch: Batch) -> DiagonalGaussian:
        """q(z|x) of images (quantised, then encoded; gradients flow unless the caller disables them) or of stored
        {"mean", "logvar"} (pre-encoded latents)."""
        if isinstance(batch, Mapping):
            return DiagonalGaussian(batch["mean"], batch["logvar"])
        return self.vae.encode(self.quantize(batch))

    def reconstruction(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """-log p(x|z) per image (x already quantised), nats."""
        return -self.vae.decode(z).log_prob(x)

    # -- the change of variables z -> u = z / s -------------------------------------------------------------
    def scale(self, dtype: torch.dtype) -> torch.Tensor | None:
        """s in `dtype`, or None when the prior models z itself."""
        return self.vae.latent_scale.to(dtype) if self.prior.normalised else None

    def normalise(self, z: torch.Tensor) -> torch.Tensor:
        """u = z / s."""
        s = self.scale(z.dtype)
        return z if s is None else z / s

    def denormalise(self, u: torch.Tensor) -> torch.Tensor:
        """z = s u."""
        s = self.scale(u.dtype)
        return u if s is None else u * s

    def _in_z(self, bound: PriorBound, z: torch.Tensor) -> PriorBound:
        """-log p(z) = -log p(u) + D_z log s."""
        s = self.scale(z.dtype)
        return bound if s is None else PriorBound(bound.nll + z[0].numel() * torch.log(s), bound.parts)

    # -- the prior terms, in z -------------------------------------------------------------------------------
    def cross_entropy(self, q: DiagonalGaussian, z: torch.Tensor,
                      generator: torch.Generator | None = None) -> PriorBound:
        """The NELBO's cross-entropy E_q[-log p(z)] estimated at one sample z ~ q (the N(0, I) prior: exactly)."""
        return self._in_z(self.prior.cross_entropy(q, self.normalise(z), generator), z)

    def prior_nll(self, z: torch.Tensor, generator: torch.Generator | None = None) -> PriorBound:
        """An estimate of -log p(z) at z whose expectation upper-bounds it (the NDM's NELBO of z / s + D log s)."""
        return self._in_z(self.prior.nll_bound(self.normalise(z), generator), z)

    def ode_nll(self, z: torch.Tensor, generator: torch.Generator | None = None, **solver: Any
                ) -> tuple[PriorBound, int]:
        """(-log p(z) from the prior's probability-flow ODE, NFE); `solver` as in `ode_nll_bound`."""
        bound, nfe = self.prior.ode_nll(self.normalise(z), generator, **solver)
        return self._in_z(bound, z), nfe

    def sample(self, z_1: torch.Tensor, sampler: Sampler, generator: torch.Generator | None = None
               ) -> tuple[torch.Tensor, int]:
        """(latents z = s u with u drawn by the prior from z_1 ~ N(0, I), NFE)."""
        u, nfe = self.prior.sample(z_1, sampler, generator)
        return self.denormalise(u), nfe

    def decode_mean(self, z: torch.Tensor) -> torch.Tensor:
        """Images: the mean of p(x|z), in [-1, 1]."""
        return self.vae.decode(z).mean()

    # -- the whole bound ---------------------------------------------------------------------------------------
    def nelbo(self, x: torch.Tensor, generator: torch.Generator | None = None) -> LatentNELBO:
        """One-sample estimate of the NELBO of images x in [-1, 1] (B, C, H, W), snapped to the VAE's bit depth.

        Random draws, in this order: z ~ q(z|x), then the prior's noise. Gradients flow to every part: freeze the
        VAE (requires_grad_(False), eval()) for the disjoint stage; wrap in torch.no_grad() to evaluate."""
        x = self.quantize(x)
        q = self.vae.encode(x)
        z = q.sample(generator)
        rec = self.reconstruction(z, x)
        neg_entropy = -q.entropy()
        ce = self.cross_entropy(q, z, generator)
        return LatentNELBO(rec=rec, neg_entropy=neg_entropy, cross_entropy=ce.nll,
                           total=rec + neg_entropy + ce.nll, q=q, num_dims=math.prod(x.shape[1:]), parts=ce.parts)


def ndm_parameters(model: LatentModel) -> dict[str, list[nn.Parameter]]:
    """Trainable parameters of an NDM prior by part: denoiser (mixing logits included) and transform (the forward
    process: F_phi's, and the NFDM noise scale's)."""
    prior = model.prior
    if not isinstance(prior, NDMPrior):
        raise ValueError(f"the model's prior is {type(prior).__name__}, not an NDMPrior")
    return {"denoiser": list(prior.denoiser.parameters()), "transform": list(prior.process.parameters())}
