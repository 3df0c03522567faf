"""The NDM reverse process p_theta: x_hat_theta(z_t, t) plugged into the forward process' posterior / drift.

Reverse SDE (t from 1 to 0):  dz = f(z, t, x_hat) dt + g dw,  with reverse noise g^2 = k g_F^2, and
  f(z, t, x) = alpha_t dF/dt(x, t) + r z - 1/2 c(t) s(x, z, t),   s(x, z, t) = (alpha_t F(x, t) - z) / sigma_t^2,
  c(t) = d sigma^2/dt - 2 r sigma^2 + g^2.
k = 1 is the SDE matching the forward process; k = 0 gives the probability-flow ODE v(z, t)
(NDM eq. 12-13 corrected; docs/MATH.md section 6). The drift f is the forward process's (`ForwardProcess.drift`):
with a learned noise scale (the Gaussian NFDM process) it gains `noise_drift` = e (z - alpha_t F(x_hat, t)) at the same
g (MATH.md section 11), so the samplers and the ODE likelihood, which only call `drift` and `velocity`, serve every
process.
"""

from __future__ import annotations

import torch
from torch import nn

from latent_ndm.diffusion.forward_process import ForwardProcess
from latent_ndm.diffusion.schedule import VPSchedule
from latent_ndm.diffusion.transforms import Transform


class ReverseProcess(nn.Module):
    """Holds the denoiser x_hat_theta and the forward process (`process`: schedule, F_phi and, for NFDM, the noise
    scale L_phi); gives x_hat, drifts and velocities."""

    def __init__(self, denoiser: nn.Module, process: ForwardProcess) -> None:
        super().__init__()
        self.denoiser = denoiser
        self.process = process

    @property
    def schedule(self) -> VPSchedule:
        """The forward process's schedule (read-only)."""
        return self.process.schedule

    @property
    def transform(self) -> Transform:
        """The forward process's transform F (read-only)."""
        return self.process.transform

    def drift(self, z: torch.Tensor, t: torch.Tensor, g2_scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """(f(z, t, x_hat), g^2(t)) for the reverse SDE with g^2 = g2_scale * g_F^2; t of shape (B,)."""
        return self.drift_given(z, t, self.denoiser(z, t), g2_scale)

    def drift_given(self, z: torch.Tensor, t: torch.Tensor, x: torch.Tensor,
                    g2_scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """(f(z, t, x), g^2(t)) at a given x: x_hat for the model, the data for the forward process (with g = 0, the
        velocity of z_t = mu + sigma eps at fixed eps)."""
        return self.process.drift(z, t, x, g2_scale)

    def velocity(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Probability-flow ODE velocity v(z, t) = f(z, t, x_hat) with g = 0."""
        return self.drift(z, t, g2_scale=0.0)[0]
