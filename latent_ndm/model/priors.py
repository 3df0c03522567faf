"""Priors over VAE latents: the VAE stage's N(0, I) and the NDM (docs/MATH.md sections 6-7).

Each gives, per example in nats: an upper-bound estimate of -log p(u) (`nll_bound`), the cross-entropy term of the
NELBO (`cross_entropy`), the probability-flow ODE's bound (`ode_nll`), and samples. A prior sees the variable it
models, u: the NDM models normalised latents u = z / s (`normalised = True`), N(0, I) the latents themselves;
`latent_ndm.model.latent.LatentModel` maps z to u and adds the D log s of the change of variables.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from latent_ndm.diffusion.likelihood import ode_nll_bound, standard_normal_logp
from latent_ndm.diffusion.noise import NoiseScale
from latent_ndm.diffusion.objectives.straight import StraightLoss
from latent_ndm.diffusion.reverse_process import ReverseProcess
from latent_ndm.diffusion.samplers import Sampler
from latent_ndm.diffusion.schedule import VPSchedule
from latent_ndm.diffusion.transforms import Transform
from vae import DiagonalGaussian


def process_kind(transform_kind: str, learned_noise: bool, is_bound: bool) -> str:
    """The model family: "lsgm" (F = identity, fixed noise), "ndm" (a learned F_phi), "nfdm" (a learned noise scale),
    each with "-straight" when trained on the straight-trajectory regression (not a bound)."""
    kind = "nfdm" if learned_noise else ("lsgm" if transform_kind == "identity" else "ndm")
    return kind if is_bound else f"{kind}-straight"


@dataclass
class PriorBound:
    """-log p(z) estimate per example (B,) in nats, and named parts of it (each (B,))."""

    nll: torch.Tensor
    parts: dict[str, torch.Tensor] = field(default_factory=dict)


class Prior(nn.Module):
    """p(u) over latents of `latent_shape` (C, H, W); `normalised`: u = z / s (else u = z)."""

    latent_shape: tuple[int, int, int] | None = None
    normalised: bool = False

    def nll_bound(self, u: torch.Tensor, generator: torch.Generator | None = None) -> PriorBound:
        """An estimate (at this u) whose expectation upper-bounds -log p(u)."""
        raise NotImplementedError

    def cross_entropy(self, q: DiagonalGaussian, u: torch.Tensor,
                      generator: torch.Generator | None = None) -> PriorBound:
        """An estimate of the NELBO's cross-entropy E_q[-log p(u)] from one sample u ~ q."""
        return self.nll_bound(u, generator)

    def ode_nll(self, u: torch.Tensor, generator: torch.Generator | None = None, **solver: Any
                ) -> tuple[PriorBound, int]:
        """(-log p(u) from the probability-flow ODE, the solver's NFE)."""
        raise NotImplementedError

    def sample(self, z_1: torch.Tensor, sampler: Sampler, generator: torch.Generator | None = None
               ) -> tuple[torch.Tensor, int]:
        """(latents u drawn from z_1 ~ N(0, I), NFE)."""
        raise NotImplementedError

    def check_sampler(self, sampler: Sampler) -> None:
        """Raise a one-sentence ValueError when this prior cannot be sampled with `sampler`."""


class StandardNormalPrior(Prior):
    """The VAE stage's p(z) = N(0, I): every quantity is exact; the cross-entropy is taken in closed form over q,
    so that log q + cross-entropy is the VAE stage's analytic KL."""

    def nll_bound(self, u: torch.Tensor, generator: torch.Generator | None = None) -> PriorBound:
        return PriorBound(-standard_normal_logp(u))

    def cross_entropy(self, q: DiagonalGaussian, u: torch.Tensor,
                      generator: torch.Generator | None = None) -> PriorBound:
        terms = math.log(2 * math.pi) + q.mean.pow(2) + q.logvar.exp()
        return PriorBound(0.5 * terms.flatten(1).sum(1))

    def ode_nll(self, u: torch.Tensor, generator: torch.Generator | None = None, **solver: Any
                ) -> tuple[PriorBound, int]:
        return self.nll_bound(u), 0

    def sample(self, z_1: torch.Tensor, sampler: Sampler, generator: torch.Generator | None = None
               ) -> tuple[torch.Tensor, int]:
        return z_1, 0


