"""How much a VAE's latent carries: per-unit statistics of q(z|x) over a data set, and the posterior-collapse verdict.

A latent *unit* is one scalar of z: one channel at one spatial position (a 4x16x16 latent has 1,024 units).

- Active units: unit u is active when the *decoder uses it*: replacing its posterior mean by the prior mean (0) in
  the decoder's input changes the reconstruction (the decoder mean) by at least as much as moving every value of the
  unit's own patch of pixels (C x H/h x W/w of them) by one 8-bit grey level would,
  U_u = E_x || x_hat(mu(x)) - x_hat(mu(x) with mu_u := 0) ||^2  >=  patch_dims * (2/255)^2.
  A unit whose posterior mean stays near 0, or which the decoder ignores, changes nothing and is inactive. This is
  measured exactly (one decoder pass per unit, no linearisation) on a fixed batch of images (the first `USE_IMAGES`
  seen) and, for large latents, on a fixed random sample of `USE_UNITS` units (the seeded choice is the same at
  every validation); `active_fraction` is the share of the checked units, `active_units` their count.
- Varying units (Burda et al., 2016, "Importance Weighted Autoencoders", section 5.2): the posterior mean moves with
  the input, Var_x( E_q(z|x)[z_u] ) > 0.01. Reported beside the active count, never in the verdict: a unit can vary
  a little while the decoder ignores it, so this count alone can read "1,024 of 1,024" on a collapsed latent.
- KL per unit (the unit's rate): E_x KL(q(z_u|x) || N(0, 1)) in nats, averaged over the data (reported per channel
  and overall).
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

from latent_ndm.common.running_sums import RunningSums
from vae.distributions import DiagonalGaussian

ACTIVE_VARIANCE = 0.01  # Burda et al.'s threshold on Var_x E_q[z_u] (the "varying" count)
PEAK_TO_PEAK = 2.0  # images live in [-1, 1]
GREY_LEVEL = PEAK_TO_PEAK / 255  # one 8-bit grey level in [-1, 1]
USE_IMAGES = 4  # the fixed batch on which the decoder's use of each unit is measured
USE_UNITS = 128  # at most this many units checked (a seeded sample of them when the latent has more)
USE_PIXELS_PER_CALL = 2**20  # the ablation decodes about this many image values per decoder call

# The collapse criterion. A latent counts as collapsed when the decoder uses fewer than MIN_ACTIVE_FRACTION of the
# checked units, or when its reconstructions explain less than MIN_EXPLAINED of the within-image variation (about
# 1 dB over the flat picture). Measured (docs/RESULTS.md, the VAE recipe study: 33 trained runs on textures, faces,
# digits and the embedded faces): every one of the 32 that encode explains 27-100% and its decoder uses 16-75% of
# the checked units; the one collapsed run (textures, the old 600-step warm-up) explains -230%. A decoder that
# paints flat patches explains 0% and uses no unit. The margins sit below the weakest encoding run on both counts.
MIN_ACTIVE_FRACTION = 0.05
MIN_EXPLAINED = 0.2

FIXES = ("more training steps (trainer.max_steps; the KL warm-up scales with them), a warm-up over a larger share of "
         "the run (stage.kl_warmup.anneal_portion), stage.on_collapse=extend, or free bits per latent unit "
         "(stage.free_bits)")


def psnr(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB for images in [-1, 1]: 10 log10(2^2 / MSE), shape (B,)."""
    mse = (x_hat.float() - x.float()).pow(2).flatten(1).mean(1).clamp_min(1e-12)
    return 10.0 * torch.log10(PEAK_TO_PEAK**2 / mse)


def flat_images(x: torch.Tensor) -> torch.Tensor:
    """Every image replaced by its own mean colour (per channel, over positions): (B, C, H, W)."""
    return x.float().mean(dim=(2, 3), keepdim=True).expand_as(x)


def checked_units(num_units: int, limit: int = USE_UNITS, seed: int = 0) -> torch.Tensor:
    """The flat indices of the units whose use is measured: all of them, or a seeded sample of `limit` (sorted)."""
    if num_units <= limit:
        return torch.arange(num_units)
    return torch.randperm(num_units, generator=torch.Generator().manual_seed(seed))[:limit].sort().values


