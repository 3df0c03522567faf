"""Sinusoidal features of the diffusion time t in [0, 1].

    omega_k = max_period^(-k / half),          k = 0, ..., half - 1,   half = dim / 2
    e(t)    = [cos(s t omega_0), ..., cos(s t omega_{half-1}), sin(s t omega_0), ..., sin(s t omega_{half-1})]

with s = `scale`. e(t) is smooth (C-infinity) in t with |de/dt| <= s, so the scale sets how fast the
features (and hence a network's output) can vary with t: the denoiser uses the DDPM value s = 1000, the
transform network G_phi of F(x, t) = x + t G_phi(x, t) a small s (1 to 10) so that dF/dt stays moderate.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from latent_ndm.diffusion.checks import math_dtype


class SinusoidalTimeEmbedding(nn.Module):
    """t of shape (B,) -> e(t) of shape (B, dim); computed in float32 (float64 for float64 `t`).

    Has no parameters and no buffers: the frequencies are rebuilt on the device and dtype of `t` at each
    call, so nothing is stored in the state_dict and `.to()` / `.double()` need no special care.
    """

    def __init__(self, dim: int, scale: float = 1000.0, max_period: float = 10000.0) -> None:
        super().__init__()
        if dim < 2 or dim % 2 != 0:
            raise ValueError(f"SinusoidalTimeEmbedding needs an even dim >= 2, got {dim}")
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be finite and > 0, got {scale}")
        if not (math.isfinite(max_period) and max_period > 1):
            raise ValueError(f"max_period must be finite and > 1, got {max_period}")
        self.dim = int(dim)
        self.scale = float(scale)
        self.max_period = float(max_period)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, scale={self.scale}, max_period={self.max_period}"

    def frequencies(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """omega_k = max_period^(-k / half) for k = 0..half-1, shape (half,)."""
        half = self.dim // 2
        k = torch.arange(half, device=device, dtype=dtype)
        return torch.exp(-math.log(self.max_period) / half * k)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """e(t) = [cos(s t omega), sin(s t omega)] of shape (B, dim) for t of shape (B,)."""
        if t.ndim != 1:
            raise ValueError(f"t must have shape (B,), got {tuple(t.shape)}")
        if not t.is_floating_point():
            raise ValueError(f"t must be a floating-point tensor, got {t.dtype}")
        dtype = math_dtype(t)
        omega = self.frequencies(t.device, dtype)
        arg = (self.scale * t.to(dtype))[:, None] * omega[None, :]  # (B, half)
        return torch.cat([torch.cos(arg), torch.sin(arg)], dim=-1)
