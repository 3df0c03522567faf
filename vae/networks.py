"""Convolutional encoder and decoder of the VAE (no time conditioning).

Encoder: conv -> per level `num_res_blocks` residual blocks (+ self-attention at the feature-map sizes in
`attn_resolutions`), a stride-2 downsampling between levels -> middle (res, attn, res) -> GroupNorm, SiLU, conv
to 2 * latent_channels (mean, logvar). With L = len(channel_mult) levels the latent is 2^(L-1) times smaller:
the default (1, 2, 2, 4) maps 256x256 images to 32x32 latents. The decoder mirrors it (num_res_blocks + 1
blocks per level, nearest-neighbour upsampling) and outputs the likelihood parameters.
`checkpoint=True` recomputes residual/attention blocks in the backward pass (activation checkpointing).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.utils.checkpoint import checkpoint as _checkpoint

from latent_ndm.common.blocks import Upsample  # x2 nearest-neighbour, then a 3x3 convolution (shared with the U-Net)


def _norm(channels: int, num_groups: int) -> nn.GroupNorm:
    if channels % num_groups != 0:
        raise ValueError(f"GroupNorm needs channels ({channels}) divisible by num_groups ({num_groups})")
    return nn.GroupNorm(num_groups, channels, eps=1e-6)


class ResBlock(nn.Module):
    """x + conv(SiLU(GN(conv(SiLU(GN(x)))))), with a 1x1 skip when the width changes."""

    def __init__(self, in_ch: int, out_ch: int, num_groups: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _norm(in_ch, num_groups),
            nn.SiLU(),
            nn.Conv2d(in_ch, out_ch, 3, padding=1),
            _norm(out_ch, num_groups),
            nn.SiLU(),
            nn.Dropout(dropout),
            nn.Conv2d(out_ch, out_ch, 3, padding=1),
        )
        self.skip = nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.body(x)


class AttnBlock(nn.Module):
    """Single-head self-attention over the H*W positions, residual."""

    def __init__(self, channels: int, num_groups: int) -> None:
        super().__init__()
        self.norm = _norm(channels, num_groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        q, k, v = rearrange(self.qkv(self.norm(x)), "b (n c) h w -> n b 1 (h w) c", n=3)
        out = F.scaled_dot_product_attention(q, k, v)
        return x + self.proj(rearrange(out, "b 1 (h w) c -> b c h w", h=h, w=w))


class Downsample(nn.Module):
    """Stride-2 3x3 convolution (asymmetric zero pad so that H -> H/2 exactly)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


def _primitives(arguments: dict[str, object]) -> dict[str, object]:
    """A constructor's arguments (its `locals()` at the top of `__init__`) as YAML-safe primitives: `self` and
    `__class__` dropped, tuples as lists. `VAE.config()` stores them; `VAE.from_config()` passes them back."""
    return {k: list(v) if isinstance(v, tuple | list) else v for k, v in arguments.items()
            if k not in ("self", "__class__")}


def _run(blocks: nn.ModuleList, x: torch.Tensor, use_checkpoint: bool) -> torch.Tensor:
    for block in blocks:
        if use_checkpoint and torch.is_grad_enabled() and isinstance(block, ResBlock | AttnBlock):
            x = _checkpoint(block, x, use_reentrant=False)
        else:
            x = block(x)
    return x


def _middle(ch: int, num_groups: int, dropout: float, attention: bool) -> list[nn.Module]:
    attn: list[nn.Module] = [AttnBlock(ch, num_groups)] if attention else []
    return [ResBlock(ch, ch, num_groups, dropout), *attn, ResBlock(ch, ch, num_groups, dropout)]


