"""The collapse watch during `stage=vae`: after the KL warm-up, a validation whose latent counts as collapsed (see
`vae.diagnostics.collapse_verdict`) is said at once, in one line with the override to rerun, and then, by policy:

- ``warn``: training goes on (the verdict is in the run's report too);
- ``stop``: the run ends after this validation (its checkpoint and export are written), and the command exits 1;
- ``extend``: once per run, the KL warm-up is run again from here (beta back at beta_min, rising to beta_max over
  `extend_portion` of the run) and the run is made that many steps longer, so that its stretch at beta = 1 keeps its
  length. The learning-rate schedule is not stretched: the added steps run at its final rate.

Before the warm-up ends a weak latent is expected (beta < 1 pays little for the KL, and an early decoder has not
learned to read the latent yet), so nothing is said then: under the default warm-up, which spans the whole run, the
watch judges at the last validation; with a shorter `anneal_portion`, from the end of the warm-up on; with one that
ends after the run (LSGM's shares, e.g. const 1e-4 + anneal 1.0), at the run's last step.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import lightning as L

from vae.diagnostics import collapse_verdict

POLICIES = ("warn", "stop", "extend")
log = logging.getLogger(__name__)


def rerun_hint(name: str, max_steps: int, anneal_portion: float, const_portion: float = 0.0) -> str:
    """The override that reruns a collapsed run twice as long, with a warm-up twice as long (in steps: its share
    doubled, 0.5 from none, as far as the run's end after the `const_portion` hold allows, never shorter than it
    was), under a new name. The share is floored to 3 decimals, so that hold and warm-up still fit in the run."""
    room = math.floor(round((1.0 - const_portion) * 1000, 6)) / 1000
    longer = max(anneal_portion, min(room, round(2 * anneal_portion, 3) or 0.5))
    anneal = "" if longer == anneal_portion else f" stage.kl_warmup.anneal_portion={longer}"
    return (f"rerun the same command with `trainer.max_steps={2 * max_steps}{anneal} name={name}-longer`, or add "
            "`stage.on_collapse=extend`")


class CollapseWatch(L.Callback):
    """Reads `pl_module.val_metrics` (the validation's collapse watch) at every validation after the warm-up and acts
    by `policy`. `hint` is the rerun sentence; `extend_steps`: the length of a rerun warm-up. Its state (the step at
    which the warm-up was rerun, if it was, and the added length) is kept in checkpoints, so that a resumed run
    continues the longer run."""

    def __init__(self, policy: str = "warn", hint: str = "", extend_steps: int = 0) -> None:
        if policy not in POLICIES:
            raise ValueError(f"stage.on_collapse must be one of {list(POLICIES)}, got {policy!r}")
        if policy == "extend" and extend_steps < 1:
            raise ValueError(f"stage.on_collapse=extend needs stage.extend_portion * trainer.max_steps >= 1 step, "
                             f"got {extend_steps}")
        self.policy, self.hint, self.extend_steps = policy, hint, int(extend_steps)
        self.extended_at: int | None = None
        self.stopped = False

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        m = getattr(pl_module, "val_metrics", {})
        judged_from = min(pl_module.kl_warmup.end_step, trainer.max_steps)  # a warm-up longer than the run: its end
        if trainer.sanity_checking or not m or trainer.global_step < judged_from:
            return
        verdict, what = collapse_verdict(m), f"at step {trainer.global_step} this VAE"
        if verdict is None:
            return
        if self.policy == "extend" and self.extended_at is None:
            self._extend(trainer, pl_module, trainer.global_step)
            if trainer.is_global_zero:
                log.warning("%s; the KL warm-up runs again over %d more steps (stage.on_collapse=extend), to step %d",
                            verdict.headline(what), self.extend_steps, trainer.max_steps)
            return
        if trainer.is_global_zero:
            log.warning("%s; %s", verdict.headline(what), self.hint)
        if self.policy == "stop":
            self.stopped = True
            trainer.should_stop = True

    def _extend(self, trainer: L.Trainer, pl_module: L.LightningModule, at_step: int) -> None:
        self.extended_at = at_step
        pl_module.kl_warmup = pl_module.kl_warmup.restarted(at_step, self.extend_steps)
        trainer.fit_loop.epoch_loop.max_steps = trainer.max_steps + self.extend_steps

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.extended_at is not None and pl_module.kl_warmup.hold_steps != self.extended_at:  # a resumed run
            at_step, self.extended_at = self.extended_at, None
            self._extend(trainer, pl_module, at_step)

    def state_dict(self) -> dict[str, Any]:
        return {"extended_at": self.extended_at, "extend_steps": self.extend_steps}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.extended_at = state_dict.get("extended_at")
        self.extend_steps = int(state_dict.get("extend_steps", self.extend_steps))
