"""Building blocks of the DDPM/ADM U-Net, all safe under forward-mode AD and reverse-over-forward.

Every op here (Conv2d, GroupNorm, SiLU, nearest upsampling, einsum, softmax, cat) has a forward-mode
derivative and no tensor that needs grad is modified in place. Attention is written out with einsum and
a composite softmax rather than a fused kernel (the fused flash / memory-efficient CUDA kernels may lack
a forward-mode derivative), and torch's native softmax breaks backward through a
`torch.autograd.forward_ad` tangent with an in-place error (pytorch/pytorch#162350).

Activation checkpointing (`checkpointed`) also works when the block inputs carry a forward-mode tangent
from `torch.func.jvp`: plain `torch.utils.checkpoint` fails there (the recomputation during backward runs
without the tangents and saves a different number of tensors), so we checkpoint the pair (output,
tangent) computed by an explicit `torch.func.jvp` of the block instead. Where torch cannot checkpoint at
all (inside torch.func.vjp / grad / jacrev, or a user-level forward_ad level) the block runs unchecked.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable

import torch
from torch import nn
from torch.autograd import forward_ad as fwAD
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint


def group_count(channels: int, num_groups: int) -> int:
    """The largest divisor of `channels` that is <= `num_groups` (the GroupNorm group count)."""
    if num_groups < 1:
        raise ValueError(f"num_groups must be >= 1, got {num_groups}")
    return max(g for g in range(1, min(num_groups, channels) + 1) if channels % g == 0)


def zero_module(module: nn.Module) -> nn.Module:
    """Set every parameter of `module` to zero and return it."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def softmax(logits: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """softmax(z)_i = exp(z_i - m) / sum_j exp(z_j - m), m = max_j z_j, in at least float32.

    Composite ops only, so forward mode, reverse mode and reverse-over-forward all work. m is detached:
    softmax does not depend on the shift, so this changes neither the value nor any derivative.
    """
    z = logits.to(torch.promote_types(logits.dtype, torch.float32))
    e = torch.exp(z - z.amax(dim=dim, keepdim=True).detach())
    return e / e.sum(dim=dim, keepdim=True)


# RuntimeErrors raised (before any computation) by contexts in which checkpointing cannot run; there we
# fall back to the plain call: a user-level forward_ad level (torch.func.jvp cannot nest in it), and the
# reverse-mode torch.func transforms (vjp, grad, jacrev), which reject saved-tensor hooks.
_CANNOT_CHECKPOINT = ("Nested forward mode AD", "don't yet support saved tensor hooks")


def _tangent(x: torch.Tensor) -> torch.Tensor | None:
    return fwAD.unpack_dual(x).tangent


def _checkpoint_dual(fn: Callable[..., torch.Tensor], inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """checkpoint(fn); when inputs carry forward tangents dx, the dual of checkpoint(jvp(fn))(x, dx)."""
    unpacked = [fwAD.unpack_dual(x) for x in inputs]
    idx = [i for i, u in enumerate(unpacked) if u.tangent is not None]
    if not idx:
        return checkpoint(fn, *inputs, use_reentrant=False)
    primals = tuple(u.primal for u in unpacked)
    tangents = tuple(unpacked[i].tangent for i in idx)
    n = len(primals)

    def primal_and_tangent(*args: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        full = list(args[:n])

        def fn_of_dual_inputs(*sub: torch.Tensor) -> torch.Tensor:
            xs = list(full)
            for i, s in zip(idx, sub, strict=True):
                xs[i] = s
            return fn(*xs)

        return torch.func.jvp(fn_of_dual_inputs, tuple(full[i] for i in idx), tuple(args[n:]))

    y, dy = checkpoint(primal_and_tangent, *primals, *tangents, use_reentrant=False)
    return fwAD.make_dual(y, dy)


def checkpointed(fn: Callable[..., torch.Tensor], inputs: tuple[torch.Tensor, ...],
                 params: Iterable[torch.Tensor]) -> torch.Tensor:
    """fn(*inputs) with activation checkpointing, also under torch.func.jvp.

    * no input carries a tangent: `checkpoint(fn, *inputs, use_reentrant=False)`;
    * some inputs carry tangents dx: (y, dy) = checkpoint(jvp(fn))(x, dx) and the dual (y, dy) is returned,
      so both y and dy are recomputed in backward and reverse-over-forward gradients are exact;
    * a parameter carries a tangent (jvp w.r.t. parameters): fn(*inputs), no checkpointing;
    * inside a user-level `torch.autograd.forward_ad.dual_level` or torch.func.vjp / grad / jacrev:
      fn(*inputs), no checkpointing, with a warning (see `_CANNOT_CHECKPOINT`).
    """
    if any(_tangent(p) is not None for p in params):
        return fn(*inputs)
    try:
        return _checkpoint_dual(fn, inputs)
    except RuntimeError as err:
        if not any(msg in str(err) for msg in _CANNOT_CHECKPOINT):
            raise
        reason = str(err).strip().splitlines()[0]
        warnings.warn(f"activation checkpointing is skipped in this autograd context ({reason})", stacklevel=3)
        return fn(*inputs)


class ResBlock(nn.Module):
    """x + h for x of shape (B, C_in, H, W) and the time code emb of shape (B, emb_dim); out (B, C_out, H, W).

        h = Conv(Drop(SiLU(GN(Conv(SiLU(GN(x)))) * (1 + gamma) + beta)))   (scale_shift=True)
        h = Conv(Drop(SiLU(GN(Conv(SiLU(GN(x))) + beta))))                 (scale_shift=False)

    with (gamma, beta) = Linear(SiLU(emb)). The last Conv starts at zero (ADM), so the block starts as the
    (1x1-projected) identity.
    """

    def __init__(self, in_channels: int, out_channels: int, emb_dim: int, dropout: float = 0.0,
                 num_groups: int = 32, scale_shift: bool = True, checkpointing: bool = False) -> None:
        super().__init__()
        self.scale_shift = scale_shift
        self.checkpointing = checkpointing
        self.norm1 = nn.GroupNorm(group_count(in_channels, num_groups), in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, (2 if scale_shift else 1) * out_channels)
        self.norm2 = nn.GroupNorm(group_count(out_channels, num_groups), out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_module(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.checkpointing and torch.is_grad_enabled():
            return checkpointed(self._forward, (x, emb), self.parameters())
        return self._forward(x, emb)

    def _forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        e = self.emb_proj(F.silu(emb))[:, :, None, None]  # (B, k * C_out, 1, 1)
        if self.scale_shift:
            gamma, beta = e.chunk(2, dim=1)
            h = self.norm2(h) * (1 + gamma) + beta
        else:
            h = self.norm2(h + e)
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """x + Proj(MHA(GN(x))) over the H*W positions, x of shape (B, C, H, W), C divisible by num_heads.

    For each head with q, k, v of shape (d, N), N = H W, d = C / num_heads:
        A = softmax_j(q_i . k_j / sqrt(d)),   out_i = sum_j A_ij v_j
    written with einsum + a composite softmax (in at least float32), which supports forward-mode AD and
    its backward on every device. Proj starts at zero, so the block starts as the identity.
    """

    def __init__(self, channels: int, num_heads: int = 1, num_groups: int = 32,
                 checkpointing: bool = False) -> None:
        super().__init__()
        if num_heads < 1 or channels % num_heads != 0:
            raise ValueError(f"num_heads={num_heads} must divide channels={channels}")
        self.num_heads = num_heads
        self.checkpointing = checkpointing
        self.norm = nn.GroupNorm(group_count(channels, num_groups), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = zero_module(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.checkpointing and torch.is_grad_enabled():
            return checkpointed(self._forward, (x,), self.parameters())
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, hgt, wid = x.shape
        d = c // self.num_heads
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.num_heads, d, hgt * wid)
        q, k, v = qkv.unbind(dim=1)  # each (B, heads, d, N)
        scale = d**-0.25  # split 1/sqrt(d) between q and k to keep half-precision logits small
        logits = torch.einsum("bhdi,bhdj->bhij", q * scale, k * scale)  # (B, heads, N, N)
        attn = softmax(logits, dim=-1).to(v.dtype)
        out = torch.einsum("bhij,bhdj->bhdi", attn, v).reshape(b, c, hgt, wid)
        return x + self.proj(out)


class Downsample(nn.Module):
    """Strided 3x3 conv: (B, C, H, W) -> (B, C, H/2, W/2)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)
