"""User-facing failures of a training run: the message is one sentence, printed without a traceback."""

from __future__ import annotations


class TrainingError(Exception):
    """An expected failure caused by the configuration, the data or the environment (not a bug)."""


class NonFiniteLossError(TrainingError):
    """A loss term or the gradient became inf/NaN; training stopped before the optimizer step."""
