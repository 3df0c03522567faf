"""How much a VAE's latent carries: per-unit statistics of q(z|x) over a data set, and the posterior-collapse verdict.

A latent *unit* is one scalar of z: one channel at one spatial position (a 4x16x16 latent has 1,024 units).

- Active units (Burda et al., 2016, "Importance Weighted Autoencoders", section 5.2): unit u is active when the
  posterior mean moves with the input, A_u = Var_x( E_q(z|x)[z_u] ) > 0.01. The prior is N(0, 1), so 0.01 is a
  hundredth of the prior's variance. A channel-level count (KL of a channel summed over all its positions) cannot
  see collapse: 0.1 nats spread over 256 positions is far below what one informative unit carries.
- KL per unit: E_x KL(q(z_u|x) || N(0, 1)) in nats, averaged over the data (reported per channel and overall).
- The decoder's reconstruction against a *flat* one. With x_hat the decoder mean at the posterior mean and x_bar
  each image replaced by its own mean colour (what a decoder that learned nothing from z but the colour would give;
  a collapsed VAE reconstructs such flat patches), the share of the within-image variation the latent explains,
  pooled over all pixels of the set: explained = 1 - sum (x_hat - x)^2 / sum (x_bar - x)^2, and the same in dB,
  psnr_gain = 10 log10(sum (x_bar - x)^2 / sum (x_hat - x)^2). Pooled, textured images weigh by their variation:
  an average of per-image PSNR gains would let near-uniform images (sky, where the flat picture is already almost
  exact) hide a decoder that paints every textured image flat. The per-image mean PSNRs are reported beside it.

`collapse_verdict` turns these into one plain sentence when the latent carries almost nothing (criterion below).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from vae.distributions import DiagonalGaussian
from vae.running_sums import RunningSums

ACTIVE_VARIANCE = 0.01  # Burda et al.'s threshold on Var_x E_q[z_u]
PEAK_TO_PEAK = 2.0  # images live in [-1, 1]

# The collapse criterion. A latent counts as collapsed when fewer than MIN_ACTIVE_FRACTION of its units are active,
# or when its reconstructions explain less than MIN_EXPLAINED of the within-image variation (about 1 dB over the
# flat picture). Measured (README, "Stage 1", 18 trained runs on faces, photo tiles and digits): every trained run
# explains 34-100% and has 25-100% of its units active; a decoder that paints flat patches explains 0%, and the
# 2-step VAE of the tests less than nothing. The margins sit below the weakest trained run on both counts.
MIN_ACTIVE_FRACTION = 0.05
MIN_EXPLAINED = 0.2

FIXES = ("a longer KL warm-up (stage.kl_warmup.warmup_steps, hold_steps), free bits per latent unit "
         "(stage.free_bits), or more training steps")


def psnr(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB for images in [-1, 1]: 10 log10(2^2 / MSE), shape (B,)."""
    mse = (x_hat.float() - x.float()).pow(2).flatten(1).mean(1).clamp_min(1e-12)
    return 10.0 * torch.log10(PEAK_TO_PEAK**2 / mse)


def flat_images(x: torch.Tensor) -> torch.Tensor:
    """Every image replaced by its own mean colour (per channel, over positions): (B, C, H, W)."""
    return x.float().mean(dim=(2, 3), keepdim=True).expand_as(x)


