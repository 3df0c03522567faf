"""Step schedules: KL warm-up (beta of the KL term). The learning rate's is `latent_ndm.optim.lr.warmup_cosine`."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace


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

    @classmethod
    def from_portions(cls, max_steps: int, anneal_portion: float, const_portion: float = 0.0,
                      beta_min: float = 1e-4, beta_max: float = 1.0) -> KLWarmup:
        """The warm-up of a run of `max_steps` steps in LSGM's terms: beta = `beta_min` for the first
        `const_portion` of the run (kl_const_portion), then a linear rise to `beta_max` over the next `anneal_portion`
        (kl_anneal_portion), both fractions of the whole run, so that the warm-up scales with it. Steps are rounded.

        As in LSGM, the two shares may add up to more than 1 (its CelebA-HQ-256 VAE: 1e-4 + 1.0): beta then does not
        reach `beta_max` before the run ends. A `const_portion` of 1 or more is refused: beta would never rise."""
        if max_steps < 1 or not (0.0 <= anneal_portion < math.inf and 0.0 <= const_portion < 1.0):
            raise ValueError(f"the KL warm-up is given in shares of the run: it needs trainer.max_steps >= 1, "
                             f"stage.kl_warmup.anneal_portion >= 0 and 0 <= stage.kl_warmup.const_portion < 1 (beta "
                             f"rises after that share), got trainer.max_steps={max_steps}, anneal_portion="
                             f"{anneal_portion}, const_portion={const_portion}")
        return cls(warmup_steps=round(anneal_portion * max_steps), hold_steps=round(const_portion * max_steps),
                   beta_min=beta_min, beta_max=beta_max)

    @property
    def end_step(self) -> int:
        """The first step at which beta = beta_max."""
        return self.hold_steps + self.warmup_steps

    def restarted(self, at_step: int, steps: int) -> KLWarmup:
        """The warm-up run again from `at_step`: beta back at beta_min there, rising to beta_max over `steps`."""
        return replace(self, warmup_steps=int(steps), hold_steps=int(at_step))

    def __call__(self, step: int) -> float:
        if self.warmup_steps == 0:
            return self.beta_max if step >= self.hold_steps else self.beta_min
        frac = (step - self.hold_steps) / self.warmup_steps
        return min(max(self.beta_min + (self.beta_max - self.beta_min) * frac, self.beta_min), self.beta_max)
