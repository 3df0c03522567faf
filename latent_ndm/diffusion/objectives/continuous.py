"""The continuous-time NDM objective (NDM eq. 11, corrected; docs/MATH.md section 5): NELBO = L_rec + L_diff + L_prior.

L_diff = integral_{t_eps}^1 E ||Delta||^2 / (2 g^2) dt, estimated with one t ~ r(t) per example.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from latent_ndm.diffusion.checks import check_batch
from latent_ndm.diffusion.forward_process import ForwardProcess, boundary_times
from latent_ndm.diffusion.objectives.protocol import NDMLoss, bound_sampler
from latent_ndm.diffusion.schedule import VPSchedule
from latent_ndm.diffusion.time_sampling import TimeSampler


class ContinuousNDMObjective:
    """`objective(denoiser, process, x) -> NDMLoss` (per example, nats).

    The reconstruction term sits at the sampler's t_eps, so rec + diff + prior is a bound on -log p(x).
    The process is asked twice: once at x for (F, dF/dt) at t and F at t_eps and 1 (needed for z_t), and once at
    x_hat for (F, dF/dt) at t; a learned noise scale (the Gaussian NFDM process, MATH.md section 11) is evaluated the
    same way, at x for (L, dL/dt) at t and L at t_eps, at x_hat for (L, dL/dt) at t.
    """

    is_bound: ClassVar[bool] = True
    result: ClassVar[type[NDMLoss]] = NDMLoss

    def __init__(self, schedule: VPSchedule, time_sampler: TimeSampler) -> None:
        self.schedule = schedule
        self.time_sampler = time_sampler
        self.t_eps = time_sampler.t_eps

    def at(self, t_eps: float) -> ContinuousNDMObjective:
        """The same bound cut at t_eps (its time sampler on [t_eps, 1])."""
        return ContinuousNDMObjective(self.schedule, self.time_sampler.at(t_eps))

    def default_sampler(self, process: ForwardProcess, steps: int, eta: float = 1.0) -> Mapping[str, Any]:
        return bound_sampler(process, steps, eta)

    def __call__(self, denoiser: nn.Module, process: ForwardProcess, x: torch.Tensor,
                 generator: torch.Generator | None = None) -> NDMLoss:
        check_batch(x, "x")
        dtype = torch.promote_types(x.dtype, torch.float32)
        ts = self.time_sampler.sample(x.shape[0], x.device, dtype, generator)
        sched = self.schedule(ts.t)
        eps = torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)
        t = ts.t.to(x.dtype)

        t_0, t_1 = (b.to(x.dtype) for b in boundary_times(x, self.t_eps))
        m_x, m_0, m_1 = process.marginals(x, [t, t_0, t_1], [True, False, False], with_noise=[True, True, False])
        z_t = process.sample(m_x, eps, sched)
        x_hat = denoiser(z_t, t)
        m_xh = process.marginal(x_hat, t)
        diff = ts.weight * process.integrand(m_x, m_xh, z_t, sched)
        rec, prior = process.boundary_terms(x, m_0, m_1, self.t_eps)
        return NDMLoss(rec=rec, diff=diff, prior=prior, total=rec + diff + prior)
