"""A time-conditioned residual MLP for points x of shape (B, dim) (toy data, low-dim latents).

    c    = W_t2 SiLU(W_t1 e(t))                                   time code, (B, hidden)
    h_0  = W_in x                                                 (B, hidden)
    h_l  = h_{l-1} + W_2 SiLU((1 + gamma_l(c)) * SiLU(W_1 LN(h_{l-1})) + beta_l(c)),   l = 1..depth
    out  = W_out SiLU(LN(h_depth))                                (B, dim)

e(t) is the sinusoidal embedding of `embedding.py`; (gamma_l, beta_l) is a FiLM of the time code per block.
Every op (Linear, SiLU, and a LayerNorm written with elementary ops) supports forward-mode AD, so
d out / dt is available through `torch.func.jvp` and can itself be back-propagated (reverse-over-forward).
torch's fused `nn.LayerNorm` is NOT used: its forward-mode derivative treats the saved mean and 1/std as
constants in reverse mode, so gradients of d out / dt w.r.t. anything before the norm come out wrong
(checked against finite differences in tests/test_networks.py; see also pytorch/pytorch#196700).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from latent_ndm.networks.embedding import SinusoidalTimeEmbedding


class LayerNorm(nn.Module):
    """LN(h) = (h - mean(h)) / sqrt(var(h) + eps) * weight + bias over the last dim of h, shape preserved.

    Composite ops only, so that the reverse-mode derivative of its jvp is exact (unlike `nn.LayerNorm`).
    """

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        centred = h - h.mean(dim=-1, keepdim=True)
        var = centred.square().mean(dim=-1, keepdim=True)
        return centred * torch.rsqrt(var + self.eps) * self.weight + self.bias


class FiLMResidualBlock(nn.Module):
    """h + W_2 SiLU((1 + gamma(c)) * SiLU(W_1 LN(h)) + beta(c)) for h of shape (B, hidden), c of (B, hidden)."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.norm = LayerNorm(hidden)
        self.fc1 = nn.Linear(hidden, hidden)
        self.film = nn.Linear(hidden, 2 * hidden)
        self.fc2 = nn.Linear(hidden, hidden)

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.film(F.silu(c)).chunk(2, dim=-1)
        a = F.silu(self.fc1(self.norm(h)))
        a = a * (1 + gamma) + beta
        return h + self.fc2(F.silu(a))


class TimeMLP(nn.Module):
    """net(x, t) for x of shape (B, dim) and t of shape (B,); returns shape (B, out_dim), out_dim = dim by default.

    Args:
        dim: data dimension.
        out_dim: output size (default dim); e.g. K * dim for the K heads of a SeparableTransform.
        hidden: width of the residual stream.
        depth: number of FiLM residual blocks (>= 1).
        time_dim: size of the sinusoidal time embedding (even).
        time_scale: s in e(t) = [cos(s t omega), sin(s t omega)]; small (1-10) for the transform network.
        zero_init_output: start the last Linear at zero, so that net(x, t) = 0 at initialisation.
    """

    def __init__(
        self,
        dim: int,
        hidden: int = 256,
        depth: int = 3,
        time_dim: int = 64,
        time_scale: float = 1000.0,
        zero_init_output: bool = True,
        out_dim: int | None = None,
    ) -> None:
        super().__init__()
        if dim < 1 or hidden < 1:
            raise ValueError(f"TimeMLP needs dim >= 1 and hidden >= 1, got dim={dim}, hidden={hidden}")
        if depth < 1:
            raise ValueError(f"TimeMLP needs depth >= 1, got {depth}")
        self.dim = int(dim)
        self.time_embed = SinusoidalTimeEmbedding(time_dim, scale=time_scale)
        self.time_mlp = nn.Sequential(nn.Linear(time_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.inp = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList(FiLMResidualBlock(hidden) for _ in range(depth))
        self.out_norm = LayerNorm(hidden)
        self.out = nn.Linear(hidden, dim if out_dim is None else int(out_dim))
        if zero_init_output:
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Output of shape (B, out_dim), in the dtype of the network's parameters (autocast aside)."""
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"TimeMLP expects x of shape (B, {self.dim}), got {tuple(x.shape)}")
        if t.ndim != 1 or t.shape[0] != x.shape[0]:
            raise ValueError(f"t must have shape ({x.shape[0]},), got {tuple(t.shape)}")
        e = self.time_embed(t).to(self.inp.weight.dtype)  # (B, time_dim)
        c = self.time_mlp(e)  # (B, hidden)
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, c)
        return self.out(F.silu(self.out_norm(h)))