class LatentUsage(RunningSums):
    """Sums over a data set (one `update` per batch) of the per-unit statistics of the module docstring;
    `compute` reduces them (e.g. across ranks, with `reduce_sum`) into floats."""

    def __init__(self) -> None:
        super().__init__()
        self.latent_shape: tuple[int, ...] | None = None

    @torch.no_grad()
    def update(self, q: DiagonalGaussian, x: torch.Tensor, x_hat: torch.Tensor) -> None:
        """q: the posterior of the batch x (B, C, H, W) in [-1, 1]; x_hat: the decoder mean at the posterior mean."""
        self.latent_shape = tuple(q.mean.shape[1:])
        self.add("count", torch.tensor(float(x.shape[0]), device=x.device))
        self.add("mu", q.mean.sum(0), total=False)
        self.add("mu_sq", q.mean.pow(2).sum(0), total=False)
        self.add("kl_unit", q.kl_elements().sum(0), total=False)
        flat = flat_images(x)
        self.add("psnr", psnr(x_hat, x))
        self.add("psnr_flat", psnr(flat, x))
        self.add("sq_err", (x_hat.float() - x.float()).pow(2))
        self.add("sq_err_flat", (flat - x.float()).pow(2))

    def compute(self, reduce_sum: Callable[[torch.Tensor], torch.Tensor] = lambda t: t) -> dict[str, float]:
        """active_units, latent_units, active_fraction, kl_unit_nats (mean over units), kl_unit_max_nats,
        kl_channel_<c>_nats (per unit of channel c), psnr and psnr_flat (per-image means, dB), explained and
        psnr_gain (pooled, dB)."""
        if not self.sums:
            return {}
        s = self.reduced(reduce_sum)
        n = s["count"]
        variance = (s["mu_sq"] / n - (s["mu"] / n) ** 2).clamp_min(0)
        kl_unit = s["kl_unit"] / n
        active = (variance > ACTIVE_VARIANCE).sum()
        out = {
            "active_units": float(active),
            "latent_units": float(variance.numel()),
            "active_fraction": float(active) / variance.numel(),
            "kl_unit_nats": float(kl_unit.mean()),
            "kl_unit_max_nats": float(kl_unit.max()),
            "psnr": float(s["psnr"] / n),
            "psnr_flat": float(s["psnr_flat"] / n),
        }
        sq_err, sq_err_flat = s["sq_err"].clamp_min(1e-12), s["sq_err_flat"].clamp_min(1e-12)
        out["explained"] = float(1.0 - sq_err / sq_err_flat)
        out["psnr_gain"] = float(10.0 * torch.log10(sq_err_flat / sq_err))
        out.update({f"kl_channel_{c}_nats": float(v) for c, v in enumerate(kl_unit.flatten(1).mean(1))})
        return out


@dataclass(frozen=True)
class Collapse:
    """Why a latent counts as collapsed (see `collapse_verdict`)."""

    reasons: tuple[str, ...]

    def sentence(self, what: str = "the VAE") -> str:
        return (f"{what} has a collapsed latent ({'; '.join(self.reasons)}): its latents carry almost nothing about "
                f"the image, so a latent prior has nothing to learn; try {FIXES}")


def collapse_verdict(metrics: dict[str, float]) -> Collapse | None:
    """A `Collapse` when the metrics of `LatentUsage.compute` (plus an optional `kl_share`, the KL's part of the
    NELBO) show a latent that carries almost nothing, else None. Metrics without the per-unit keys (an export
    written before they existed) give None."""
    if "active_fraction" not in metrics or "explained" not in metrics:
        return None
    reasons = []
    fraction, explained = metrics["active_fraction"], metrics["explained"]
    if not math.isfinite(fraction) or fraction < MIN_ACTIVE_FRACTION:
        reasons.append(f"{metrics['active_units']:.0f} of {metrics['latent_units']:.0f} latent units active "
                       f"({100 * fraction:.1f}% < {100 * MIN_ACTIVE_FRACTION:.0f}%)")
    if not math.isfinite(explained) or explained < MIN_EXPLAINED:
        reasons.append(f"its reconstructions explain {max(0.0, 100 * explained):.0f}% of the variation within the "
                       f"images (under {100 * MIN_EXPLAINED:.0f}%: {metrics['psnr_gain']:+.1f} dB over painting each "
                       "image its mean colour)")
    if reasons and "kl_share" in metrics:
        reasons.append(f"the KL is {100 * metrics['kl_share']:.1f}% of the NELBO")
    return Collapse(tuple(reasons)) if reasons else None
