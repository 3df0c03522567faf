"""Stand-ins for the learned-noise (NFDM) oracles of docs/MATH.md section 11: noise networks (zero, x-independent,
random) and, for the x-independent one, the exact denoiser and the marginal q(z_t) of Gaussian data."""

import torch
from torch import nn

from latent_ndm.diffusion.checks import append_dims
from latent_ndm.diffusion.noise import boundary_weight
from latent_ndm.diffusion.schedule import VPSchedule
from tests.support.oracle_setup import M, S, f64

sch = VPSchedule()


class ZeroRho(nn.Module):
    def forward(self, x, t):
        return torch.zeros_like(x)


class TimeRho(nn.Module):
    """rho(t) = 0.8 sin(3t) + 0.5, the same for every x and dimension: an x-independent noise schedule."""

    @staticmethod
    def c(t):
        return 0.8 * torch.sin(3 * t) + 0.5

    @staticmethod
    def dc(t):
        return 2.4 * torch.cos(3 * t)

    def forward(self, x, t):
        return append_dims(self.c(t), x.ndim) * torch.ones_like(x)


class RandomRho(nn.Module):
    """A fixed random two-layer network of (x, t), per dimension."""

    def __init__(self, d=3, seed=5):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w1 = torch.randn(d + 1, 16, dtype=f64, generator=g)
        self.w2 = 0.5 * torch.randn(16, d, dtype=f64, generator=g)

    def forward(self, x, t):
        return torch.tanh(torch.cat([x, t[:, None]], 1) @ self.w1) @ self.w2


def L_of_t(t):
    """L(t) = t (1 - t) rho(t) for TimeRho, and dL/dt, computed by hand."""
    w, dw = boundary_weight(t), 1 - 2 * t
    return w * TimeRho.c(t), dw * TimeRho.c(t) + w * TimeRho.dc(t)


class ExactNFDMDenoiser(nn.Module):
    """E[x | z_t] for x ~ N(M, diag S) and z_t = alpha_t x + sigma_t exp(L(t)) eps (F = identity, L = L_of_t)."""

    def forward(self, z, t):
        s = sch(t)
        a = s.alpha[:, None]
        var = s.sigma2[:, None] * torch.exp(2 * L_of_t(t)[0])[:, None]
        return M + a * S / (a**2 * S + var) * (z - a * M)


def marginal(t):
    """Mean M(t), variance V(t) of q(z_t) per dimension, and their time derivatives, for x ~ N(M, diag S)."""
    s = sch(t)
    L, dL = L_of_t(t)
    a, r = s.alpha[:, None], s.r[:, None]
    var_n = s.sigma2[:, None] * torch.exp(2 * L)[:, None]  # sigma(t)^2
    dvar_n = var_n * (s.d_sigma2 / s.sigma2 + 2 * dL)[:, None]
    V = a**2 * S + var_n
    return a * M, V, r * a * M, 2 * r * a**2 * S + dvar_n
