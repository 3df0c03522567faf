"""The forward process q(z_t | x) around a transform F, in one object (NDM eq. 7-12; docs/MATH.md sections 2-6, 11).

    q(z_t | x) = N(alpha_t F(x, t), sigma(x, t)^2 I),   sigma(x, t) = sigma_t (fixed noise) or sigma_t exp(L(x, t))
    (the learned noise scale of the Gaussian NFDM process, `latent_ndm.diffusion.noise`; MATH.md section 11).

`ForwardProcess` owns the schedule (alpha_t, sigma_t, g^2), the transform F and, optionally, the noise scale L, and
gives from one place what the objectives, the reverse process, the samplers and the likelihood need of it: the
marginal at several times of one x (`Marginal`: F, dF/dt, L, dL/dt), z_t, the reverse drift f(z, t, x), the boundary
terms (reconstruction at t_0, prior KL at t = 1), the continuous integrand, the discrete KL and the dequantisation
term of the ODE NLL bound. The formulas are the pure functions of `gaussian` and `terms`, called here.

Three families: LSGM (F = identity, fixed noise), NDM (a learned F, fixed noise), NFDM (a learned noise scale). A new
family is a subclass (`family` names it); configs choose it with `ndm.process._target_`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from latent_ndm.diffusion.gaussian import forward_sample, noise_drift, reverse_drift
from latent_ndm.diffusion.noise import NoiseScale
from latent_ndm.diffusion.schedule import ScheduleOutput, VPSchedule
from latent_ndm.diffusion.terms import (
    NoiseTerms,
    continuous_integrand,
    discrete_kl,
    prior_kl,
    reconstruction,
)
from latent_ndm.diffusion.transforms import Transform


@dataclass(frozen=True)
class Marginal:
    """The marginal q(z_t | x) at one time, per example: mean transform F(x, t) and noise log-scale L(x, t), each of
    the shape of x, with their time derivatives where asked for (else None); L and dL/dt are None for a fixed noise."""

    F: torch.Tensor
    dF_dt: torch.Tensor | None = None
    L: torch.Tensor | None = None
    dL_dt: torch.Tensor | None = None


def boundary_times(x: torch.Tensor, t_0: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(t_0, 1) as per-example time tensors of shape (B,) in the math dtype of x."""
    dtype = torch.promote_types(x.dtype, torch.float32)
    B = x.shape[0]
    return torch.full((B,), t_0, device=x.device, dtype=dtype), torch.ones(B, device=x.device, dtype=dtype)


