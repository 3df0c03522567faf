"""The discrete-time NDM objective (NDM eq. 9-10; docs/MATH.md section 4) on the grid t_i = t_eps + (1 - t_eps) i/T.

NELBO = L_rec(t_0) + sum_{i=1}^T KL_i + L_prior, trained with one i ~ U{1..T} per example (times T).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from latent_ndm.diffusion.checks import check_batch
from latent_ndm.diffusion.forward_process import ForwardProcess, boundary_times
from latent_ndm.diffusion.objectives.protocol import NDMLoss, bound_sampler
from latent_ndm.diffusion.schedule import DEFAULT_T_EPS, VPSchedule, time_grid


class DiscreteNDMObjective:
    """`objective(denoiser, process, x) -> NDMLoss` with T steps (per example, nats); a forward process with the
    schedule's fixed noise only (`ForwardProcess.has_discrete_posterior`)."""

    is_bound: ClassVar[bool] = True
    result: ClassVar[type[NDMLoss]] = NDMLoss

    def __init__(self, schedule: VPSchedule, T: int = 1000, t_eps: float = DEFAULT_T_EPS) -> None:
        self.schedule = schedule
        self.T = int(T)
        self.t_eps = float(t_eps)
        time_grid(self.T, self.t_eps)  # validates

    def at(self, t_eps: float) -> DiscreteNDMObjective:
        """The same T-step bound on the grid from t_eps."""
        return DiscreteNDMObjective(self.schedule, self.T, t_eps)

    def default_sampler(self, process: ForwardProcess, steps: int, eta: float = 1.0) -> Mapping[str, Any]:
        return bound_sampler(process, steps, eta)

    def step_terms(self, denoiser: nn.Module, process: ForwardProcess, x: torch.Tensor, i: torch.Tensor,
                   eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(KL_i, L_rec, L_prior) per example for step indices i of shape (B,) in 1..T, z_t drawn with noise eps.

        The transform is called twice: at x for F at s, t, t_0 and 1, and at x_hat for F at s and t."""
        process.require_discrete_posterior("the discrete objective")
        B, dtype = x.shape[0], torch.promote_types(x.dtype, torch.float32)
        grid = time_grid(self.T, self.t_eps, dtype, x.device)
        s, t = grid[i - 1], grid[i]
        sched = self.schedule(torch.cat([s, t]))
        sched_s, sched_t = sched.select(slice(0, B)), sched.select(slice(B, 2 * B))
        t_0, t_1 = boundary_times(x, self.t_eps)
        m_x_s, m_x_t, m_x_0, m_x_1 = process.marginals(x, [v.to(x.dtype) for v in (s, t, t_0, t_1)], [False] * 4)
        z_t = process.sample(m_x_t, eps, sched_t)
        x_hat = denoiser(z_t, t.to(x.dtype))
        m_xh_s, m_xh_t = process.marginals(x_hat, [s.to(x.dtype), t.to(x.dtype)], [False] * 2)
        kl = process.discrete_kl(m_x_s, m_xh_s, m_x_t, m_xh_t, sched_s, sched_t)
        return (kl, *process.boundary_terms(x, m_x_0, m_x_1, self.t_eps))

    def __call__(self, denoiser: nn.Module, process: ForwardProcess, x: torch.Tensor,
                 generator: torch.Generator | None = None) -> NDMLoss:
        check_batch(x, "x")
        i = torch.randint(1, self.T + 1, (x.shape[0],), device=x.device, generator=generator)
        eps = torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)
        kl, rec, prior = self.step_terms(denoiser, process, x, i, eps)
        diff = self.T * kl
        return NDMLoss(rec=rec, diff=diff, prior=prior, total=rec + diff + prior)
