"""Callbacks of the NDM stage: decoded sample grids, the export, and the non-finite guard (stop or skip)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml
from lightning.pytorch.loggers import TensorBoardLogger
from safetensors.torch import save_file
from torchvision.utils import save_image

from latent_ndm.reverse_process import ReverseProcess
from latent_ndm.samplers import sample_discrete
from latent_ndm.schedule import VPSchedule
from latent_ndm.training.callbacks import _grid, raise_non_finite
from latent_ndm.training.export import RunExport, atomic_write_text

TERM_NAMES = {"rec": "reconstruction term -log p(x|z)", "neg_entropy": "negative encoder entropy log q(z|x)",
              "entropy": "encoder entropy", "cross_entropy": "cross-entropy term (the NDM bound)",
              "diff": "NDM diffusion term L_diff", "prior": "NDM prior term L_prior",
              "ndm_rec": "NDM reconstruction term L_rec", "loss": "total loss"}
log = logging.getLogger(__name__)
NDM_WEIGHTS_NAME = "ndm.safetensors"
NDM_CONFIG_NAME = "ndm_config.yaml"


class NDMSampleGrids(L.Callback):
    """Every `every_n_steps` optimizer steps and at the end of fit (rank 0, EMA weights): `samples_<tag>.png`, the
    VAE decoder means of latents s * z drawn by the NDM (the paper's Algorithm 2 on a `steps`-point grid, fixed
    seed), also sent to TensorBoard."""

    def __init__(self, out_dir: str | Path, schedule: VPSchedule, t_eps: float, every_n_steps: int = 200,
                 num_images: int = 16, steps: int = 100, eta: float = 1.0, seed: int = 0, row: int = 8) -> None:
        self.out_dir, self.schedule, self.t_eps = Path(out_dir), schedule, t_eps
        self.every_n_steps, self.num_images, self.steps, self.eta = every_n_steps, num_images, steps, eta
        self.seed, self.row = seed, row
        self._written_step = -1

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step
        if (trainer.is_global_zero and self.every_n_steps > 0 and step % self.every_n_steps == 0
                and step != self._written_step):
            self.write(trainer, pl_module, f"step{step:06d}")

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and self.num_images > 0:
            self.write(trainer, pl_module, "final")

    @torch.no_grad()
    def write(self, trainer: L.Trainer, pl_module: L.LightningModule, tag: str) -> Path:
        model = pl_module.ema.module
        was_training = model.training
        model.eval()
        try:
            shape = (self.num_images, *model.latent_shape)
            generator = torch.Generator(device=pl_module.device).manual_seed(self.seed)
            process = ReverseProcess(model.denoiser, model.transform, self.schedule)
            out = sample_discrete(process, shape, T=self.steps, t_eps=self.t_eps, eta=self.eta, generator=generator,
                                  device=pl_module.device)
            images = model.vae.decode(out.x * model.vae.latent_scale).mean()
        finally:
            model.train(was_training)
        grid = _grid(images, self.row)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / f"samples_{tag}.png"
        save_image(grid, path)
        self._written_step = trainer.global_step
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image("images/samples", grid, trainer.global_step)
        return path


class NDMExport(RunExport):
    """The NDM stage's export: `<export_dir>/ndm.safetensors` (denoiser.* and transform.* weights),
    `ndm_config.yaml` (the resolved `ndm` config), `vae/` (the VAE export the NDM was trained with:
    `VAE.from_checkpoint(export_dir / "vae")`), plus `train_config.yaml` and `metrics.yaml`."""

    def vae(self, pl_module: L.LightningModule) -> Any:
        return pl_module.ema.module.vae

    def write_weights(self, pl_module: L.LightningModule) -> None:
        model = pl_module.ema.module
        model.vae.save_export(self.export_dir / "vae")
        tensors = {f"{part}.{k}": v.detach().cpu().clone().contiguous()
                   for part in ("denoiser", "transform") for k, v in getattr(model, part).state_dict().items()}
        tmp = self.export_dir / f".{NDM_WEIGHTS_NAME}.tmp"
        save_file(tensors, str(tmp))
        tmp.replace(self.export_dir / NDM_WEIGHTS_NAME)
        atomic_write_text(self.export_dir / NDM_CONFIG_NAME, yaml.safe_dump(self.run_config["ndm"], sort_keys=False))


class NDMNonFiniteGuard(L.Callback):
    """Before every optimizer step (after the gradients are averaged across processes): if a loss term
    (`pl_module.last_terms`) or the gradient norm is inf/NaN on any process, either raise `NonFiniteLossError`
    naming the term (`policy="stop"`), or skip the step (`policy="skip"`: every gradient is dropped, so the optimizer
    leaves the weights and its moments alone, and EMA is not updated), stopping after `max_skips` skips in a row.
    The gradient norm (before clipping) is logged as `train/grad_norm` (not checked under "16-mixed", whose grad
    scaler skips such steps by design)."""

    def __init__(self, checkpoint_path: str | Path | None = None, policy: str = "stop", max_skips: int = 100) -> None:
        if policy not in ("stop", "skip"):
            raise ValueError(f"stage.non_finite must be 'stop' or 'skip', got {policy!r}")
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path else None
        self.policy, self.max_skips, self.skips_in_a_row = policy, max_skips, 0

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
            pl_module.log("train/grad_norm", norm)
            return
        what = (f"the {TERM_NAMES.get(bad[0], bad[0])} ('{bad[0]}') is {terms[bad[0]].item()}" if bad else
                f"the gradient norm is {norm.item()}" if not torch.isfinite(norm) else "a term on another process")
        self.skips_in_a_row += 1
        if self.policy == "stop" or self.skips_in_a_row > self.max_skips:
            self._stop(trainer, what, terms)
        for p in pl_module.parameters():
            p.grad = None
        pl_module.skip_step = True
        pl_module.log("train/skipped_steps", float(self.skips_in_a_row))
        log.warning("non-finite loss: step %d skipped (%s)", trainer.global_step, what)

    def _stop(self, trainer: L.Trainer, what: str, terms: dict[str, torch.Tensor]) -> None:
        raise_non_finite(trainer.global_step, what, terms, self.checkpoint_path,
                         hint="Set stage.non_finite=skip to skip such steps instead.")
