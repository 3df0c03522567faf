"""The discrete-time NDM objective (NDM eq. 9-10; docs/MATH.md section 4) on the grid t_i = t_eps + (1 - t_eps) i/T.

NELBO = L_rec(t_0) + sum_{i=1}^T KL_i + L_prior, trained with one i ~ U{1..T} per example (times T).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from latent_ndm.diffusion.checks import check_batch
from latent_ndm.diffusion.forward_process import forward_sample
from latent_ndm.diffusion.objectives.boundary import boundary_terms, boundary_times
from latent_ndm.diffusion.objectives.terms import NDMLoss, discrete_kl
from latent_ndm.diffusion.schedule import DEFAULT_T_EPS, VPSchedule, time_grid
from latent_ndm.diffusion.transforms import Transform


class DiscreteNDMObjective:
    """`objective(denoiser, transform, x) -> NDMLoss` with T steps (per example, nats)."""

    is_bound: ClassVar[bool] = True

    def __init__(self, schedule: VPSchedule, T: int = 1000, t_eps: float = DEFAULT_T_EPS) -> None:
        self.schedule = schedule
        self.T = int(T)
        self.t_eps = float(t_eps)
        time_grid(self.T, self.t_eps)  # validates

    def at(self, t_eps: float) -> DiscreteNDMObjective:
        """The same T-step bound on the grid from t_eps."""
        return DiscreteNDMObjective(self.schedule, self.T, t_eps)

    def step_terms(self, denoiser: nn.Module, transform: Transform, x: torch.Tensor, i: torch.Tensor,
                   eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(KL_i, L_rec, L_prior) per example for step indices i of shape (B,) in 1..T, z_t drawn with noise eps.

        The transform is called twice: at x for F at s, t, t_0 and 1, and at x_hat for F at s and t."""
        B, dtype = x.shape[0], torch.promote_types(x.dtype, torch.float32)
        grid = time_grid(self.T, self.t_eps, dtype, x.device)
        s, t = grid[i - 1], grid[i]
        sched = self.schedule(torch.cat([s, t]))
        sched_s, sched_t = sched.select(slice(0, B)), sched.select(slice(B, 2 * B))
        t_0, t_1 = boundary_times(x, self.t_eps)
        F_x_s, F_x_t, F_x_0, F_x_1 = (o.F for o in transform.evaluate(
            x, [v.to(x.dtype) for v in (s, t, t_0, t_1)], [False] * 4))
        z_t = forward_sample(F_x_t, eps, sched_t)
        x_hat = denoiser(z_t, t.to(x.dtype))
        F_xh_s, F_xh_t = (o.F for o in transform.evaluate(x_hat, [s.to(x.dtype), t.to(x.dtype)], [False] * 2))
        kl = discrete_kl(F_x_s, F_xh_s, F_x_t, F_xh_t, sched_s, sched_t)
        return (kl, *boundary_terms(self.schedule, x, F_x_0, F_x_1, self.t_eps))

    def __call__(self, denoiser: nn.Module, transform: Transform, x: torch.Tensor,
                 generator: torch.Generator | None = None) -> NDMLoss:
        check_batch(x, "x")
        i = torch.randint(1, self.T + 1, (x.shape[0],), device=x.device, generator=generator)
        eps = torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)
        kl, rec, prior = self.step_terms(denoiser, transform, x, i, eps)
        diff = self.T * kl
        return NDMLoss(rec=rec, diff=diff, prior=prior, total=rec + diff + prior)