class NDMPrior(Prior):
    """The latent NDM over normalised latents: denoiser x_hat_theta, transform F_phi, schedule, optionally the learned
    noise scale L_phi of the Gaussian NFDM forward process (`noise`), and `objective`: the NELBO estimator that
    bounds -log p(u) (`ContinuousNDMObjective` / `DiscreteNDMObjective`), or the straight-trajectory regression
    (`StraightFlowObjective`, not a bound: such a prior has no `nll_bound` and no `ode_nll`, and is judged by its
    samples). `t_eps` is the training t_eps (where sampling stops), `eval_t_eps` the one of the objective's bound.

    Gradients flow through `nll_bound` (training calls it); evaluation wraps it in `torch.no_grad()` (not
    inference mode: the jvp of F needs forward-mode AD)."""

    normalised = True

    def __init__(self, denoiser: nn.Module, transform: Transform, schedule: VPSchedule, objective: Any,
                 latent_shape: tuple[int, int, int], t_eps: float, eval_t_eps: float | None = None,
                 noise: NoiseScale | None = None) -> None:
        super().__init__()
        self.denoiser, self.transform, self.schedule, self.objective = denoiser, transform, schedule, objective
        self.noise = noise
        self.latent_shape = tuple(int(n) for n in latent_shape)
        self.t_eps = float(t_eps)
        self.eval_t_eps = float(t_eps if eval_t_eps is None else eval_t_eps)

    @property
    def process(self) -> ReverseProcess:
        """The reverse process p_theta of this prior's networks (built on use, so it adds no state)."""
        return ReverseProcess(self.denoiser, self.transform, self.schedule, self.noise)

    @property
    def is_bound(self) -> bool:
        """Whether the prior was trained on (and reports) a likelihood bound; False for the straight mode."""
        return bool(self.objective.is_bound)

    @property
    def kind(self) -> str:
        """lsgm | ndm | nfdm, with -straight: from the objects (F's kind, the noise scale, the objective)."""
        return process_kind(self.transform.kind, self.noise is not None, self.is_bound)

    def with_objective(self, objective: Any, eval_t_eps: float | None = None) -> NDMPrior:
        """The same networks (shared, not copied) with another objective, e.g. `prior.objective.at(1e-5)`."""
        return NDMPrior(self.denoiser, self.transform, self.schedule, objective, self.latent_shape, self.t_eps,
                        self.eval_t_eps if eval_t_eps is None else eval_t_eps, self.noise)

    def _require_bound(self, what: str) -> None:
        if not self.is_bound:
            raise ValueError(f"this prior was trained on the straight-trajectory regression, which is not a likelihood "
                             f"bound, so it has no {what}: judge it by its samples (sampler=euler steps=K; FID or "
                             "the energy distance)")

    def nll_bound(self, u: torch.Tensor, generator: torch.Generator | None = None) -> PriorBound:
        self._require_bound("NELBO")
        extra = {} if self.noise is None else {"noise": self.noise}
        ndm = self.objective(self.denoiser, self.transform, u, generator=generator, **extra)
        return PriorBound(ndm.total, {"ndm_rec": ndm.rec, "ndm_diff": ndm.diff, "ndm_prior": ndm.prior})

    def straight_loss(self, u: torch.Tensor, generator: torch.Generator | None = None) -> StraightLoss:
        """The straight-trajectory regression of u (per example: flow, curvature, total); straight mode only."""
        if self.is_bound:
            raise ValueError("straight_loss needs a prior trained with ndm/objective=straight")
        return self.objective(self.process, u, generator=generator)

    def check_sampler(self, sampler: Sampler) -> None:
        sampler.check(self.process)

    def ode_nll(self, u: torch.Tensor, generator: torch.Generator | None = None, **solver: Any
                ) -> tuple[PriorBound, int]:
        self._require_bound("ODE likelihood bound")
        t_eps = solver.pop("t_eps", None)
        t_eps = self.t_eps if t_eps is None else float(t_eps)  # default: the cut-off the prior was trained above
        bound = ode_nll_bound(self.process, u, t_eps=t_eps, generator=generator, **solver)
        return PriorBound(bound.nll, {"ode_nll": bound.ode_nll, "ode_dequant": bound.dequant}), bound.nfe

    def sample(self, z_1: torch.Tensor, sampler: Sampler, generator: torch.Generator | None = None
               ) -> tuple[torch.Tensor, int]:
        """Samples stop at the sampler's t_end, or at the training t_eps when it names none."""
        out = sampler(self.process, z_1, self.t_eps, generator)
        return out.x, out.nfe
