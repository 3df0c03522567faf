"""Step schedules: KL warm-up (beta of the KL term) and the learning rate (linear warm-up, cosine decay)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class KLWarmup:
    """beta(step) = clamp(beta_min + (beta_max - beta_min) (step - hold_steps) / warmup_steps, beta_min, beta_max).

    NVAE/LSGM's KL annealing: beta stays at `beta_min` for `hold_steps` (their kl_const_portion), then rises
    linearly to `beta_max` over `warmup_steps` (kl_anneal_portion). `warmup_steps = 0` means beta = beta_max.
    The reported NELBO always uses beta = 1; beta only weights the KL in the training loss.
    """

    warmup_steps: int
    hold_steps: int = 0
    beta_min: float = 1e-4
    beta_max: float = 1.0

    def __post_init__(self) -> None:
        if self.warmup_steps < 0 or self.hold_steps < 0 or not 0.0 <= self.beta_min <= self.beta_max:
            raise ValueError(f"invalid KL warm-up {self}: need steps >= 0 and 0 <= beta_min <= beta_max")

    def __call__(self, step: int) -> float:
        if self.warmup_steps == 0:
            return self.beta_max if step >= self.hold_steps else self.beta_min
        frac = (step - self.hold_steps) / self.warmup_steps
        return min(max(self.beta_min + (self.beta_max - self.beta_min) * frac, self.beta_min), self.beta_max)


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
