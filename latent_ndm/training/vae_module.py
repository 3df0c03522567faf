"""`VAEModule`: the Lightning module of `stage=vae` (a VAE with p(z) = N(0, I), KL warm-up, EMA weights).

Training minimises `vae_loss` (nats/dim, optional LPIPS term); validation evaluates the EMA weights (the ones
exported) with `ValidationMetrics` and stores the latent scale (std of encoder samples) in both VAEs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch import nn

from latent_ndm.optim.ema import EMA
from latent_ndm.training.callbacks.checkpoint import BOUND_METRIC
from latent_ndm.training.callbacks.non_finite import check_finite_metrics, guarded_checkpoint
from latent_ndm.training.schedules import KLWarmup
from latent_ndm.training.step_noise import seeded_step
from latent_ndm.training.vae_loss import ValidationMetrics, vae_loss
from vae import VAE
from vae.diagnostics import USE_IMAGES, USE_UNITS

OptimizerFactory = Callable[..., torch.optim.Optimizer]  # params -> optimizer (a Hydra `_partial_`)
SchedulerFactory = Callable[..., Any]  # optimizer -> LR scheduler stepped every batch


class VAEModule(L.LightningModule):
    """Args:
    vae: the model to train.
    optimizer: `params -> Optimizer`.
    scheduler: `optimizer -> LRScheduler` (stepped per batch) or None.
    kl_warmup: beta of the KL term as a function of the global step.
    lpips: a frozen perceptual distance `(x_hat, x) -> (B,)` or None; used as a metric whenever given,
        and in the loss with `lpips_weight` > 0. It is kept out of the state_dict.
    lpips_weight: weight of the LPIPS term in the training loss (never in the reported NELBO).
    ema_decay, ema_warmup: see `EMA`.
    free_bits: nats per latent unit below which the training KL does not push a unit (0: off; see `vae_loss`).
    kl_balance: balance the KL across latent channels while the warm-up's beta < 1 (see `balanced_kl`).
    watch: (images, units) of the collapse watch's decoder-use measurement (see `vae.diagnostics.LatentUsage`).
    seed: seeds the noise of every step (with rank, step and micro-batch), so that a resumed run draws what the
        uninterrupted run drew.
    """

    def __init__(
        self,
        vae: VAE,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        kl_warmup: KLWarmup | None = None,
        lpips: nn.Module | None = None,
        lpips_weight: float = 0.0,
        ema_decay: float = 0.999,
        ema_warmup: bool = True,
        free_bits: float = 0.0,
        kl_balance: bool = False,
        seed: int = 0,
        watch: tuple[int, int] = (USE_IMAGES, USE_UNITS),
    ) -> None:
        super().__init__()
        if lpips_weight < 0 or (lpips_weight > 0 and lpips is None):
            raise ValueError(f"lpips_weight must be >= 0 and needs an LPIPS model when > 0, got {lpips_weight}")
        self.vae = vae
        self.ema = EMA(vae, ema_decay, ema_warmup)
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.kl_warmup = kl_warmup or KLWarmup(warmup_steps=0)
        self.lpips_weight, self.free_bits, self.kl_balance, self.seed = lpips_weight, free_bits, kl_balance, seed
        self.watch = watch
        self._lpips = (lpips,) if lpips is not None else ()  # a tuple: not a submodule, not saved
        self.last_terms: dict[str, torch.Tensor] = {}
        self.val_metrics: dict[str, float] = {}
        self._val: ValidationMetrics | None = None

    @property
    def lpips(self) -> nn.Module | None:
        """The LPIPS model on this module's device, or None."""
        if not self._lpips:
            return None
        model = self._lpips[0]
        if next(model.parameters()).device != self.device:
            model.to(self.device)
        return model

    def training_step(self, x: torch.Tensor, batch_idx: int) -> torch.Tensor:
        beta = self.kl_warmup(self.global_step)
        with seeded_step(self.seed, self.global_rank, self.global_step, batch_idx, self.device) as generator:
            out = vae_loss(self.vae, x, beta, self.lpips, self.lpips_weight, generator, free_bits=self.free_bits,
                           kl_balance=self.kl_balance)
        self.last_terms = out.terms()
        metrics = {"train/loss": out.loss, "train/rec_bpd": out.bpd(out.rec), "train/kl_bpd": out.bpd(out.kl),
                   "train/kl_beta": beta}
        if out.lpips is not None:
            metrics["train/lpips"] = out.lpips
        self.log("train/nelbo_bpd", out.bpd(out.rec + out.kl), prog_bar=True, batch_size=x.shape[0])
        self.log_dict(metrics, batch_size=x.shape[0])
        return out.loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.ema.update(self.vae)

    def on_validation_epoch_start(self) -> None:
        self._val = ValidationMetrics(*self.watch)

    def validation_step(self, x: torch.Tensor, batch_idx: int) -> None:
        generator = torch.Generator(device=x.device).manual_seed(batch_idx)  # the same z noise every validation
        self._val.update(self.ema.module, x, self.lpips, generator)

    def on_validation_epoch_end(self) -> None:
        metrics = self._val.compute(lambda t: self.trainer.strategy.reduce(t, reduce_op="sum"))
        self._val = None
        if not metrics or self.trainer.sanity_checking:
            return
        check_finite_metrics(metrics, self.global_step, guarded_checkpoint(self.trainer))
        for vae in (self.vae, self.ema.module):
            vae.set_latent_scale(metrics["latent_scale"])
        self.val_metrics = {"step": self.global_step, **metrics}
        self.log("val/nelbo_bpd", metrics["nelbo_bpd"], prog_bar=True, sync_dist=True)  # values already reduced
        self.log(BOUND_METRIC, metrics["nelbo_bpd"], sync_dist=True)
        self.log_dict({f"val/{k}": v for k, v in metrics.items() if k != "nelbo_bpd"}, sync_dist=True)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["val_metrics"] = dict(self.val_metrics)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.val_metrics = dict(checkpoint.get("val_metrics", {}))

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.vae.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
