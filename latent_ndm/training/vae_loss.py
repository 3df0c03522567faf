"""The VAE stage's training loss and validation metrics (torch only; no Lightning here).

Training loss, in nats per dimension (D = C H W), with p(z) = N(0, I) (docs/MATH.md section 7):
    loss = E_x[ -log p(x|z) + beta KL(q(z|x) || N(0, I)) ] / D  +  w_lpips * E_x[ LPIPS(mean p(x|z), x) ],
z ~ q(z|x), one reparameterised sample. beta < 1 only during KL warm-up. The reported NELBO is always the
beta = 1 bound without the perceptual term: NELBO = rec + kl, in bits/dim = nats / (D ln 2).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from vae import VAE, DiagonalGaussian, nats_to_bpd

PEAK_TO_PEAK = 2.0  # images live in [-1, 1]


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
) -> VAELoss:
    """The training loss of the module docstring for a batch x (B, C, H, W) in [-1, 1]."""
    x = vae.quantize(x)
    q = vae.encode(x)
    p_x = vae.decode(q.sample(generator))
    rec, kl = -p_x.log_prob(x), q.kl()
    num_dims = math.prod(x.shape[1:])
    loss = (rec + beta_kl * kl).mean() / num_dims
    perceptual = None
    if lpips is not None and lpips_weight > 0:
        perceptual = lpips(p_x.mean(), x).mean()
        loss = loss + lpips_weight * perceptual
    return VAELoss(loss=loss, rec=rec.mean(), kl=kl.mean(), lpips=perceptual, num_dims=num_dims)


def kl_per_channel(q: DiagonalGaussian) -> torch.Tensor:
    """KL(q || N(0, I)) of each latent channel, summed over positions: (B, C, H, W) -> (B, C), nats."""
    return (0.5 * (q.mean**2 + q.var - 1.0 - q.logvar)).sum(dim=(2, 3))


def psnr(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB for images in [-1, 1]: 10 log10(2^2 / MSE), shape (B,)."""
    mse = (x_hat.float() - x.float()).pow(2).flatten(1).mean(1).clamp_min(1e-12)
    return 10.0 * torch.log10(PEAK_TO_PEAK**2 / mse)


class ValidationMetrics:
    """Sums over a validation pass of the EMA VAE; `compute` reduces them (e.g. across ranks) into floats.

    Metrics: nelbo_bpd = rec_bpd + kl_bpd (beta = 1, one z sample per image), psnr (dB, reconstruction =
    decoder mean at the posterior mean), lpips (when a model is given), kl_channel_<c> (nats per image, summed over
    positions), active_channels (channels with KL above `active_threshold` nats: the posterior-collapse watch,
    LSGM's 0.1), latent_scale (std of encoder samples z ~ q(z|x) over all elements).
    """

    def __init__(self, active_threshold: float = 0.1) -> None:
        self.active_threshold = active_threshold
        self.sums: dict[str, torch.Tensor] = {}
        self.num_dims = 0

    def _add(self, name: str, value: torch.Tensor) -> None:
        value = value.detach().double()
        self.sums[name] = self.sums[name] + value if name in self.sums else value

    @torch.no_grad()
    def update(self, vae: VAE, x: torch.Tensor, lpips: nn.Module | None = None,
               generator: torch.Generator | None = None) -> None:
        x = vae.quantize(x)
        q = vae.encode(x)
        z = q.sample(generator)
        rec = -vae.decode(z).log_prob(x)
        x_hat = vae.decode(q.mode()).mean()
        kl_c = kl_per_channel(q)
        self.num_dims = math.prod(x.shape[1:])
        self._add("count", torch.tensor(float(x.shape[0]), device=x.device))
        self._add("rec", rec.sum())
        self._add("kl", kl_c.sum())
        self._add("kl_channel", kl_c.sum(0))
        self._add("psnr", psnr(x_hat, x).sum())
        if lpips is not None:
            self._add("lpips", lpips(x_hat, x).sum())
        self._add("z_count", torch.tensor(float(z.numel()), device=x.device))
        self._add("z_sum", z.sum())
        self._add("z_sq", z.pow(2).sum())

    def compute(self, reduce_sum: Callable[[torch.Tensor], torch.Tensor] = lambda t: t) -> dict[str, float]:
        """Floats by name; `reduce_sum` sums a tensor across processes (identity on one process)."""
        if not self.sums:
            return {}
        s = {k: reduce_sum(v) for k, v in sorted(self.sums.items())}
        n = s["count"]
        rec, kl = s["rec"] / n, s["kl"] / n
        mean_z = s["z_sum"] / s["z_count"]
        out = {
            "nelbo_bpd": nats_to_bpd(rec + kl, self.num_dims),
            "rec_bpd": nats_to_bpd(rec, self.num_dims),
            "kl_bpd": nats_to_bpd(kl, self.num_dims),
            "psnr": s["psnr"] / n,
            "active_channels": (s["kl_channel"] / n > self.active_threshold).sum(),
            "latent_scale": (s["z_sq"] / s["z_count"] - mean_z**2).clamp_min(0).sqrt(),
        }
        if "lpips" in s:
            out["lpips"] = s["lpips"] / n
        out.update({f"kl_channel_{c}": v for c, v in enumerate(s["kl_channel"] / n)})
        return {k: float(v) for k, v in out.items()}
