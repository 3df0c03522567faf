"""Image grids written during training (rank 0, EMA weights), as PNGs and to TensorBoard: the VAE stage's
reconstructions and prior samples, the NDM stage's decoded NDM samples."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from latent_ndm.diffusion.samplers import Sampler
from latent_ndm.runs.images import image_grid, save_png


def publish(trainer: L.Trainer, out_dir: Path, name: str, tag: str, grid: torch.Tensor) -> Path:
    """`<out_dir>/<name>_<tag>.png`, and the grid as `images/<name>` in TensorBoard."""
    path = save_png(grid, out_dir / f"{name}_{tag}.png")
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(f"images/{name}", grid, trainer.global_step)
    return path


class PeriodicImages(L.Callback):
    """Calls `write(trainer, module, tag)` every `every_n_steps` optimizer steps (tag step<N>) and at the end of fit
    (tag final), on rank 0, with the EMA model in eval mode."""

    def __init__(self, out_dir: str | Path, every_n_steps: int, num_images: int, seed: int, row: int) -> None:
        self.out_dir, self.every_n_steps, self.num_images = Path(out_dir), every_n_steps, num_images
        self.seed, self.row = seed, row
        self._written_step = -1

    def write(self, trainer: L.Trainer, pl_module: L.LightningModule, tag: str) -> dict[str, Path]:
        raise NotImplementedError

    def ready(self) -> bool:
        return self.num_images > 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step
        if (trainer.is_global_zero and self.every_n_steps > 0 and step % self.every_n_steps == 0
                and step != self._written_step and self.ready()):
            self._write_eval(trainer, pl_module, f"step{step:06d}")

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and self.ready():
            self._write_eval(trainer, pl_module, "final")

    @torch.no_grad()
    def _write_eval(self, trainer: L.Trainer, pl_module: L.LightningModule, tag: str) -> dict[str, Path]:
        model = pl_module.ema.module
        was_training = model.training
        model.eval()
        try:
            paths = self.write(trainer, pl_module, tag)
        finally:
            model.train(was_training)
        self._written_step = trainer.global_step
        return paths


class ImageGrids(PeriodicImages):
    """The VAE stage's `recon_<tag>.png` (rows of validation images, each above its reconstruction: the decoder mean
    at the posterior mean) and `prior_<tag>.png` (decoder means at fixed z ~ N(0, I))."""

    def __init__(self, out_dir: str | Path, every_n_steps: int = 250, num_images: int = 16, seed: int = 0,
                 row: int = 8) -> None:
        super().__init__(out_dir, every_n_steps, num_images, seed, row)
        self.images: torch.Tensor | None = None

    def ready(self) -> bool:
        return self.images is not None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and self.images is None:
            self.images = _first_images(trainer, self.num_images)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.images is None:  # no validation data: the first training batch
            self.images = batch[: self.num_images].detach().clone()
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def write(self, trainer: L.Trainer, pl_module: L.LightningModule, tag: str) -> dict[str, Path]:
        vae = pl_module.ema.module
        x = self.images.to(pl_module.device)
        x_hat = vae.decode(vae.encode(x).mode()).mean()
        pairs = [_pad(t[i : i + self.row], self.row) for i in range(0, len(x), self.row) for t in (x, x_hat)]
        g = torch.Generator(device="cpu").manual_seed(self.seed)
        z = torch.randn((self.num_images, *vae.latent_shape(x.shape[-1])), generator=g).to(x.device)
        grids = {"recon": image_grid(torch.cat(pairs), self.row), "prior": image_grid(vae.decode(z).mean(), self.row)}
        return {name: publish(trainer, self.out_dir, name, tag, grid) for name, grid in grids.items()}


class NDMSampleGrids(PeriodicImages):
    """The NDM stage's `samples_<tag>.png`: VAE decoder means of latents drawn by the NDM prior with `sampler`
    (one of `latent_ndm.diffusion.samplers`; None: the prior's default in `steps` steps with posterior noise `eta`,
    `NDMPrior.default_sampler`) and a fixed seed."""

    def __init__(self, out_dir: str | Path, sampler: Sampler | None, every_n_steps: int = 200, num_images: int = 16,
                 seed: int = 0, row: int = 8, steps: int = 100, eta: float = 1.0) -> None:
        super().__init__(out_dir, every_n_steps, num_images, seed, row)
        self.spec, self.steps, self.eta = sampler, int(steps), float(eta)

    def sampler(self, pl_module: L.LightningModule) -> Sampler:
        """The named sampler, or the one the prior declares for `steps` steps."""
        return self.spec if self.spec is not None else pl_module.ema.module.prior.default_sampler(self.steps, self.eta)

    def write(self, trainer: L.Trainer, pl_module: L.LightningModule, tag: str) -> dict[str, Path]:
        model = pl_module.ema.module
        generator = torch.Generator(device=pl_module.device).manual_seed(self.seed)
        z_1 = torch.randn((self.num_images, *model.latent_shape), generator=generator, device=pl_module.device)
        z, _ = model.sample(z_1, self.sampler(pl_module), generator)
        return {"samples": publish(trainer, self.out_dir, "samples", tag, image_grid(model.decode_mean(z), self.row))}


def _first_images(trainer: L.Trainer, num: int) -> torch.Tensor | None:
    """The first `num` validation images (always the same ones), or None without validation data."""
    datamodule = trainer.datamodule
    if datamodule is None or not hasattr(datamodule, "val_dataloader"):
        return None
    batches, count = [], 0
    with torch.random.fork_rng(devices=[]):  # reading them must not change the training run's random stream
        for batch in datamodule.val_dataloader():
            batches.append(batch)
            count += len(batch)
            if count >= num:
                break
    return torch.cat(batches)[:num] if batches else None


def _pad(images: torch.Tensor, row: int) -> torch.Tensor:
    """Complete a partial row with white images so that originals and reconstructions stay aligned."""
    missing = row - len(images)
    return torch.cat([images, images.new_ones((missing, *images.shape[1:]))]) if missing > 0 else images
