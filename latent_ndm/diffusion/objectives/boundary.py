"""The boundary terms shared by the discrete and continuous objectives: L_rec at t_0 and L_prior at t = 1."""

from __future__ import annotations

import torch

from latent_ndm.diffusion.objectives.terms import prior_kl, reconstruction
from latent_ndm.diffusion.schedule import VPSchedule


def boundary_times(x: torch.Tensor, t_0: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(t_0, 1) as per-example time tensors of shape (B,) in the math dtype of x."""
    dtype = torch.promote_types(x.dtype, torch.float32)
    B = x.shape[0]
    return torch.full((B,), t_0, device=x.device, dtype=dtype), torch.ones(B, device=x.device, dtype=dtype)


def boundary_terms(schedule: VPSchedule, x: torch.Tensor, F_0: torch.Tensor, F_1: torch.Tensor,
                   t_0: float, L_0: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_rec, L_prior) per example from F(x, t_0) and F(x, 1) (and a learned noise scale's L(x, t_0); L(x, 1) = 0 by
    construction, so the prior term is NDM's)."""
    t0, t1 = boundary_times(x, t_0)
    return reconstruction(x, F_0, schedule(t0), L_0), prior_kl(F_1, schedule(t1))
