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
from latent_ndm.diffusion.ode import FIXED
from latent_ndm.diffusion.reverse_process import ReverseProcess
from latent_ndm.diffusion.samplers import SampleOutput, sample_discrete, sample_ode, sample_sde
from latent_ndm.diffusion.schedule import VPSchedule
from latent_ndm.diffusion.transforms import Transform
from vae import DiagonalGaussian

SAMPLERS = ("ode", "sde", "discrete")


@dataclass(frozen=True)
class SamplerSpec:
    """How to draw prior samples: `name` ode | sde | discrete; ode: `method` (dopri5: adaptive at rtol = atol =
    `tol`; a fixed-step torchdiffeq method: `steps` steps); sde / discrete: `steps` steps; discrete: `eta`
    (1 DDPM-like, 0 deterministic); `t_eps`: where sampling stops (None: the model's training t_eps)."""

    name: str = "ode"
    tol: float = 1e-2
    method: str = "dopri5"
    steps: int = 100
    eta: float = 1.0
    t_eps: float | None = None

    def __post_init__(self) -> None:
        if self.name not in SAMPLERS:
            raise ValueError(f"sampler must be one of {list(SAMPLERS)}, got {self.name!r}")
        if self.tol <= 0 or self.steps < 1 or self.eta < 0:
            raise ValueError(f"need tol > 0, steps >= 1 and eta >= 0, got {self.tol}, {self.steps}, {self.eta}")

    def describe(self) -> str:
        if self.name == "ode":
            return f"ode {self.method} {self.steps} steps" if self.method in FIXED else \
                f"ode {self.method} tol {self.tol:g}"
        return f"sde {self.steps} steps" if self.name == "sde" else f"discrete {self.steps} steps eta {self.eta:g}"


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

    def sample(self, z_1: torch.Tensor, spec: SamplerSpec, generator: torch.Generator | None = None
               ) -> tuple[torch.Tensor, int]:
        """(latents u drawn from z_1 ~ N(0, I), NFE)."""
        raise NotImplementedError


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

    def sample(self, z_1: torch.Tensor, spec: SamplerSpec, generator: torch.Generator | None = None
               ) -> tuple[torch.Tensor, int]:
        return z_1, 0


class NDMPrior(Prior):
    """The latent NDM over normalised latents: denoiser x_hat_theta, transform F_phi, schedule, and `objective`, the
    NELBO estimator that bounds -log p(u) (`ContinuousNDMObjective` / `DiscreteNDMObjective`); `t_eps` is the
    training t_eps (where sampling stops), `eval_t_eps` the one of the objective's bound.

    Gradients flow through `nll_bound` (training calls it); evaluation wraps it in `torch.no_grad()` (not
    inference mode: the jvp of F needs forward-mode AD)."""

    normalised = True

    def __init__(self, denoiser: nn.Module, transform: Transform, schedule: VPSchedule, objective: Any,
                 latent_shape: tuple[int, int, int], t_eps: float, eval_t_eps: float | None = None) -> None:
        super().__init__()
        self.denoiser, self.transform, self.schedule, self.objective = denoiser, transform, schedule, objective
        self.latent_shape = tuple(int(n) for n in latent_shape)
        self.t_eps = float(t_eps)
        self.eval_t_eps = float(t_eps if eval_t_eps is None else eval_t_eps)

    @property
    def process(self) -> ReverseProcess:
        """The reverse process p_theta of this prior's networks (built on use, so it adds no state)."""
        return ReverseProcess(self.denoiser, self.transform, self.schedule)

    def with_objective(self, objective: Any, eval_t_eps: float | None = None) -> NDMPrior:
        """The same networks (shared, not copied) with another bound estimator, e.g. at a smaller t_eps."""
        return NDMPrior(self.denoiser, self.transform, self.schedule, objective, self.latent_shape, self.t_eps,
                        self.eval_t_eps if eval_t_eps is None else eval_t_eps)

    def nll_bound(self, u: torch.Tensor, generator: torch.Generator | None = None) -> PriorBound:
        ndm = self.objective(self.denoiser, self.transform, u, generator=generator)
        return PriorBound(ndm.total, {"ndm_rec": ndm.rec, "ndm_diff": ndm.diff, "ndm_prior": ndm.prior})

    def ode_nll(self, u: torch.Tensor, generator: torch.Generator | None = None, **solver: Any
                ) -> tuple[PriorBound, int]:
        t_eps = solver.pop("t_eps", None)
        t_eps = self.t_eps if t_eps is None else float(t_eps)  # default: the cut-off the prior was trained above
        bound = ode_nll_bound(self.process, u, t_eps=t_eps, generator=generator, **solver)
        return PriorBound(bound.nll, {"ode_nll": bound.ode_nll, "ode_dequant": bound.dequant}), bound.nfe

    def sample(self, z_1: torch.Tensor, spec: SamplerSpec, generator: torch.Generator | None = None
               ) -> tuple[torch.Tensor, int]:
        t_eps = self.t_eps if spec.t_eps is None else spec.t_eps
        out: SampleOutput
        if spec.name == "ode":
            out = sample_ode(self.process, t_eps=t_eps, method=spec.method, rtol=spec.tol, atol=spec.tol,
                             steps=spec.steps if spec.method in FIXED else None, z_1=z_1)
        elif spec.name == "sde":
            out = sample_sde(self.process, steps=spec.steps, t_eps=t_eps, z_1=z_1, generator=generator)
        else:
            out = sample_discrete(self.process, T=spec.steps, t_eps=t_eps, eta=spec.eta, z_1=z_1,
                                  generator=generator)
        return out.x, out.nfe