class Encoder(nn.Module):
    """x (B, in_channels, R, R) -> (mean, logvar), each (B, latent_channels, R / f, R / f), f = 2^(L-1).

    `attn_resolutions` are feature-map sizes (pixels per side) for an input of side `resolution`;
    `mid_attention` adds attention in the middle block (at the latent resolution).
    """

    def __init__(
        self,
        in_channels: int = 3,
        base_channels: int = 64,
        channel_mult: tuple[int, ...] = (1, 2, 2, 4),
        num_res_blocks: int = 2,
        latent_channels: int = 4,
        num_groups: int = 32,
        dropout: float = 0.0,
        attn_resolutions: tuple[int, ...] = (),
        resolution: int = 256,
        mid_attention: bool = True,
        checkpoint: bool = False,
    ) -> None:
        super().__init__()
        if len(channel_mult) < 1 or num_res_blocks < 1:
            raise ValueError("channel_mult needs at least one level and num_res_blocks must be >= 1")
        self.config = _primitives(locals())
        self.latent_channels, self.checkpoint = latent_channels, checkpoint
        self.downsample_factor = 2 ** (len(channel_mult) - 1)
        widths = [base_channels * m for m in channel_mult]
        blocks: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 3, padding=1)]
        ch, res = widths[0], resolution
        for level, width in enumerate(widths):
            for _ in range(num_res_blocks):
                blocks.append(ResBlock(ch, width, num_groups, dropout))
                ch = width
                if res in attn_resolutions:
                    blocks.append(AttnBlock(ch, num_groups))
            if level != len(widths) - 1:
                blocks.append(Downsample(ch))
                res //= 2
        blocks += _middle(ch, num_groups, dropout, mid_attention)
        blocks += [_norm(ch, num_groups), nn.SiLU(), nn.Conv2d(ch, 2 * latent_channels, 3, padding=1)]
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.ndim != 4 or x.shape[-1] % self.downsample_factor or x.shape[-2] % self.downsample_factor:
            raise ValueError(
                f"x must be (B, C, H, W) with H and W divisible by {self.downsample_factor}, got {tuple(x.shape)}"
            )
        mean, logvar = _run(self.blocks, x, self.checkpoint).chunk(2, dim=1)
        return mean, logvar


class Decoder(nn.Module):
    """z (B, latent_channels, r, r) -> likelihood parameters (B, out_channels, r f, r f), mirroring `Encoder`.

    `out_channels` must equal the likelihood's `num_params(...)` (e.g. 100 for a 10-component RGB DML).
    """

    def __init__(
        self,
        out_channels: int,
        base_channels: int = 64,
        channel_mult: tuple[int, ...] = (1, 2, 2, 4),
        num_res_blocks: int = 2,
        latent_channels: int = 4,
        num_groups: int = 32,
        dropout: float = 0.0,
        attn_resolutions: tuple[int, ...] = (),
        resolution: int = 256,
        mid_attention: bool = True,
        checkpoint: bool = False,
    ) -> None:
        super().__init__()
        if len(channel_mult) < 1 or num_res_blocks < 1:
            raise ValueError("channel_mult needs at least one level and num_res_blocks must be >= 1")
        self.config = _primitives(locals())
        self.out_channels, self.latent_channels, self.checkpoint = out_channels, latent_channels, checkpoint
        self.upsample_factor = 2 ** (len(channel_mult) - 1)
        widths = [base_channels * m for m in channel_mult]
        ch, res = widths[-1], resolution // self.upsample_factor
        blocks: list[nn.Module] = [nn.Conv2d(latent_channels, ch, 3, padding=1)]
        blocks += _middle(ch, num_groups, dropout, mid_attention)
        for level in reversed(range(len(widths))):
            for _ in range(num_res_blocks + 1):
                blocks.append(ResBlock(ch, widths[level], num_groups, dropout))
                ch = widths[level]
                if res in attn_resolutions:
                    blocks.append(AttnBlock(ch, num_groups))
            if level != 0:
                blocks.append(Upsample(ch))
                res *= 2
        blocks += [_norm(ch, num_groups), nn.SiLU(), nn.Conv2d(ch, out_channels, 3, padding=1)]
        self.blocks = nn.ModuleList(blocks)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim != 4 or z.shape[1] != self.latent_channels:
            raise ValueError(f"z must be (B, {self.latent_channels}, h, w), got {tuple(z.shape)}")
        return _run(self.blocks, z, self.checkpoint)