class ForwardProcess(nn.Module):
    """q(z_t | x) of a `schedule`, a `transform` F and a learned noise scale `noise` (None: the schedule's sigma_t)."""

    def __init__(self, schedule: VPSchedule, transform: Transform, noise: NoiseScale | None = None) -> None:
        super().__init__()
        self.schedule = schedule
        self.transform = transform
        self.noise = noise

    # -- what the process is -------------------------------------------------------------------------------------
    @classmethod
    def family(cls, transform_kind: str, learned_noise: bool) -> str:
        """The family's name from F's kind and whether the noise is learned: nfdm, lsgm (F = identity) or ndm."""
        return "nfdm" if learned_noise else ("lsgm" if transform_kind == "identity" else "ndm")

    @property
    def kind(self) -> str:
        """lsgm | ndm | nfdm (`family` of this process's objects)."""
        return self.family(self.transform.kind, self.noise is not None)

    @property
    def has_discrete_posterior(self) -> bool:
        """Whether the T-step posterior of NDM eq. 8 (the discrete objective, Algorithm 2) is this process's: only
        with the schedule's fixed noise."""
        return self.noise is None

    def require_discrete_posterior(self, what: str) -> None:
        """Refuse `what` (the discrete objective or sampler) in one sentence when the noise is learned."""
        if not self.has_discrete_posterior:
            raise ValueError(f"{what} uses NDM's fixed noise schedule, and this forward process learns its noise "
                             "(ndm/noise=neural): use the continuous objective and the ode, sde, euler, heun or rk4 "
                             "sampler")

    def default_sampler(self, steps: int, eta: float = 1.0) -> Mapping[str, Any]:
        """The sampler config (`samplers.build_sampler`) that draws this process's training grids: the paper's
        Algorithm 2 in `steps` steps with posterior noise `eta`, or the reverse SDE when the noise is learned."""
        if self.has_discrete_posterior:
            return {"name": "discrete", "steps": int(steps), "eta": float(eta)}
        return {"name": "sde", "steps": int(steps)}

    # -- the marginal --------------------------------------------------------------------------------------------
    def marginals(self, x: torch.Tensor, times: Sequence[torch.Tensor], derivative: Sequence[bool],
                  with_noise: Sequence[bool] | None = None) -> list[Marginal]:
        """The marginal at each time t_j (shape (B,)) of one x, with time derivatives where derivative[j]: F by one
        `Transform.evaluate`, then L by one `NoiseScale.evaluate` at the times where with_noise[j] (default all;
        e.g. not at t = 1, where the NFDM noise vanishes by construction)."""
        tf = self.transform.evaluate(x, times, derivative)
        if self.noise is None:
            return [Marginal(F=o.F, dF_dt=o.dF_dt) for o in tf]
        want = [True] * len(times) if with_noise is None else list(with_noise)
        idx = [j for j, w in enumerate(want) if w]
        nl = dict(zip(idx, self.noise.evaluate(x, [times[j] for j in idx], [derivative[j] for j in idx]), strict=True))
        return [Marginal(F=o.F, dF_dt=o.dF_dt, L=nl[j].F if j in nl else None, dL_dt=nl[j].dF_dt if j in nl else None)
                for j, o in enumerate(tf)]

    def marginal(self, x: torch.Tensor, t: torch.Tensor, derivative: bool = True) -> Marginal:
        """The marginal at times t (B,) of x: F(x, t) (and dF/dt), then L(x, t) (and dL/dt) for a learned noise."""
        if derivative:
            tf = self.transform.F_and_dF_dt(x, t)
            if self.noise is None:
                return Marginal(F=tf.F, dF_dt=tf.dF_dt)
            nl = self.noise.F_and_dF_dt(x, t)
            return Marginal(F=tf.F, dF_dt=tf.dF_dt, L=nl.F, dL_dt=nl.dF_dt)
        return Marginal(F=self.transform(x, t), L=self.noise(x, t) if self.noise is not None else None)

    def sample(self, m: Marginal, eps: torch.Tensor, sched: ScheduleOutput) -> torch.Tensor:
        """z_t = alpha_t F(x, t) + sigma(x, t) eps from the marginal m at t (`gaussian.forward_sample`)."""
        return forward_sample(m.F, eps, sched, m.L)

    # -- the reverse drift ---------------------------------------------------------------------------------------
    def drift(self, z: torch.Tensor, t: torch.Tensor, x: torch.Tensor,
              g2_scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """(f(z, t, x), g^2(t)) with g^2 = g2_scale * g_F^2 (NDM eq. 12 corrected; the NFDM `noise_drift` included):
        at x_hat for the model, at the data for the forward process (with g = 0, the velocity of z_t at fixed eps)."""
        sched = self.schedule(t)
        tf = self.transform.F_and_dF_dt(x.to(z.dtype), t.to(z.dtype))
        g2 = g2_scale * sched.g2
        s = _cast(sched, z.dtype)
        f = reverse_drift(z, tf.F, tf.dF_dt, s, g2.to(z.dtype))
        if self.noise is not None:
            nl = self.noise.F_and_dF_dt(x.to(z.dtype), t.to(z.dtype))
            f = f + noise_drift(z, tf.F, nl.F, nl.dF_dt, s, g2.to(z.dtype))
        return f, g2

    # -- the terms of the bounds ---------------------------------------------------------------------------------
    def boundary_terms(self, x: torch.Tensor, m_0: Marginal, m_1: Marginal,
                       t_0: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(L_rec, L_prior) per example from the marginals at t_0 and at 1 (with a learned noise, L(x, t_0) enters the
        reconstruction; L(x, 1) = 0 by construction, so the prior term is NDM's)."""
        t0, t1 = boundary_times(x, t_0)
        return reconstruction(x, m_0.F, self.schedule(t0), m_0.L), prior_kl(m_1.F, self.schedule(t1))

    def integrand(self, m_x: Marginal, m_xh: Marginal, z_t: torch.Tensor, sched: ScheduleOutput) -> torch.Tensor:
        """||f(z_t, t, x) - f(z_t, t, x_hat)||^2 / (2 g^2) per example from the marginals at x and at x_hat
        (`terms.continuous_integrand`; a learned noise adds its `noise_drift` to both drifts)."""
        noise = None if m_x.L is None else NoiseTerms(z=z_t, L_x=m_x.L, dL_x=m_x.dL_dt, L_xh=m_xh.L, dL_xh=m_xh.dL_dt)
        return continuous_integrand(m_x.F, m_x.dF_dt, m_xh.F, m_xh.dF_dt, sched, noise)

    def discrete_kl(self, m_x_s: Marginal, m_xh_s: Marginal, m_x_t: Marginal, m_xh_t: Marginal,
                    sched_s: ScheduleOutput, sched_t: ScheduleOutput) -> torch.Tensor:
        """KL(q(z_s | z_t, x) || q(z_s | z_t, x_hat)) of NDM eq. 10 (`terms.discrete_kl`); fixed noise only."""
        self.require_discrete_posterior("the discrete objective")
        return discrete_kl(m_x_s.F, m_xh_s.F, m_x_t.F, m_xh_t.F, sched_s, sched_t)

    def dequantisation(self, x: torch.Tensor, m: Marginal, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """E_q[-log p(x | z_eps) + log q(z_eps | x)] per example in closed form (docs/MATH.md section 6), from the
        marginal m at t_eps and alpha, sigma (B,) there: -D log alpha + alpha^2 ||x - F||^2 / (2 sigma^2), plus
        sum_d [(exp(2 L_d) - 1) / 2 - L_d] for a learned noise."""
        B, D = x.shape[0], x[0].numel()
        gap = (x - m.F).reshape(B, -1).pow(2).sum(1)
        dequant = -D * torch.log(alpha) + alpha**2 * gap / (2 * sigma**2)
        if m.L is not None:
            dequant = dequant + (0.5 * torch.expm1(2 * m.L) - m.L).reshape(B, -1).sum(1)
        return dequant


def _cast(sched: ScheduleOutput, dtype: torch.dtype) -> ScheduleOutput:
    return ScheduleOutput(**{k: v.to(dtype) for k, v in sched.__dict__.items()})
