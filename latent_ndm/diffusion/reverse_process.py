"""The NDM reverse process p_theta: x_hat_theta(z_t, t) plugged into the forward process' posterior / drift.

Reverse SDE (t from 1 to 0):  dz = f(z, t, x_hat) dt + g dw,  with reverse noise g^2 = k g_F^2, and
  f(z, t, x) = alpha_t dF/dt(x, t) + r z - 1/2 c(t) s(x, z, t),   s(x, z, t) = (alpha_t F(x, t) - z) / sigma_t^2,
  c(t) = d sigma^2/dt - 2 r sigma^2 + g^2.
k = 1 is the SDE matching the forward process; k = 0 gives the probability-flow ODE v(z, t)
(NDM eq. 12-13 corrected; docs/MATH.md section 6). With a learned noise scale (the Gaussian NFDM process) the drift
gains `noise_drift` = e (z - alpha_t F(x_hat, t)) at the same g (MATH.md section 11): the samplers and the ODE
likelihood, which only call `drift` and `velocity`, serve both processes.
"""

from __future__ import annotations

import torch
from torch import nn

from latent_ndm.diffusion.checks import append_dims
from latent_ndm.diffusion.forward_process import drift_coefficient, noise_drift
from latent_ndm.diffusion.noise import NoiseScale
from latent_ndm.diffusion.schedule import ScheduleOutput, VPSchedule
from latent_ndm.diffusion.transforms import Transform, TransformOutput


def reverse_drift(z: torch.Tensor, tf_xh: TransformOutput, sched: ScheduleOutput, g2: torch.Tensor) -> torch.Tensor:
    """f(z, t, x_hat) = alpha_t dF/dt(x_hat,t) + r z - 1/2 c s(x_hat, z, t), c = d sigma^2/dt - 2 r sigma^2 + g^2."""
    nd = z.ndim
    c = drift_coefficient(sched, g2)
    alpha = append_dims(sched.alpha, nd)
    score = (alpha * tf_xh.F - z) / append_dims(sched.sigma2, nd)
    return alpha * tf_xh.dF_dt + append_dims(sched.r, nd) * z - 0.5 * append_dims(c, nd) * score


class ReverseProcess(nn.Module):
    """Holds the denoiser x_hat_theta, the transform F_phi, the schedule and (NFDM) the noise scale L_phi; gives x_hat,
    drifts and velocities."""

    def __init__(self, denoiser: nn.Module, transform: Transform, schedule: VPSchedule,
                 noise: NoiseScale | None = None) -> None:
        super().__init__()
        self.denoiser = denoiser
        self.transform = transform
        self.schedule = schedule
        self.noise = noise

    def drift(self, z: torch.Tensor, t: torch.Tensor, g2_scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """(f(z, t, x_hat), g^2(t)) for the reverse SDE with g^2 = g2_scale * g_F^2; t of shape (B,)."""
        return self.drift_given(z, t, self.denoiser(z, t), g2_scale)

    def drift_given(self, z: torch.Tensor, t: torch.Tensor, x: torch.Tensor,
                    g2_scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """(f(z, t, x), g^2(t)) at a given x: x_hat for the model, the data for the forward process (with g = 0, the
        velocity of z_t = mu + sigma eps at fixed eps)."""
        sched = self.schedule(t)
        tf = self.transform.F_and_dF_dt(x.to(z.dtype), t.to(z.dtype))
        g2 = g2_scale * sched.g2
        s = _cast(sched, z.dtype)
        f = reverse_drift(z, tf, s, g2.to(z.dtype))
        if self.noise is not None:
            nl = self.noise.F_and_dF_dt(x.to(z.dtype), t.to(z.dtype))
            f = f + noise_drift(z, tf.F, nl.F, nl.dF_dt, s, g2.to(z.dtype))
        return f, g2

    def velocity(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Probability-flow ODE velocity v(z, t) = f(z, t, x_hat) with g = 0."""
        return self.drift(z, t, g2_scale=0.0)[0]


def _cast(sched: ScheduleOutput, dtype: torch.dtype) -> ScheduleOutput:
    return ScheduleOutput(**{k: v.to(dtype) for k, v in sched.__dict__.items()})
