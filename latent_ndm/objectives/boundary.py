"""The boundary terms shared by the discrete and continuous objectives: L_rec at t_0 and L_prior at t = 1."""

from __future__ import annotations

import torch

from latent_ndm.objectives.terms import prior_kl, reconstruction
from latent_ndm.schedule import VPSchedule
from latent_ndm.transforms import Transform


def boundary_terms(schedule: VPSchedule, transform: Transform, x: torch.Tensor,
                   t_0: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_rec, L_prior) per example: F(x, t_0) and F(x, 1) come from one batched call of the transform."""
    B = x.shape[0]
    dtype = torch.promote_types(x.dtype, torch.float32)
    times = torch.cat([torch.full((B,), t_0, device=x.device, dtype=dtype),
                       torch.ones(B, device=x.device, dtype=dtype)])
    sched = schedule(times)
    if transform.is_identity:
        F_0, F_1 = x, x
    else:
        F_0, F_1 = transform(torch.cat([x, x]), times.to(x.dtype)).split(B)
    rec = reconstruction(x, F_0, sched.select(slice(0, B)))
    prior = prior_kl(F_1, sched.select(slice(B, 2 * B)))
    return rec, prior
