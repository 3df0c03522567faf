"""The non-finite guard of both stages: no step is taken on an inf/NaN loss term or gradient, and the run either stops
with one message naming the term (`policy="stop"`) or skips the step (`policy="skip"`)."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import lightning as L
import torch

from latent_ndm.errors import NonFiniteLossError

TERM_NAMES = {"rec": "reconstruction term -log p(x|z)", "kl": "KL term KL(q(z|x) || N(0, I))",
              "lpips": "LPIPS term", "neg_entropy": "negative encoder entropy log q(z|x)",
              "entropy": "encoder entropy", "cross_entropy": "cross-entropy term (the NDM bound)",
              "diff": "NDM diffusion term L_diff", "prior": "NDM prior term L_prior",
              "ndm_rec": "NDM reconstruction term L_rec", "loss": "total loss"}
POLICIES = ("stop", "skip")
log = logging.getLogger(__name__)


class NonFiniteGuard(L.Callback):
    """Before every optimizer step (after the gradients are averaged across processes): if a loss term
    (`pl_module.last_terms`) or the gradient norm is inf/NaN on any process, either raise `NonFiniteLossError`
    naming the term (`policy="stop"`), or skip the step (`policy="skip"`: every gradient is dropped, so the optimizer
    leaves the weights and its moments alone, and `pl_module.skip_step` tells it not to update EMA), stopping after
    `max_skips` skips in a row. The gradient norm (before clipping) is logged as `train/grad_norm` (not checked under
    "16-mixed", whose grad scaler skips such steps by design). `checkpoint_path`, the last good checkpoint, is named
    in the message, and `hint` is appended to it."""

    def __init__(self, checkpoint_path: str | Path | None = None, policy: str = "stop", max_skips: int = 100,
                 hint: str = "") -> None:
        if policy not in POLICIES:
            raise ValueError(f"stage.non_finite must be one of {POLICIES}, got {policy!r}")
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path else None
        self.policy, self.max_skips, self.skips_in_a_row, self.hint = policy, max_skips, 0, hint

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        terms = getattr(pl_module, "last_terms", {})
        bad = [k for k, v in terms.items() if not torch.isfinite(v).all()]
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        check_grads = bool(grads) and str(trainer.precision) != "16-mixed"  # the grad scaler skips those steps
        norm = torch.nn.utils.get_total_norm(grads) if check_grads else torch.zeros((), device=pl_module.device)
        flag = torch.tensor(float(bool(bad) or not torch.isfinite(norm)), device=pl_module.device)
        if trainer.world_size > 1:
            flag = trainer.strategy.reduce(flag, reduce_op="sum")
        if flag.item() == 0:
            self.skips_in_a_row = 0
            if check_grads:
                pl_module.log("train/grad_norm", norm)
            return
        what = (f"the {TERM_NAMES.get(bad[0], bad[0])} ('{bad[0]}') is {terms[bad[0]].item()}" if bad else
                f"the gradient norm is {norm.item()} while every loss term is finite" if not torch.isfinite(norm)
                else "a term on another process")
        self.skips_in_a_row += 1
        if self.policy == "stop" or self.skips_in_a_row > self.max_skips:
            raise_non_finite(trainer.global_step, what, terms, self.checkpoint_path, self.hint)
        for p in pl_module.parameters():
            p.grad = None
        pl_module.skip_step = True
        pl_module.log("train/skipped_steps", float(self.skips_in_a_row))
        log.warning("non-finite loss: step %d skipped (%s)", trainer.global_step, what)


def raise_non_finite(step: int, what: str, terms: dict[str, torch.Tensor], checkpoint_path: Path | None,
                     hint: str = "") -> None:
    """Stop training with one message naming the non-finite term, every term's value and the kept checkpoint."""
    values = ", ".join(f"{k}={v.item():.4g}" for k, v in terms.items())
    raise NonFiniteLossError(
        f"non-finite loss at step {step}: {what} ({values}); training stopped before the optimizer step and "
        f"{kept_checkpoint(checkpoint_path)}." + (f" {hint}" if hint else "")
    )


def kept_checkpoint(checkpoint_path: Path | None) -> str:
    """What a stopped run keeps: its last good checkpoint, named, or that none was written yet."""
    if checkpoint_path is not None and checkpoint_path.is_file():
        return f"the last good checkpoint {checkpoint_path} is kept"
    return "no checkpoint had been written yet, so there is none to resume from"


def guarded_checkpoint(trainer: L.Trainer) -> Path | None:
    """The checkpoint the trainer's `NonFiniteGuard` keeps (None without one)."""
    guards = [c for c in trainer.callbacks if isinstance(c, NonFiniteGuard)]
    return guards[0].checkpoint_path if guards else None


def check_finite_metrics(metrics: dict[str, float], step: int, checkpoint_path: Path | None = None) -> None:
    """Raise NonFiniteLossError naming the first non-finite validation metrics and the checkpoint that is kept (no
    checkpoint of these weights is written)."""
    bad = [k for k, v in metrics.items() if not math.isfinite(v)]
    if bad:
        raise NonFiniteLossError(f"validation of the EMA weights at step {step} gave non-finite "
                                 f"{', '.join(bad[:3])}; {kept_checkpoint(checkpoint_path)}.")
