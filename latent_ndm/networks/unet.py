"""The DDPM/ADM U-Net for images and latents x of shape (B, C, H, W), conditioned on t in [0, 1].

    c = Lin(SiLU(Lin(e(t))))                                     time code, (B, time_dim)
    down:  conv_in, then per level l (resolution R / 2^l): num_res_blocks x [ResBlock(c) (+ Attention)]
           and a Downsample except at the last level; every output is kept as a skip
    mid:   ResBlock(c), Attention, ResBlock(c)
    up:    per level, reversed: (num_res_blocks + 1) x [cat(h, skip) -> ResBlock(c) (+ Attention)]
           and an Upsample except at level 0
    out:   Conv(SiLU(GN(h)))                                     (B, out_channels, H, W)

Attention is applied at the resolutions in `attn_resolutions` (and always in the middle). Blocks are in
`unet_blocks.py`; everything supports `torch.func.jvp` w.r.t. t and back-propagation through the tangent.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from latent_ndm.common.blocks import Upsample
from latent_ndm.networks.embedding import SinusoidalTimeEmbedding
from latent_ndm.networks.unet_blocks import (
    AttentionBlock,
    Downsample,
    ResBlock,
    group_count,
    zero_module,
)


def _run(layers: nn.ModuleList, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
    """Apply a list of blocks in order, passing the time code to the ResBlocks only."""
    for layer in layers:
        h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
    return h


class UNet(nn.Module):
    """net(x, t) for x of shape (B, in_channels, resolution, resolution) and t of shape (B,).

    Returns shape (B, out_channels, resolution, resolution); out_channels defaults to in_channels, so that
    the output can be a denoiser output or G_phi(x, t) in F(x, t) = x + t G_phi(x, t).

    Args:
        in_channels, out_channels: data channels in and out.
        base_channels: channels at level 0; level l has base_channels * channel_mult[l].
        channel_mult: one multiplier per resolution level (len(channel_mult) - 1 downsamplings).
        num_res_blocks: ResBlocks per level on the way down (one more on the way up).
        attn_resolutions: spatial sizes at which self-attention follows each ResBlock.
        resolution: the input height = width the network accepts.
        dropout: dropout inside the ResBlocks.
        num_groups: GroupNorm groups, reduced per layer to the largest divisor of its channel count.
        time_dim: size of the time code c (default 4 * base_channels).
        time_scale: s in the sinusoidal embedding e(t); 1000 for a denoiser, 1-10 for G_phi.
        num_heads: attention heads (must divide the channels at every attention layer).
        zero_init_output: start the output conv at zero, so that net(x, t) = 0 at initialisation.
        checkpointing: recompute ResBlock and attention activations in backward (also under jvp).
        scale_shift: inject the time code as GN(h) (1 + gamma) + beta (ADM) instead of adding it.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        base_channels: int = 64,
        channel_mult: tuple[int, ...] = (1, 2, 2),
        num_res_blocks: int = 2,
        attn_resolutions: tuple[int, ...] = (16,),
        resolution: int = 32,
        dropout: float = 0.0,
        num_groups: int = 32,
        time_dim: int | None = None,
        time_scale: float = 1000.0,
        num_heads: int = 1,
        zero_init_output: bool = True,
        checkpointing: bool = False,
        scale_shift: bool = True,
    ) -> None:
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        time_dim = 4 * base_channels if time_dim is None else time_dim
        channel_mult = tuple(channel_mult)
        attn_resolutions = tuple(attn_resolutions)
        self._validate(in_channels, out_channels, base_channels, channel_mult, num_res_blocks,
                       attn_resolutions, resolution, dropout, time_dim)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.resolution = resolution

        emb_in = base_channels + base_channels % 2  # the sinusoidal embedding needs an even size
        self.time_embed = SinusoidalTimeEmbedding(emb_in, scale=time_scale)
        self.time_mlp = nn.Sequential(nn.Linear(emb_in, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim))

        def res(c_in: int, c_out: int) -> ResBlock:
            return ResBlock(c_in, c_out, time_dim, dropout, num_groups, scale_shift, checkpointing)

        def attn(c: int) -> AttentionBlock:
            return AttentionBlock(c, num_heads, num_groups, checkpointing)

        self.conv_in = nn.Conv2d(in_channels, base_channels, 3, padding=1)
        self.down = nn.ModuleList()
        skips, ch, size = [base_channels], base_channels, resolution
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers = [res(ch, base_channels * mult)]
                ch = base_channels * mult
                if size in attn_resolutions:
                    layers.append(attn(ch))
                self.down.append(nn.ModuleList(layers))
                skips.append(ch)
            if level < len(channel_mult) - 1:
                self.down.append(nn.ModuleList([Downsample(ch)]))
                skips.append(ch)
                size //= 2

        self.mid = nn.ModuleList([res(ch, ch), attn(ch), res(ch, ch)])

        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks + 1):
                layers = [res(ch + skips.pop(), base_channels * mult)]
                ch = base_channels * mult
                if size in attn_resolutions:
                    layers.append(attn(ch))
                if level > 0 and i == num_res_blocks:
                    layers.append(Upsample(ch))
                    size *= 2
                self.up.append(nn.ModuleList(layers))

        self.norm_out = nn.GroupNorm(group_count(ch, num_groups), ch)
        self.conv_out = nn.Conv2d(ch, out_channels, 3, padding=1)
        if zero_init_output:
            zero_module(self.conv_out)

    @staticmethod
    def _validate(in_channels: int, out_channels: int, base_channels: int, channel_mult: tuple[int, ...],
                  num_res_blocks: int, attn_resolutions: tuple[int, ...], resolution: int, dropout: float,
                  time_dim: int) -> None:
        if min(in_channels, out_channels, base_channels, time_dim) < 1:
            raise ValueError("in_channels, out_channels, base_channels and time_dim must all be >= 1")
        if not channel_mult or min(channel_mult) < 1:
            raise ValueError(f"channel_mult must be a non-empty tuple of ints >= 1, got {channel_mult}")
        if num_res_blocks < 1:
            raise ValueError(f"num_res_blocks must be >= 1, got {num_res_blocks}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        factor = 2 ** (len(channel_mult) - 1)
        if resolution < factor or resolution % factor != 0:
            raise ValueError(f"resolution={resolution} must be a multiple of 2^(len(channel_mult) - 1)={factor}")
        reachable = {resolution // 2**level for level in range(len(channel_mult))}
        missing = sorted(set(attn_resolutions) - reachable)
        if missing:
            raise ValueError(f"attn_resolutions {missing} are never reached; the levels have sizes "
                             f"{sorted(reachable, reverse=True)}")

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Output of shape (B, out_channels, H, W) for x of shape (B, in_channels, H, W), t of shape (B,)."""
        self._check_inputs(x, t)
        emb = self.time_mlp(self.time_embed(t).to(self.conv_in.weight.dtype))  # (B, time_dim)
        h = self.conv_in(x)
        hs = [h]
        for layers in self.down:
            h = _run(layers, h, emb)
            hs.append(h)
        h = _run(self.mid, h, emb)
        for layers in self.up:
            h = _run(layers, torch.cat([h, hs.pop()], dim=1), emb)
        return self.conv_out(F.silu(self.norm_out(h)))

    def _check_inputs(self, x: torch.Tensor, t: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"UNet expects x of shape (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        if tuple(x.shape[-2:]) != (self.resolution, self.resolution):
            raise ValueError(f"UNet was built for {self.resolution}x{self.resolution} inputs, "
                             f"got {x.shape[-2]}x{x.shape[-1]}")
        if t.ndim != 1 or t.shape[0] != x.shape[0]:
            raise ValueError(f"t must have shape ({x.shape[0]},), got {tuple(t.shape)}")
