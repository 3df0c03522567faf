"""Priors p(z) over VAE latents, as the evaluator sees them: the VAE's N(0, I) and the NDM (MATH.md sections 6-7).

Each gives, per example in nats: an upper-bound estimate of -log p(z) (`nll_bound`), the cross-entropy term of the
NELBO (`cross_entropy`), the probability-flow ODE's bound (`ode_nll`), and samples. The NDM models the normalised
latent z / s (s = the VAE's latent scale), so -log p(z) = -log p_NDM(z / s) + D_z log s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from latent_ndm.likelihood import ode_nll_bound, standard_normal_logp
from latent_ndm.ode import FIXED
from latent_ndm.reverse_process import ReverseProcess
from latent_ndm.samplers import SampleOutput, sample_discrete, sample_ode, sample_sde
from latent_ndm.schedule import VPSchedule
from latent_ndm.transforms import Transform
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
    """p(z) over latents of `latent_shape` (C, H, W)."""

    latent_shape: tuple[int, int, int] | None = None

    def nll_bound(self, z: torch.Tensor, generator: torch.Generator | None = None) -> PriorBound:
        """An estimate (at this z) whose expectation upper-bounds -log p(z)."""
        raise NotImplementedError

    def cross_entropy(self, q: DiagonalGaussian, z: torch.Tensor,
                      generator: torch.Generator | None = None) -> PriorBound:
        """An estimate of the NELBO's cross-entropy E_q(z|x)[-log p(z)] from one sample z ~ q."""
        return self.nll_bound(z, generator)

    def ode_nll(self, z: torch.Tensor, generator: torch.Generator | None = None, **solver: Any
                ) -> tuple[PriorBound, int]:
        """(-log p(z) from the probability-flow ODE, the solver's NFE)."""
        raise NotImplementedError

    def sample(self, z_1: torch.Tensor, spec: SamplerSpec, generator: torch.Generator | None = None
               ) -> tuple[torch.Tensor, int]:
        """(latents z drawn from z_1 ~ N(0, I), NFE)."""
        raise NotImplementedError


class StandardNormalPrior(Prior):
    """The VAE stage's p(z) = N(0, I): every quantity is exact; the cross-entropy is taken in closed form over q,
    so that log q + cross-entropy is the VAE stage's analytic KL."""

    def nll_bound(self, z: torch.Tensor, generator: torch.Generator | None = None) -> PriorBound:
        return PriorBound(-standard_normal_logp(z))

    def cross_entropy(self, q: DiagonalGaussian, z: torch.Tensor,
                      generator: torch.Generator | None = None) -> PriorBound:
        terms = math.log(2 * math.pi) + q.mean.pow(2) + q.logvar.exp()
        return PriorBound(0.5 * terms.flatten(1).sum(1))

    def ode_nll(self, z: torch.Tensor, generator: torch.Generator | None = None, **solver: Any
                ) -> tuple[PriorBound, int]:
        return self.nll_bound(z), 0

    def sample(self, z_1: torch.Tensor, spec: SamplerSpec, generator: torch.Generator | None = None
               ) -> tuple[torch.Tensor, int]:
        return z_1, 0


class NDMPrior(Prior):
    """The latent NDM: denoiser x_hat_theta, transform F_phi, schedule, the NELBO objective (at the run's eval
    t_eps), the VAE's latent scale s and the latent shape; `t_eps` is the training t_eps (where sampling stops)."""

    def __init__(self, denoiser: nn.Module, transform: Transform, schedule: VPSchedule, objective: Any,
                 latent_scale: torch.Tensor, latent_shape: tuple[int, int, int], t_eps: float,
                 eval_t_eps: float | None = None) -> None:
        super().__init__()
        self.denoiser, self.transform, self.schedule, self.objective = denoiser, transform, schedule, objective
        self.process = ReverseProcess(denoiser, transform, schedule)
        self.register_buffer("latent_scale", latent_scale.detach().clone().reshape(()))
        self.latent_shape = tuple(int(n) for n in latent_shape)
        self.t_eps = float(t_eps)
        self.eval_t_eps = float(t_eps if eval_t_eps is None else eval_t_eps)

    def _log_scale(self, z: torch.Tensor) -> torch.Tensor:
        return z[0].numel() * torch.log(self.latent_scale.to(z.dtype))

    def nll_bound(self, z: torch.Tensor, generator: torch.Generator | None = None) -> PriorBound:
        with torch.no_grad():  # forward-mode AD (jvp transforms) runs outside inference mode
            ndm = self.objective(self.denoiser, self.transform, z / self.latent_scale.to(z.dtype),
                                 generator=generator)
        parts = {"ndm_rec": ndm.rec, "ndm_diff": ndm.diff, "ndm_prior": ndm.prior}
        return PriorBound(ndm.total + self._log_scale(z), parts)

    def ode_nll(self, z: torch.Tensor, generator: torch.Generator | None = None, **solver: Any
                ) -> tuple[PriorBound, int]:
        t_eps = solver.pop("t_eps", 1e-5)
        bound = ode_nll_bound(self.process, z / self.latent_scale.to(z.dtype), t_eps=t_eps, generator=generator,
                              **solver)
        parts = {"ode_nll": bound.ode_nll, "ode_dequant": bound.dequant}
        return PriorBound(bound.nll + self._log_scale(z), parts), bound.nfe

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
        return out.x * self.latent_scale.to(out.x.dtype), out.nfe