@torch.no_grad()
def unit_use(decode: Callable[[torch.Tensor], torch.Tensor], mu: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
    """Per unit in `units` (flat indices into a latent of shape mu.shape[1:]): sum over the batch of
    || decode(mu) - decode(mu with that unit set to 0) ||^2, exactly (one decoder pass per unit and image).
    `decode` maps latents (N, C, h, w) to decoder means (N, C', H, W). Returns (len(units),) in float64."""
    base = decode(mu).double()
    b, flat = mu.shape[0], mu.flatten(1)
    per_call = max(1, USE_PIXELS_PER_CALL // max(1, base[0].numel() * b))  # units per decoder call
    out = []
    for part in units.to(mu.device).split(per_call):
        z = flat.unsqueeze(0).repeat(len(part), 1, 1)  # (k, B, units)
        z[torch.arange(len(part), device=mu.device), :, part] = 0.0  # the prior mean
        x_hat = decode(z.reshape(len(part) * b, *mu.shape[1:])).double().reshape(len(part), *base.shape)
        out.append((x_hat - base).pow(2).flatten(2).sum(2).sum(1))
    return torch.cat(out)


class LatentUsage(RunningSums):
    """Sums over a data set (one `update` per batch) of the per-unit statistics of the module docstring;
    `compute` reduces them (e.g. across ranks, with `reduce_sum`) into floats. The decoder's use of each unit is
    measured on the first `use_images` images given with a `decode` function."""

    def __init__(self, use_images: int = USE_IMAGES, use_units: int = USE_UNITS) -> None:
        super().__init__()
        self.latent_shape: tuple[int, ...] | None = None
        self.image_dims = 0
        self.use_images, self.use_units = use_images, use_units
        self._use_seen = 0

    @torch.no_grad()
    def update(self, q: DiagonalGaussian, x: torch.Tensor, x_hat: torch.Tensor,
               decode: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        """q: the posterior of the batch x (B, C, H, W) in [-1, 1]; x_hat: the decoder mean at the posterior mean;
        decode: latents -> decoder means, to measure which units the decoder uses (see `unit_use`)."""
        self.latent_shape = tuple(q.mean.shape[1:])
        self.image_dims = math.prod(x.shape[1:])
        if decode is not None and self._use_seen < self.use_images:
            mu = q.mean[: self.use_images - self._use_seen]
            units = checked_units(mu[0].numel(), self.use_units)
            self.add("use", unit_use(decode, mu, units), total=False)
            self.add("use_count", torch.tensor(float(len(mu)), device=x.device))
            self._use_seen += len(mu)
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
        """active_units (of units_checked; with use_threshold), active_fraction (when a `decode` was given),
        varying_units, varying_fraction, latent_units, kl_unit_nats (mean over units), kl_unit_max_nats,
        kl_channel_<c>_nats (per unit of channel c), psnr and psnr_flat (per-image means, dB), explained and
        psnr_gain (pooled, dB)."""
        if not self.sums:
            return {}
        s = self.reduced(reduce_sum)
        n = s["count"]
        variance = (s["mu_sq"] / n - (s["mu"] / n) ** 2).clamp_min(0)
        kl_unit = s["kl_unit"] / n
        varying = (variance > ACTIVE_VARIANCE).sum()
        out = {
            "varying_units": float(varying),
            "latent_units": float(variance.numel()),
            "varying_fraction": float(varying) / variance.numel(),
            "kl_unit_nats": float(kl_unit.mean()),
            "kl_unit_max_nats": float(kl_unit.max()),
            "psnr": float(s["psnr"] / n),
            "psnr_flat": float(s["psnr_flat"] / n),
        }
        sq_err, sq_err_flat = s["sq_err"].clamp_min(1e-12), s["sq_err_flat"].clamp_min(1e-12)
        out["explained"] = float(1.0 - sq_err / sq_err_flat)
        out["psnr_gain"] = float(10.0 * torch.log10(sq_err_flat / sq_err))
        out.update({f"kl_channel_{c}_nats": float(v) for c, v in enumerate(kl_unit.flatten(1).mean(1))})
        if "use" in s:
            threshold = self.image_dims / variance[0].numel() * GREY_LEVEL**2  # one grey level over the patch
            use = s["use"] / s["use_count"]
            active = int((use >= threshold).sum())
            out.update(active_units=float(active), units_checked=float(use.numel()),
                       active_fraction=active / use.numel(), use_threshold=threshold,
                       unit_use_median=float(use.median()))
        return out


@dataclass(frozen=True)
class Collapse:
    """Why a latent counts as collapsed (see `collapse_verdict`)."""

    reasons: tuple[str, ...]

    def headline(self, what: str = "the VAE") -> str:
        return f"{what} has a collapsed latent ({'; '.join(self.reasons)})"

    def sentence(self, what: str = "the VAE") -> str:
        return (f"{self.headline(what)}: its latents carry almost nothing about the image, so a latent prior has "
                f"nothing to learn; try {FIXES}")


def units_checked(metrics: dict[str, float]) -> str:
    """'N latent units' or 'N latent units checked' (of M), for sentences."""
    checked, total = metrics.get("units_checked", metrics["latent_units"]), metrics["latent_units"]
    return f"{total:.0f} latent units" if checked == total else f"{checked:.0f} latent units checked (of {total:.0f})"


def collapse_verdict(metrics: dict[str, float]) -> Collapse | None:
    """A `Collapse` when the metrics of `LatentUsage.compute` (plus an optional `kl_share`, the KL's part of the
    NELBO) show a latent that carries almost nothing, else None. Metrics without `explained` (an export written
    before the watch) give None; without `active_fraction` (a watch given no decoder) only `explained` counts."""
    if "explained" not in metrics:
        return None
    reasons = []
    fraction, explained = metrics.get("active_fraction", 1.0), metrics["explained"]
    if not math.isfinite(fraction) or fraction < MIN_ACTIVE_FRACTION:
        reasons.append(f"the decoder uses {metrics['active_units']:.0f} of {units_checked(metrics)} "
                       f"({100 * fraction:.1f}% < {100 * MIN_ACTIVE_FRACTION:.0f}%)")
    if not math.isfinite(explained) or explained < MIN_EXPLAINED:
        reasons.append(f"its reconstructions explain {max(0.0, 100 * explained):.0f}% of the variation within the "
                       f"images (under {100 * MIN_EXPLAINED:.0f}%: {metrics['psnr_gain']:+.1f} dB over painting each "
                       "image its mean colour)")
    if reasons and "kl_share" in metrics:
        reasons.append(f"the KL is {100 * metrics['kl_share']:.1f}% of the NELBO")
    return Collapse(tuple(reasons)) if reasons else None
