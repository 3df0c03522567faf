"""Step schedules: KL warm-up (beta of the KL term). The learning rate's is `latent_ndm.optim.lr.warmup_cosine`,
re-exported here under the name that runs saved before it moved give as their scheduler target."""

from __future__ import annotations

from dataclasses import dataclass

from latent_ndm.optim.lr import warmup_cosine

__all__ = ["KLWarmup", "warmup_cosine"]


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
