"""The VAE stage's training loss and validation metrics (torch only; no Lightning here).

Training loss, in nats per dimension (D = C H W), with p(z) = N(0, I) (docs/MATH.md section 7):
    loss = E_x[ -log p(x|z) ] / D  +  beta KL_train / D  +  w_lpips * E_x[ LPIPS(mean p(x|z), x) ],
z ~ q(z|x), one reparameterised sample. beta < 1 only during KL warm-up. KL_train = E_x KL(q(z|x) || N(0, I)), or
with free bits lambda > 0 (Kingma et al. 2016, "Improved variational inference with inverse autoregressive flow",
eq. 15, here per latent unit u): KL_train = sum_u max(lambda, E_batch KL(q(z_u|x) || N(0, 1))), so that no unit is
pushed below lambda nats. The reported NELBO is always the beta = 1 bound without free bits or the perceptual term:
NELBO = rec + kl, in bits/dim = nats / (D ln 2). With KL balancing (while beta < 1 only) the channels' KLs are
weighted as in `balanced_kl`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from latent_ndm.common.running_sums import RunningSums
from vae import VAE, nats_to_bpd
from vae.diagnostics import USE_IMAGES, USE_UNITS, LatentUsage


@dataclass
class VAELoss:
    """Batch means: `rec` = -log p(x|z) and `kl` = KL(q || N(0, I)) in nats per image; `lpips` (or None);
    `loss` = the minimised scalar (nats per dim + weighted LPIPS); `num_dims` = D."""

    loss: torch.Tensor
    rec: torch.Tensor
    kl: torch.Tensor
    lpips: torch.Tensor | None
    num_dims: int

    def bpd(self, nats: torch.Tensor) -> torch.Tensor:
        return nats_to_bpd(nats, self.num_dims)

    def terms(self) -> dict[str, torch.Tensor]:
        """Detached terms by name, for logging and the non-finite guard."""
        out = {"rec": self.rec, "kl": self.kl, "loss": self.loss}
        if self.lpips is not None:
            out["lpips"] = self.lpips
        return {k: v.detach() for k, v in out.items()}


def vae_loss(
    vae: VAE,
    x: torch.Tensor,
    beta_kl: float = 1.0,
    lpips: nn.Module | None = None,
    lpips_weight: float = 0.0,
    generator: torch.Generator | None = None,
    free_bits: float = 0.0,
    kl_balance: bool = False,
) -> VAELoss:
    """The training loss of the module docstring for a batch x (B, C, H, W) in [-1, 1]; `free_bits` = lambda in
    nats per latent unit (0: the plain KL); `kl_balance`: while beta < 1, `balanced_kl` across channels."""
    if free_bits < 0:
        raise ValueError(f"free_bits must be >= 0 nats, got {free_bits}")
    x = vae.quantize(x)
    q = vae.encode(x)
    p_x = vae.decode(q.sample(generator))
    rec, kl = -p_x.log_prob(x), q.kl()
    num_dims = math.prod(x.shape[1:])
    if free_bits > 0 or (kl_balance and beta_kl < 1):
        kl_units = q.kl_elements().mean(0).clamp_min(free_bits)  # E_batch KL per unit, at least lambda
        kl_channels = kl_units.flatten(1).sum(1)
        kl_train = balanced_kl(kl_channels) if kl_balance and beta_kl < 1 else kl_channels.sum()
        loss = (rec.mean() + beta_kl * kl_train) / num_dims
    else:
        loss = (rec + beta_kl * kl).mean() / num_dims
    perceptual = None
    if lpips is not None and lpips_weight > 0:
        perceptual = lpips(p_x.mean(), x).mean()
        loss = loss + lpips_weight * perceptual
    return VAELoss(loss=loss, rec=rec.mean(), kl=kl.mean(), lpips=perceptual, num_dims=num_dims)


def balanced_kl(kl_channels: torch.Tensor, floor: float = 0.01) -> torch.Tensor:
    """KL balancing across latent channels during warm-up (the idea of NVAE, Vahdat & Kautz 2020, section 3.2 and
    appendix A, here with channels as the groups): sum_c w_c KL_c with w_c = C (KL_c + floor) / sum_c' (KL_c' +
    floor), held constant (no gradient). A channel that carries much KL is pushed harder, one that carries little is
    left more room, so that the warm-up does not settle on a few channels; the weights average to 1."""
    weights = kl_channels.detach() + floor
    weights = weights * (len(weights) / weights.sum())
    return (weights * kl_channels).sum()


class ValidationMetrics(RunningSums):
    """Sums over a validation pass of the EMA VAE; `compute` reduces them (e.g. across ranks) into floats.

    Metrics: nelbo_bpd = rec_bpd + kl_bpd (beta = 1, no free bits, one z sample per image), kl_share (the KL's part
    of the NELBO), lpips (when a model is given), latent_scale (std of encoder samples z ~ q(z|x) over all
    elements), and the collapse watch of `vae.diagnostics.LatentUsage`: active units (those the decoder uses,
    measured on the first `use_images` images of the pass, the same fixed batch at every validation, over at most
    `use_units` units), varying units, KL per latent unit and per channel, PSNR of the decoder mean at the posterior
    mean and the share of the within-image variation it explains (against painting each image its mean colour).
    """

    def __init__(self, use_images: int = USE_IMAGES, use_units: int = USE_UNITS) -> None:
        super().__init__()
        self.usage = LatentUsage(use_images, use_units)
        self.num_dims = 0

    @torch.no_grad()
    def update(self, vae: VAE, x: torch.Tensor, lpips: nn.Module | None = None,
               generator: torch.Generator | None = None) -> None:
        x = vae.quantize(x)
        q = vae.encode(x)
        z = q.sample(generator)
        rec = -vae.decode(z).log_prob(x)
        x_hat = vae.decode(q.mode()).mean()
        self.usage.update(q, x, x_hat, decode=lambda z: vae.decode(z).mean())
        self.num_dims = math.prod(x.shape[1:])
        self.add("count", torch.tensor(float(x.shape[0]), device=x.device))
        self.add("rec", rec)
        self.add("kl", q.kl())
        if lpips is not None:
            self.add("lpips", lpips(x_hat, x))
        self.add("z_count", torch.tensor(float(z.numel()), device=x.device))
        self.add("z_sum", z)
        self.add("z_sq", z.pow(2))

    def compute(self, reduce_sum: Callable[[torch.Tensor], torch.Tensor] = lambda t: t) -> dict[str, float]:
        """Floats by name; `reduce_sum` sums a tensor across processes (identity on one process)."""
        if not self.sums:
            return {}
        s = self.reduced(reduce_sum)
        n = s["count"]
        rec, kl = s["rec"] / n, s["kl"] / n
        mean_z = s["z_sum"] / s["z_count"]
        out = {
            "nelbo_bpd": nats_to_bpd(rec + kl, self.num_dims),
            "rec_bpd": nats_to_bpd(rec, self.num_dims),
            "kl_bpd": nats_to_bpd(kl, self.num_dims),
            "kl_share": kl / (rec + kl),
            "latent_scale": (s["z_sq"] / s["z_count"] - mean_z**2).clamp_min(0).sqrt(),
        }
        if "lpips" in s:
            out["lpips"] = s["lpips"] / n
        return {**{k: float(v) for k, v in out.items()}, **self.usage.compute(reduce_sum)}
