"""Parameterisations of the reverse model's data prediction x_hat_theta(z_t, t) (docs/MATH.md section 3).

Each is a small swappable object `(net_out, z_t, sched) -> x_hat`; `Denoiser` wraps a backbone with one.
- EpsilonPrediction: x_hat = (z_t - sigma_t eps_hat) / alpha_t  (DDPM/LSGM; estimates F(x,t) when F is learnable)
- DataPrediction:    x_hat = net(z_t, t)
- SkipPrediction:    x_hat = c_skip(t) z_t + c_out(t) net(z_t, t), with the Gaussian-optimal
                     c_skip = alpha sd^2 / (alpha^2 sd^2 + sigma^2), c_out = sigma sd / sqrt(alpha^2 sd^2 + sigma^2)
                     (for sd = 1 on VP: c_skip = alpha_t, c_out = sigma_t), no 1/alpha_1 blow-up near t = 1.
"""

from __future__ import annotations

import torch
from torch import nn

from latent_ndm.diffusion.checks import append_dims, check_time
from latent_ndm.diffusion.schedule import ScheduleOutput, VPSchedule


class EpsilonPrediction:
    """x_hat = (z_t - sigma_t eps_hat) / alpha_t."""

    def __call__(self, out: torch.Tensor, z_t: torch.Tensor, sched: ScheduleOutput) -> torch.Tensor:
        alpha, sigma = append_dims(sched.alpha, z_t.ndim), append_dims(sched.sigma, z_t.ndim)
        return (z_t - sigma * out) / alpha


class DataPrediction:
    """x_hat = net(z_t, t)."""

    def __call__(self, out: torch.Tensor, z_t: torch.Tensor, sched: ScheduleOutput) -> torch.Tensor:
        return out


class SkipPrediction:
    """x_hat = c_skip(t) z_t + c_out(t) net(z_t, t) for data of standard deviation `sigma_data`."""

    def __init__(self, sigma_data: float = 1.0) -> None:
        if sigma_data <= 0:
            raise ValueError(f"sigma_data must be positive, got {sigma_data}")
        self.sigma_data = float(sigma_data)

    def __call__(self, out: torch.Tensor, z_t: torch.Tensor, sched: ScheduleOutput) -> torch.Tensor:
        sd2 = self.sigma_data**2
        total = sched.alpha**2 * sd2 + sched.sigma2
        c_skip = append_dims(sched.alpha * sd2 / total, z_t.ndim)
        c_out = append_dims(sched.sigma * self.sigma_data / torch.sqrt(total), z_t.ndim)
        return c_skip * z_t + c_out * out


class MixingPrediction(nn.Module):
    """LSGM's mixing trick in x-space: x_hat = (1 - m_c) x_hat_N + m_c x_hat_inner, m_c = sigmoid(logit_c).

    x_hat_N = alpha_t z_t / (alpha_t^2 + sigma_t^2) is the exact denoiser when the (normalised) latents are
    N(0, I), so a VAE prior starts as the N(0, I) it replaces; one learnable logit per channel (dim 1), init -6.
    """

    def __init__(self, inner: EpsilonPrediction | DataPrediction | SkipPrediction, channels: int,
                 init_logit: float = -6.0) -> None:
        super().__init__()
        self.inner = inner
        self.logit = nn.Parameter(torch.full((channels,), float(init_logit)))

    def forward(self, out: torch.Tensor, z_t: torch.Tensor, sched: ScheduleOutput) -> torch.Tensor:
        nd = z_t.ndim
        alpha = append_dims(sched.alpha, nd)
        x_hat_N = alpha * z_t / (alpha**2 + append_dims(sched.sigma2, nd))
        m = torch.sigmoid(self.logit.to(z_t.dtype)).reshape((1, -1) + (1,) * (nd - 2))
        return (1 - m) * x_hat_N + m * self.inner(out, z_t, sched)


Parameterisation = EpsilonPrediction | DataPrediction | SkipPrediction | MixingPrediction


class Denoiser(nn.Module):
    """x_hat_theta(z_t, t) = parameterisation(net(z_t, t), z_t, schedule(t)).

    The backbone runs in whatever precision the caller's autocast gives it; the combination with the
    schedule coefficients is done in float32 (or float64) outside autocast.
    """

    def __init__(self, net: nn.Module, schedule: VPSchedule, parameterisation: Parameterisation) -> None:
        super().__init__()
        self.net = net
        self.schedule = schedule
        self.parameterisation = parameterisation

    def forward(self, z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        check_time(t, z_t.shape[0])
        out = self.net(z_t, t)
        with torch.autocast(device_type=z_t.device.type, enabled=False):
            sched = self.schedule(t.to(z_t.dtype))
            dtype = torch.promote_types(z_t.dtype, torch.float32)
            x_hat = self.parameterisation(out.to(dtype), z_t.to(dtype), sched)
        return x_hat

