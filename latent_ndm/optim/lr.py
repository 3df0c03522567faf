"""The learning rate of every stage: a linear warm-up, then a cosine decay to a floor."""

from __future__ import annotations

import math

import torch


def warmup_cosine(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.01
) -> torch.optim.lr_scheduler.LambdaLR:
    """lr(step) = lr0 * f(step): f rises linearly from 0 to 1 over `warmup_steps`, then follows a cosine from 1 to
    `min_lr_ratio` at `total_steps` (LSGM: lr 1e-2 -> 1e-4, i.e. min_lr_ratio = 0.01). Step it every batch."""
    if warmup_steps < 0 or total_steps < 1 or not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(f"need warmup_steps >= 0, total_steps >= 1, min_lr_ratio in [0, 1]; got "
                         f"{warmup_steps}, {total_steps}, {min_lr_ratio}")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
