"""The Gaussian-data oracle of docs/MATH.md section 9: data x ~ N(m, diag(S)), F = identity, VP schedule.

Everything a diffusion model can be checked against has a closed form here: the optimal denoiser
x_hat* = m + alpha S (alpha^2 S + sigma^2)^-1 (z - alpha m), the marginals q(z_t) = N(alpha m, alpha^2 S + sigma^2),
the continuous diffusion loss, the discrete sum, and the entropy of the data.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from latent_ndm.diffusion.checks import append_dims
from latent_ndm.diffusion.schedule import VPSchedule, time_grid


class GaussianOracleDenoiser(nn.Module):
    """x_hat*(z_t, t) = E[x | z_t] for x ~ N(m, diag(S)) and z_t = alpha_t x + sigma_t eps. m, S of shape (D,)."""

    def __init__(self, m: torch.Tensor, S: torch.Tensor, schedule: VPSchedule) -> None:
        super().__init__()
        if m.shape != S.shape or (S <= 0).any():
            raise ValueError("m and S must have the same shape and S must be positive")
        self.register_buffer("m", m.clone())
        self.register_buffer("S", S.clone())
        self.schedule = schedule

    def forward(self, z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        s = self.schedule(t)
        alpha, sigma2 = append_dims(s.alpha, z_t.ndim).to(z_t.dtype), append_dims(s.sigma2, z_t.ndim).to(z_t.dtype)
        m, S = self.m.to(z_t.dtype), self.S.to(z_t.dtype)
        return m + alpha * S / (alpha**2 * S + sigma2) * (z_t - alpha * m)


def marginal_logp(z: torch.Tensor, t: float, m: torch.Tensor, S: torch.Tensor, schedule: VPSchedule) -> torch.Tensor:
    """log q(z_t) = log N(z; alpha_t m, alpha_t^2 S + sigma_t^2 I), per example."""
    s = schedule(torch.tensor([t], dtype=torch.float64))
    mean = (s.alpha * m).to(z.dtype)
    var = (s.alpha**2 * S + s.sigma2).to(z.dtype)
    return (-0.5 * (math.log(2 * math.pi) + torch.log(var) + (z - mean) ** 2 / var)).sum(-1)


def posterior_variance(t: torch.Tensor, S: torch.Tensor, schedule: VPSchedule) -> torch.Tensor:
    """Var[x | z_t] per dimension: S sigma^2 / (alpha^2 S + sigma^2), shape (B, D)."""
    s = schedule(t)
    a2, s2 = s.alpha[:, None] ** 2, s.sigma2[:, None]
    return S * s2 / (a2 * S + s2)


def continuous_diffusion_loss(S: torch.Tensor, t_eps: float, schedule: VPSchedule) -> float:
    """L_diff with x_hat* = 1/2 sum_i log[(1 + S_i SNR_eps) / (1 + S_i SNR_1)]."""
    s = schedule(torch.tensor([t_eps, 1.0], dtype=torch.float64))
    snr = torch.exp(s.log_snr)
    return (0.5 * torch.log((1 + S * snr[0]) / (1 + S * snr[1]))).sum().item()


def expected_integrand(t: torch.Tensor, S: torch.Tensor, schedule: VPSchedule) -> torch.Tensor:
    """E ||Delta||^2 / (2 g^2) at time t with x_hat* (F = identity): -1/2 dSNR/dt * sum_i Var[x_i | z_t]."""
    s = schedule(t)
    return s.alpha**2 * s.g2 / (2 * s.sigma2**2) * posterior_variance(t, S, schedule).sum(-1)


def discrete_diffusion_loss(S: torch.Tensor, T: int, t_eps: float, schedule: VPSchedule) -> float:
    """sum_{i=1}^T E[KL_i] with x_hat* and F = identity: (SNR_s - SNR_t)/2 * sum_i Var[x_i | z_t]."""
    grid = time_grid(T, t_eps)
    s_, t_ = schedule(grid[:-1]), schedule(grid[1:])
    snr_gap = torch.exp(s_.log_snr) * -torch.expm1(t_.log_snr - s_.log_snr)  # SNR_s - SNR_t, without cancellation
    pv = posterior_variance(grid[1:], S, schedule).sum(-1)
    return (0.5 * snr_gap * pv).sum().item()


def data_entropy(S: torch.Tensor) -> float:
    """H(N(m, diag S)) = 1/2 log |2 pi e S|."""
    return 0.5 * torch.log(2 * math.pi * math.e * S).sum().item()
