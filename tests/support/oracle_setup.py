"""Shared setting of docs/MATH.md section 9: VP b0 = 0.1, b1 = 20, D = 3, data N(m, diag S), t_eps = 1e-3."""

import torch

from latent_ndm.diffusion.transforms import JvpTransform

f64 = torch.float64
M = torch.tensor([0.5, -1.0, 0.2], dtype=f64)
S = torch.tensor([0.3, 1.5, 0.05], dtype=f64)
T_EPS = 1e-3


def gaussian_data(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return M + S.sqrt() * torch.randn(n, 3, dtype=f64, generator=g)


class CurvedF(JvpTransform):
    """F(x, t) = x + t (1 - t) tanh(2x) + 0.3 sin(3t) x^2 (oracle 3)."""

    def forward(self, x, t):
        t = t[:, None]
        return x + t * (1 - t) * torch.tanh(2 * x) + 0.3 * torch.sin(3 * t) * x**2


class AffineF(JvpTransform):
    """F(x, t) = a(t) x + b(t), a(t) = 1 + 0.5 sin(2t), b(t) = 0.2 t^2 (oracles 2 and 6)."""

    def __init__(self, with_shift: bool = True, jvp_method: str = "forward"):
        super().__init__(jvp_method)
        self.with_shift = with_shift

    @staticmethod
    def a(t):
        return 1 + 0.5 * torch.sin(2 * t)

    @staticmethod
    def da(t):
        return torch.cos(2 * t)

    def forward(self, x, t):
        b = 0.2 * t**2 if self.with_shift else torch.zeros_like(t)
        return self.a(t)[:, None] * x + b[:, None]
