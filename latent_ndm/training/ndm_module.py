"""`NDMModule`: the Lightning module of `stage=ndm` (an NDM prior on VAE latents, disjoint or joint, EMA weights).

Training minimises `NDMTrainingLoss`; validation evaluates the EMA weights (the ones exported) with
`NDMValidationMetrics` (the latent NELBO in bits/dim and its parts). The noise of every micro-batch comes from a
generator seeded by (seed, rank, step, batch index), so a resumed run draws what the uninterrupted run would have.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch

from latent_ndm.diffusion.objectives import Objective
from latent_ndm.model import LatentModel, NDMPrior
from latent_ndm.model.latent import ndm_parameters
from latent_ndm.optim.ema import EMA
from latent_ndm.training.callbacks.checkpoint import BOUND_METRIC
from latent_ndm.training.callbacks.non_finite import check_finite_metrics, guarded_checkpoint
from latent_ndm.training.ndm_loss import NDMTrainingLoss, NDMValidationMetrics, StraightValidationMetrics
from latent_ndm.training.step_noise import seeded_step

OptimizerFactory = Callable[..., torch.optim.Optimizer]  # param groups -> optimizer (a Hydra `_partial_`)
SchedulerFactory = Callable[..., Any]  # optimizer -> LR scheduler stepped every batch


class NDMModule(L.LightningModule):
    """Args:
    model: the `LatentModel` (VAE and `NDMPrior`: denoiser, transform, and the training objective).
    loss: the training loss (`NDMTrainingLoss`, which knows the mode).
    val_objective: the NDM objective of the validation bound (e.g. a smaller t_eps).
    optimizer: `param_groups -> Optimizer`; scheduler: `optimizer -> LRScheduler` (stepped per batch) or None.
    lr: learning rate per part: {"denoiser", "transform", "vae"} ("vae" is used in joint mode only).
    ema_decay, ema_warmup: see `EMA`.
    seed: seeds the per-step noise generators.
    """

    def __init__(self, model: LatentModel, loss: NDMTrainingLoss, val_objective: Objective,
                 optimizer: OptimizerFactory, scheduler: SchedulerFactory | None = None,
                 lr: dict[str, float] | None = None, ema_decay: float = 0.999, ema_warmup: bool = True,
                 seed: int = 0) -> None:
        super().__init__()
        self.model, self.loss, self.val_objective = model, loss, val_objective
        self.joint = loss.mode == "joint"
        if not self.joint:
            model.vae.requires_grad_(False).eval()
        self.ema = EMA(model, ema_decay, ema_warmup)
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.part_lr, self.seed = dict(lr or {}), seed
        self.last_terms: dict[str, torch.Tensor] = {}
        self.val_metrics: dict[str, float] = {}
        self.skip_step = False  # set by the non-finite guard: the optimizer step was skipped
        self._ema_step = -1
        self._val: NDMValidationMetrics | StraightValidationMetrics | None = None

    def train(self, mode: bool = True) -> NDMModule:
        super().train(mode)
        if not self.joint:
            self.model.vae.eval()  # frozen: no dropout, no norm-statistics updates
        return self

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        with seeded_step(self.seed, self.global_rank, self.global_step, batch_idx, self.device) as generator:
            out = self.loss(self.model, batch, generator)
        self.last_terms = {**{k: v.detach() for k, v in out.terms.items()}, "loss": out.loss.detach()}
        size = _batch_size(batch)
        logged = out.logged()
        main = next(iter(logged))
        self.log(f"train/{main}", logged.pop(main), prog_bar=True, batch_size=size)
        self.log_dict({f"train/{k}": v for k, v in logged.items()}, batch_size=size)
        return out.loss

    def on_train_start(self) -> None:
        self._ema_step = self.global_step

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.global_step > self._ema_step:  # an optimizer step was taken (not an accumulation micro-batch)
            if not self.skip_step:
                self.ema.update(self.model)
            self._ema_step, self.skip_step = self.global_step, False

    @property
    def is_bound(self) -> bool:
        """False for a prior whose objective is not a bound (the straight mode): validation reports its terms, not a
        NELBO."""
        return bool(getattr(self.model.prior, "is_bound", True))

    @property
    def regression_metric(self) -> str:
        """The name validation reports a non-bound objective's total under (`<result name>`, e.g. straight_loss)."""
        return regression_metric(self.val_objective)

    def on_validation_epoch_start(self) -> None:
        self._val = NDMValidationMetrics() if self.is_bound else StraightValidationMetrics(self.regression_metric)
        self.ema.module.eval()

    def validation_step(self, x: Any, batch_idx: int) -> None:
        """Images: the latent NELBO and its parts; pre-encoded latents: every part but rec (no images); a straight-mode
        prior: its regression's terms."""
        device = x["mean"].device if isinstance(x, dict) else x.device
        generator = torch.Generator(device=device).manual_seed(batch_idx)  # the same noise every validation
        model = self.validation_model()
        with torch.inference_mode(False), torch.no_grad():  # forward-mode AD (the jvp of F) needs normal tensors
            if isinstance(x, dict):
                latents = {k: x[k].clone() for k in ("mean", "logvar")}
                self._val.update_latents(model, latents, self.loss.num_dims, generator)
            else:
                self._val.update(model, x.clone(), generator)

    def validation_model(self) -> LatentModel:
        """The EMA model with the validation bound as its prior's objective (networks shared, not copied)."""
        prior = self.ema.module.prior
        assert isinstance(prior, NDMPrior)
        return self.ema.module.with_prior(prior.with_objective(self.val_objective))

    def on_validation_epoch_end(self) -> None:
        metrics = self._val.compute(lambda t: self.trainer.strategy.reduce(t, reduce_op="sum")) if self._val else {}
        self._val = None
        if not metrics or self.trainer.sanity_checking:
            return
        check_finite_metrics(metrics, self.global_step, guarded_checkpoint(self.trainer))
        self.val_metrics = {"step": self.global_step, **metrics}
        if not self.is_bound:  # not a bound: nothing is logged as one
            main = self.regression_metric
        else:
            main = "nelbo_bpd" if "nelbo_bpd" in metrics else "kl_bpd"  # kl: pre-encoded latents, no rec term
        self.log(f"val/{main}", metrics[main], prog_bar=True, sync_dist=True)  # values already reduced
        if self.is_bound:
            self.log(BOUND_METRIC, metrics[main], sync_dist=True)
        self.log_dict({f"val/{k}": v for k, v in metrics.items() if k != main}, sync_dist=True)

    def configure_optimizers(self) -> Any:
        parts = ndm_parameters(self.model)
        if self.joint:
            parts["vae"] = list(self.model.vae.parameters())
        groups = [{"params": p, "lr": self.part_lr[name], "name": name} for name, p in parts.items() if p]
        optimizer = self.optimizer_factory(groups)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def regression_metric(objective: Objective | type) -> str:
    """The validation metric of an objective (or objective class) that is not a bound: its result's `name`."""
    return str(objective.result.name)


def _batch_size(batch: Any) -> int:
    return batch["mean"].shape[0] if isinstance(batch, dict) else batch.shape[0]
