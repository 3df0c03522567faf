"""The NDM stage's training loss and validation metrics (torch only; no Lightning here), on a `LatentModel` whose
prior is an `NDMPrior` (its objective is the training or the validation bound).

With D = C H W image dimensions and s the VAE's latent scale (docs/MATH.md section 7), per image in nats:
    NELBO(x) = rec + neg_entropy + cross_entropy,   rec = -log p(x|z),  neg_entropy = log q(z|x),
    cross_entropy = NDM-NELBO(z / s) + D_z log s,   z ~ q(z|x) (one sample).
Training loss, in nats per image dimension:
    disjoint: E[cross_entropy] / D, z drawn from the frozen encoder (or from pre-encoded (mean, logvar) latents);
              the VAE terms are constants and are not computed.
    joint:    E[NELBO(x)] / D, gradients into the VAE, the denoiser and F_phi (all on the likelihood weighting).
A prior whose objective is not a bound (`is_bound` False: the straight mode, ndm/objective=straight; docs/MATH.md
section 12) has as loss its objective's total at u = z / s per latent dimension, E[flow + w curvature] / D_u (disjoint
only), and its validation reports that result's terms (`StraightValidationMetrics`), not a NELBO.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from latent_ndm.common.running_sums import RunningSums
from latent_ndm.diffusion.objectives import ObjectiveResult
from latent_ndm.model.latent import Batch, LatentModel
from vae import nats_to_bpd

MODES = ("disjoint", "joint")


@dataclass
class NDMStepLoss:
    """`loss`: the minimised scalar (nats per image dimension); `terms`: batch means in nats per image, by name
    (rec, neg_entropy, cross_entropy, diff, prior, ndm_rec; rec only in joint mode); `num_dims` = D.
    Straight mode (`bound` False): `loss` and `terms` (flow, curvature) are per latent dimension, not in nats."""

    loss: torch.Tensor
    terms: dict[str, torch.Tensor]
    num_dims: int
    bound: bool = True

    def bpd(self, name: str) -> torch.Tensor:
        return nats_to_bpd(self.terms[name], self.num_dims)

    def logged(self) -> dict[str, torch.Tensor]:
        """What training logs: the loss and each term, named by unit (`*_bpd` for a bound's, else `*_per_dim`)."""
        if not self.bound:
            return {"loss_per_dim": self.loss, **{f"{k}_per_dim": v for k, v in self.terms.items()}}
        return {"loss_bpd": self.loss / math.log(2.0), **{f"{k}_bpd": self.bpd(k) for k in self.terms}}


def _ndm_terms(parts: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {"diff": parts["ndm_diff"], "prior": parts["ndm_prior"], "ndm_rec": parts["ndm_rec"]}


class NDMTrainingLoss:
    """`loss(model, batch, generator) -> NDMStepLoss` for a `LatentModel` in `mode` (disjoint | joint).

    `num_dims` = D of the images (for pre-encoded latents there are no images to count)."""

    def __init__(self, mode: str, num_dims: int) -> None:
        if mode not in MODES:
            raise ValueError(f"ndm.mode must be one of {MODES}, got {mode!r}")
        self.mode, self.num_dims = mode, int(num_dims)

    def __call__(self, model: LatentModel, batch: Batch, generator: torch.Generator | None = None) -> NDMStepLoss:
        if not getattr(model.prior, "is_bound", True):
            return self.regression(model, batch, generator)
        if self.mode == "joint":
            if isinstance(batch, Mapping):
                raise ValueError("ndm.mode=joint trains the encoder and needs images, not pre-encoded latents")
            out = model.nelbo(batch, generator)
            terms = {"rec": out.rec, "neg_entropy": out.neg_entropy, "cross_entropy": out.cross_entropy}
            total, parts = out.total, out.parts
        else:
            with torch.no_grad():  # the VAE is frozen
                q = model.posterior(batch)
            ce = model.cross_entropy(q, q.sample(generator), generator)
            terms = {"neg_entropy": -q.entropy(), "cross_entropy": ce.nll}
            total, parts = ce.nll, ce.parts
        terms.update(_ndm_terms(parts))
        means = {k: v.mean() for k, v in terms.items()}
        return NDMStepLoss(loss=total.mean() / self.num_dims, terms=means, num_dims=self.num_dims)

    def regression(self, model: LatentModel, batch: Batch, generator: torch.Generator | None = None) -> NDMStepLoss:
        """An objective that is not a bound (the straight-trajectory regression) of u = z / s, z ~ q(z|x) of the frozen
        VAE, per latent dimension; its terms by the result's names."""
        if self.mode != "disjoint":
            raise ValueError("ndm/objective=straight is not a bound, so it cannot train the VAE: use ndm.mode=disjoint")
        out, dims = regression_terms(model, batch, generator)
        terms = {name: value.mean() / dims for name, value in out.terms.items()}
        return NDMStepLoss(loss=out.total.mean() / dims, terms=terms, num_dims=self.num_dims, bound=False)


def regression_terms(model: LatentModel, batch: Batch, generator: torch.Generator | None = None
                     ) -> tuple[ObjectiveResult, int]:
    """(the prior's per-example objective terms at u = z / s with z ~ q(z|x) of the frozen VAE, D_u)."""
    with torch.no_grad():
        q = model.posterior(batch)
        u = model.normalise(q.sample(generator))
    return model.prior.objective_terms(u, generator), u[0].numel()


class NDMValidationMetrics(RunningSums):
    """Sums over a validation pass of the (EMA) `LatentModel`; `compute` reduces them into bits/dim floats.

    From images: nelbo_bpd = rec_bpd + neg_entropy_bpd + cross_entropy_bpd (the latent NELBO), kl_bpd =
    neg_entropy_bpd + cross_entropy_bpd (KL(q || p_NDM)), vae_nelbo_bpd = rec_bpd + KL(q || N(0, I)) (the same VAE
    with its stage-1 prior), ndm_{rec,diff,prior}_bpd (the NDM's own terms, normalised latents), all over the D image
    dimensions. From pre-encoded latents (`update_latents`) there is no rec: everything else, and vae_kl_bpd =
    KL(q || N(0, I)) instead of the NELBOs.
    """

    NAMES = ("rec", "neg_entropy", "cross_entropy", "vae_kl", "ndm_rec", "ndm_diff", "ndm_prior")

    def __init__(self) -> None:
        super().__init__()
        self.num_dims = 0

    def _record(self, values: dict[str, torch.Tensor], batch_size: int, num_dims: int, device: torch.device) -> None:
        self.num_dims = int(num_dims)
        self.add("count", torch.tensor(float(batch_size), device=device))
        for name, value in values.items():
            self.add(name, value)

    def update(self, model: LatentModel, x: torch.Tensor, generator: torch.Generator | None = None) -> None:
        out = model.nelbo(x, generator)
        values = {"rec": out.rec, "neg_entropy": out.neg_entropy, "cross_entropy": out.cross_entropy,
                  "vae_kl": out.q.kl(), **out.parts}
        self._record(values, x.shape[0], out.num_dims, x.device)

    def update_latents(self, model: LatentModel, batch: Mapping[str, torch.Tensor], num_dims: int,
                       generator: torch.Generator | None = None) -> None:
        """Pre-encoded q(z|x) = N(mean, exp(logvar)) of images with `num_dims` dimensions: every term but rec."""
        q = model.posterior(batch)
        ce = model.cross_entropy(q, q.sample(generator), generator)
        values = {"neg_entropy": -q.entropy(), "cross_entropy": ce.nll, "vae_kl": q.kl(), **ce.parts}
        self._record(values, q.mean.shape[0], num_dims, q.mean.device)

    def compute(self, reduce_sum: Callable[[torch.Tensor], torch.Tensor] = lambda t: t) -> dict[str, float]:
        """Floats by name; `reduce_sum` sums a tensor across processes (identity on one process)."""
        if not self.sums:
            return {}
        s = self.reduced(reduce_sum)
        m = {k: s[k] / s["count"] for k in self.NAMES if k in s}

        def bpd(nats: torch.Tensor) -> float:
            return float(nats_to_bpd(nats, self.num_dims))

        kl = bpd(m["neg_entropy"] + m["cross_entropy"])
        if "rec" in m:
            out = {"nelbo_bpd": bpd(m["rec"] + m["neg_entropy"] + m["cross_entropy"]),
                   "vae_nelbo_bpd": bpd(m["rec"] + m["vae_kl"]), "kl_bpd": kl}
        else:
            out = {"kl_bpd": kl, "vae_kl_bpd": bpd(m["vae_kl"])}
        out.update({f"{k}_bpd": bpd(v) for k, v in m.items() if k != "vae_kl"})
        out["count"] = float(s["count"])
        return out


class StraightValidationMetrics(RunningSums):
    """Sums over a validation pass of a prior whose objective is not a bound (the straight mode); `compute` gives its
    total under `main` (`<result name>`, e.g. straight_loss) and its terms (flow, curvature) per latent dimension (the
    regression minimised in training; lower is better, but it is not a likelihood)."""

    def __init__(self, main: str = "straight_loss") -> None:
        super().__init__()
        self.main = main

    def _record(self, out: ObjectiveResult, dims: int) -> None:
        values = {"count": torch.tensor(float(out.total.shape[0]), device=out.total.device),
                  self.main: out.total / dims, **{name: value / dims for name, value in out.terms.items()}}
        for name, value in values.items():
            self.add(name, value)

    def update(self, model: LatentModel, x: torch.Tensor, generator: torch.Generator | None = None) -> None:
        self._record(*regression_terms(model, x, generator))

    def update_latents(self, model: LatentModel, batch: Mapping[str, torch.Tensor], num_dims: int,
                       generator: torch.Generator | None = None) -> None:
        self._record(*regression_terms(model, batch, generator))

    def compute(self, reduce_sum: Callable[[torch.Tensor], torch.Tensor] = lambda t: t) -> dict[str, float]:
        if not self.sums:
            return {}
        s = self.reduced(reduce_sum)
        return {**{k: float(s[k] / s["count"]) for k in s if k != "count"}, "count": float(s["count"])}


def pixel_dims(image_channels: int, resolution: int) -> int:
    """D = C H W of square images."""
    return math.prod((image_channels, resolution, resolution))
