"""User-facing failures of a training run: the message is one sentence, printed without a traceback."""

from __future__ import annotations

import math


class TrainingError(Exception):
    """An expected failure caused by the configuration, the data or the environment (not a bug)."""


class NonFiniteLossError(TrainingError):
    """A loss term or the gradient became inf/NaN; training stopped before the optimizer step."""


def check_finite_metrics(metrics: dict[str, float], step: int) -> None:
    """Raise NonFiniteLossError naming the first non-finite validation metrics (the last good checkpoint stays)."""
    bad = [k for k, v in metrics.items() if not math.isfinite(v)]
    if bad:
        raise NonFiniteLossError(f"validation of the EMA weights at step {step} gave non-finite "
                                 f"{', '.join(bad[:3])}; the last good checkpoint is kept.")
