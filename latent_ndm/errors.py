"""The user-facing failures of latent_ndm: expected errors caused by the configuration, the data or the environment
(not bugs). Their message is one sentence naming the cause and the fix; the command-line entry points print it
without a traceback and exit with status 1 (`latent_ndm.cli.run_or_exit`)."""

from __future__ import annotations


class UserError(Exception):
    """An expected failure a user can fix; the message says how."""


class TrainingError(UserError):
    """A training run cannot start or continue (configuration, data, checkpoint)."""


class NonFiniteLossError(TrainingError):
    """A loss term or the gradient became inf/NaN; training stopped before the optimizer step."""


class EvaluationError(UserError):
    """`sample` / `evaluate` / `benchmark` cannot run as asked (missing run, statistics, weights, bad option)."""
