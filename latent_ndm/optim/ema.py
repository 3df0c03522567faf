"""Exponential moving average of a module's weights, as its own module (saved with the LightningModule)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA(nn.Module):
    """theta_ema <- d theta_ema + (1 - d) theta after every optimizer step; buffers are copied.

    With `warmup`, d = min(decay, (1 + n) / (10 + n)) for the n-th update, so early averages do not drag the
    random initialisation along. `module` is a frozen copy (no gradients; it follows the owner's train/eval mode,
    so call `.eval()` before using it outside validation); `num_updates` is a buffer, so the state survives
    checkpoints.

    Args:
        model: the module to track (copied once here).
        decay: the asymptotic decay d in [0, 1).
        warmup: use the warm-up above.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True) -> None:
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay, self.warmup = decay, warmup
        self.module = copy.deepcopy(model).requires_grad_(False)
        self.register_buffer("num_updates", torch.tensor(0, dtype=torch.long))

    def current_decay(self) -> float:
        """The decay the next update will use."""
        n = int(self.num_updates.item())
        return min(self.decay, (1.0 + n) / (10.0 + n)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards `model` (same architecture as the tracked module)."""
        d = self.current_decay()
        ema_params, params = list(self.module.parameters()), [p.detach() for p in model.parameters()]
        if len(ema_params) != len(params):
            raise ValueError("EMA.update got a model with a different set of parameters")
        torch._foreach_lerp_(ema_params, [p.to(e.dtype) for p, e in zip(params, ema_params, strict=True)], 1.0 - d)
        for ema_buffer, buffer in zip(self.module.buffers(), model.buffers(), strict=True):
            ema_buffer.copy_(buffer)
        self.num_updates += 1
