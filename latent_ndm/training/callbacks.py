"""Callbacks of the VAE stage: PNG grids of reconstructions and prior samples, and the non-finite guard."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torchvision.utils import make_grid, save_image

from latent_ndm.training.errors import NonFiniteLossError

TERM_NAMES = {"rec": "reconstruction term -log p(x|z)", "kl": "KL term KL(q(z|x) || N(0, I))",
              "lpips": "LPIPS term", "loss": "total loss"}


class ImageGrids(L.Callback):
    """Every `every_n_steps` optimizer steps and at the end of fit, with the EMA VAE (rank 0 only):
    `recon_<tag>.png` (rows of validation images, each above its reconstruction: the decoder mean at the
    posterior mean) and `prior_<tag>.png` (decoder means at fixed z ~ N(0, I)); both also go to TensorBoard."""

    def __init__(self, out_dir: str | Path, every_n_steps: int = 250, num_images: int = 16, seed: int = 0,
                 row: int = 8) -> None:
        self.out_dir, self.every_n_steps, self.num_images = Path(out_dir), every_n_steps, num_images
        self.seed, self.row = seed, row
        self.images: torch.Tensor | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and self.images is None:
            self.images = _first_images(trainer, self.num_images)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.images is None:  # no validation data: the first training batch
            self.images = batch[: self.num_images].detach().clone()
        step = trainer.global_step
        if trainer.is_global_zero and self.every_n_steps > 0 and step % self.every_n_steps == 0:
            self.write(trainer, pl_module, f"step{step:06d}")

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and self.images is not None:
            self.write(trainer, pl_module, "final")

    @torch.no_grad()
    def write(self, trainer: L.Trainer, pl_module: L.LightningModule, tag: str) -> dict[str, Path]:
        vae = pl_module.ema.module
        was_training = vae.training
        vae.eval()
        try:
            return self._write(trainer, vae, self.images.to(pl_module.device), tag)
        finally:
            vae.train(was_training)

    def _write(self, trainer: L.Trainer, vae: torch.nn.Module, x: torch.Tensor, tag: str) -> dict[str, Path]:
        x_hat = vae.decode(vae.encode(x).mode()).mean()
        pairs = [_pad(t[i : i + self.row], self.row) for i in range(0, len(x), self.row) for t in (x, x_hat)]
        g = torch.Generator(device="cpu").manual_seed(self.seed)
        z = torch.randn((self.num_images, *vae.latent_shape(x.shape[-1])), generator=g).to(x.device)
        grids = {"recon": _grid(torch.cat(pairs), self.row), "prior": _grid(vae.decode(z).mean(), self.row)}
        self.out_dir.mkdir(parents=True, exist_ok=True)
        paths = {}
        for name, grid in grids.items():
            paths[name] = self.out_dir / f"{name}_{tag}.png"
            save_image(grid, paths[name])
            for logger in trainer.loggers:
                if isinstance(logger, TensorBoardLogger):
                    logger.experiment.add_image(f"images/{name}", grid, trainer.global_step)
        return paths


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


def _grid(images: torch.Tensor, row: int) -> torch.Tensor:
    """[-1, 1] images -> a [0, 1] float grid (C, H, W) on the CPU."""
    return make_grid(images.float().cpu().add(1).div(2).clamp(0, 1), nrow=row, padding=2, pad_value=1.0)


class LastCheckpoint(L.Callback):
    """Writes `<dirpath>/last.ckpt` (Lightning's full training state, saved atomically) after every validation of a
    fit, so that the latent scale and metrics in it are fresh, and at the end of training if the step is new."""

    def __init__(self, dirpath: str | Path) -> None:
        self.path = Path(dirpath) / "last.ckpt"
        self._saved_step = -1

    def _save(self, trainer: L.Trainer) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit" or trainer.global_step == self._saved_step:
            return
        trainer.save_checkpoint(self.path, weights_only=False)
        self._saved_step = trainer.global_step

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save(trainer)


class NonFiniteGuard(L.Callback):
    """Before every optimizer step: if a loss term (`pl_module.last_terms`) or the gradient norm is inf/NaN, raise
    `NonFiniteLossError` naming the term, so that no bad step is taken and no checkpoint is written after it.

    Gradients are not checked under "16-mixed", where the grad scaler skips such steps by design; otherwise their
    norm (before clipping) is logged as `train/grad_norm`.
    `checkpoint_path` (the last good checkpoint, if written) is named in the message.
    """

    def __init__(self, checkpoint_path: str | Path | None = None) -> None:
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path else None

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        terms = getattr(pl_module, "last_terms", {})
        for name, value in terms.items():
            if not torch.isfinite(value).all():
                self._stop(trainer, f"the {TERM_NAMES.get(name, name)} ('{name}') is {value.item()}", terms)
        if str(trainer.precision) == "16-mixed":
            return
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        if grads:
            norm = torch.nn.utils.get_total_norm(grads)  # before clipping
            if not torch.isfinite(norm):
                self._stop(trainer, f"the gradient norm is {norm.item()} while every loss term is finite", terms)
            pl_module.log("train/grad_norm", norm)

    def _stop(self, trainer: L.Trainer, what: str, terms: dict[str, torch.Tensor]) -> None:
        raise_non_finite(trainer.global_step, what, terms, self.checkpoint_path)


def raise_non_finite(step: int, what: str, terms: dict[str, torch.Tensor], checkpoint_path: Path | None,
                     hint: str = "") -> None:
    """Stop training with one message naming the non-finite term, every term's value and the kept checkpoint."""
    values = ", ".join(f"{k}={v.item():.4g}" for k, v in terms.items())
    kept = (f"the last good checkpoint {checkpoint_path} is kept" if checkpoint_path and checkpoint_path.is_file()
            else "no checkpoint was written")
    raise NonFiniteLossError(
        f"non-finite loss at step {step}: {what} ({values}); training stopped before the optimizer step and {kept}."
        + (f" {hint}" if hint else "")
    )
