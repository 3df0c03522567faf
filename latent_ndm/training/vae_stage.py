"""`stage=vae`: how the composed config becomes a `VAEModule` and its callbacks, and what the run reports."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig

from latent_ndm.errors import TrainingError
from latent_ndm.runs.targets import instantiate_trusted
from latent_ndm.training.builders import run_callbacks, run_places
from latent_ndm.training.callbacks.collapse import CollapseWatch, rerun_hint
from latent_ndm.training.callbacks.images import ImageGrids
from latent_ndm.training.lpips_loader import LPIPS, load_lpips, lpips_available
from latent_ndm.training.schedules import KLWarmup
from latent_ndm.training.vae_module import VAEModule
from vae import VAE
from vae.diagnostics import collapse_verdict, units_checked

log = logging.getLogger(__name__)


def build_lpips(cfg: DictConfig) -> LPIPS | None:
    """LPIPS for the loss (weight > 0: its weights must exist) and as a metric (whenever its weights exist)."""
    if cfg.weight > 0 or cfg.random_backbone or lpips_available(cfg.net, cfg.backbone_path):
        return load_lpips(cfg.net, cfg.backbone_path, random_backbone=cfg.random_backbone)
    log.info("LPIPS metric skipped: no %s backbone weights in the torch hub cache or stage.lpips.backbone_path",
             cfg.net)
    return None


def build_model(cfg: DictConfig, datamodule: L.LightningDataModule) -> VAEModule:
    if getattr(datamodule, "kind", "images") != "images":
        raise TrainingError("stage=vae trains on images, but data=latents gives pre-encoded latents; use "
                            "data=synthetic or data=shards")
    vae: VAE = instantiate_trusted(cfg.vae, _convert_="all")
    resolution = getattr(datamodule, "resolution", None) or cfg.data.resolution
    try:
        vae.latent_shape(resolution)
    except ValueError as err:
        raise TrainingError(f"the VAE does not fit {resolution}px images: {err}") from err
    s = cfg.stage
    scheduler = instantiate_trusted(cfg.optim.scheduler, _convert_="all") if cfg.optim.get("scheduler") else None
    return VAEModule(
        vae,
        optimizer=instantiate_trusted(cfg.optim.optimizer, _convert_="all"),  # plain betas: a plain checkpoint
        scheduler=scheduler,
        kl_warmup=KLWarmup.from_portions(int(cfg.trainer.max_steps), **s.kl_warmup),
        lpips=build_lpips(s.lpips),
        lpips_weight=s.lpips.weight,
        ema_decay=s.ema.decay,
        ema_warmup=s.ema.warmup,
        free_bits=s.free_bits,
        kl_balance=s.kl_balance,
        seed=cfg.seed,
        watch=(int(s.watch.images), int(s.watch.units)),
    )


def build_callbacks(cfg: DictConfig, run_dir: Path) -> list[L.Callback]:
    """Every stage's callbacks, then the collapse watch (after the checkpoint and export, which a stop keeps)."""
    images = ImageGrids(run_dir / "images", cfg.stage.images.every_n_steps, cfg.stage.images.num, seed=cfg.seed)
    s, max_steps = cfg.stage, int(cfg.trainer.max_steps)
    hint = rerun_hint(cfg.name, max_steps, float(s.kl_warmup.anneal_portion), float(s.kl_warmup.const_portion))
    watch = CollapseWatch(s.on_collapse, hint, extend_steps=round(float(s.extend_portion) * max_steps))
    return [*run_callbacks(cfg, run_dir, images), watch]


def summarize(m: dict[str, Any]) -> str:
    """One line of the VAE's validation metrics: the bound, its parts, and how much the latent carries."""
    line = (f"val NELBO {m['nelbo_bpd']:.4f} bits/dim (rec {m['rec_bpd']:.4f} + KL {m['kl_bpd']:.4f}, KL share "
            f"{100 * m['kl_share']:.1f}%), PSNR {m['psnr']:.2f} dB (explains {100 * m['explained']:.0f}% of the "
            "variation within the images)" + (f", LPIPS {m['lpips']:.4f}" if "lpips" in m else ""))
    if "active_units" in m:
        line += f", the decoder uses {m['active_units']:.0f} of {units_checked(m)}"
    return line + (f" ({m['varying_units']:.0f} of {m['latent_units']:.0f} vary), KL per unit "
                   f"{m['kl_unit_nats']:.3f} nats, latent scale {m['latent_scale']:.4f}")


def report(trainer: L.Trainer, module: VAEModule, run_dir: Path) -> dict[str, Any]:
    """The last validation metrics, where the outputs are (paths that exist), and the collapse verdict (a warning
    sentence, or None)."""
    m = module.val_metrics
    verdict = collapse_verdict(m)  # None without metrics
    collapse = verdict.sentence("this VAE") if verdict else None
    if collapse:
        log.warning(collapse)
    watch = next((c for c in trainer.callbacks if isinstance(c, CollapseWatch)), None)
    stopped = None
    if watch is not None and watch.stopped:
        stopped = f"stopped at step {trainer.global_step} on a collapsed latent (stage.on_collapse=stop); {watch.hint}"
    return {"step": trainer.global_step, "metrics": dict(m), "summary": summarize(m) if m else None,
            "collapse": collapse, "stopped": stopped,
            "kl_warmup_rerun_at": watch.extended_at if watch is not None else None, **run_places(trainer, run_dir)}
