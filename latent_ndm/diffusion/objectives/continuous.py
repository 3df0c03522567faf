"""The continuous-time NDM objective (NDM eq. 11, corrected; docs/MATH.md section 5): NELBO = L_rec + L_diff + L_prior.

L_diff = integral_{t_eps}^1 E ||Delta||^2 / (2 g^2) dt, estimated with one t ~ r(t) per example.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from latent_ndm.diffusion.checks import check_batch
from latent_ndm.diffusion.forward_process import forward_sample
from latent_ndm.diffusion.noise import NoiseScale
from latent_ndm.diffusion.objectives.boundary import boundary_terms, boundary_times
from latent_ndm.diffusion.objectives.terms import NDMLoss, NoiseTerms, continuous_integrand
from latent_ndm.diffusion.schedule import VPSchedule
from latent_ndm.diffusion.time_sampling import TimeSampler
from latent_ndm.diffusion.transforms import Transform


class ContinuousNDMObjective:
    """`objective(denoiser, transform, x) -> NDMLoss` (per example, nats).

    The reconstruction term sits at the sampler's t_eps, so rec + diff + prior is a bound on -log p(x).
    The transform is called twice: once at x for (F, dF/dt) at t and F at t_eps and 1 (needed for z_t), and once
    at x_hat for (F, dF/dt) at t. A learned noise scale `noise` (the Gaussian NFDM process, MATH.md section 11) is
    called the same way: at x for (L, dL/dt) at t and L at t_eps, at x_hat for (L, dL/dt) at t.
    """

    is_bound: ClassVar[bool] = True

    def __init__(self, schedule: VPSchedule, time_sampler: TimeSampler) -> None:
        self.schedule = schedule
        self.time_sampler = time_sampler
        self.t_eps = time_sampler.t_eps

    def at(self, t_eps: float) -> ContinuousNDMObjective:
        """The same bound cut at t_eps (its time sampler on [t_eps, 1])."""
        return ContinuousNDMObjective(self.schedule, self.time_sampler.at(t_eps))

    def __call__(self, denoiser: nn.Module, transform: Transform, x: torch.Tensor,
                 generator: torch.Generator | None = None, noise: NoiseScale | None = None) -> NDMLoss:
        check_batch(x, "x")
        dtype = torch.promote_types(x.dtype, torch.float32)
        ts = self.time_sampler.sample(x.shape[0], x.device, dtype, generator)
        sched = self.schedule(ts.t)
        eps = torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)
        t = ts.t.to(x.dtype)

        t_0, t_1 = (b.to(x.dtype) for b in boundary_times(x, self.t_eps))
        tf_x, tf_0, tf_1 = transform.evaluate(x, [t, t_0, t_1], [True, False, False])
        if noise is None:
            z_t = forward_sample(tf_x.F, eps, sched)
            x_hat = denoiser(z_t, t)
            tf_xh = transform.F_and_dF_dt(x_hat, t)
            diff = ts.weight * continuous_integrand(tf_x.F, tf_x.dF_dt, tf_xh.F, tf_xh.dF_dt, sched)
            rec, prior = boundary_terms(self.schedule, x, tf_0.F, tf_1.F, self.t_eps)
            return NDMLoss(rec=rec, diff=diff, prior=prior, total=rec + diff + prior)

        nl_x, nl_0 = noise.evaluate(x, [t, t_0], [True, False])
        z_t = forward_sample(tf_x.F, eps, sched, nl_x.F)
        x_hat = denoiser(z_t, t)
        tf_xh = transform.F_and_dF_dt(x_hat, t)
        nl_xh = noise.F_and_dF_dt(x_hat, t)
        terms = NoiseTerms(z=z_t, L_x=nl_x.F, dL_x=nl_x.dF_dt, L_xh=nl_xh.F, dL_xh=nl_xh.dF_dt)
        diff = ts.weight * continuous_integrand(tf_x.F, tf_x.dF_dt, tf_xh.F, tf_xh.dF_dt, sched, terms)
        rec, prior = boundary_terms(self.schedule, x, tf_0.F, tf_1.F, self.t_eps, nl_0.F)
        return NDMLoss(rec=rec, diff=diff, prior=prior, total=rec + diff + prior)
