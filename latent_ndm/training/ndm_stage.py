"""`stage=ndm`: how the composed config becomes an `NDMModule` and its callbacks, and what the run reports."""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor
from omegaconf import DictConfig

from data_tools.latent_source import check_same_vae
from latent_ndm.training.builders import resolved
from latent_ndm.training.callbacks import LastCheckpoint
from latent_ndm.training.errors import TrainingError
from latent_ndm.training.ndm_callbacks import NDMExport, NDMNonFiniteGuard, NDMSampleGrids
from latent_ndm.training.ndm_loss import MODES, NDMTrainingLoss, pixel_dims
from latent_ndm.training.ndm_module import NDMModule
from latent_ndm.training.ndm_parts import LatentNDM, build_denoiser, load_vae

log = logging.getLogger(__name__)
MODEL_KEYS = ("ndm",)  # config sections that define the checkpointed model (checked on resume)


def latent_shape(cfg: DictConfig) -> tuple[int, int, int]:
    c, r = cfg.ndm.latent.channels, cfg.ndm.latent.resolution
    return (int(c), int(r), int(r))


def build_objectives(cfg: DictConfig) -> tuple[Any, Any]:
    """(training objective, validation objective): the same `ndm/time` choice, the latter at ndm.eval_t_eps."""
    objective = instantiate(cfg.ndm.time)
    if cfg.ndm.eval_t_eps == cfg.ndm.t_eps:
        return objective, objective
    eval_cfg = copy.deepcopy(cfg)
    eval_cfg.ndm.t_eps = cfg.ndm.eval_t_eps
    return objective, instantiate(eval_cfg.ndm.time)


def build_latent_ndm(cfg: DictConfig, resolution: int) -> LatentNDM:
    """The VAE (from `vae_ckpt`, or from the `vae` group in joint mode without one), the denoiser and F_phi."""
    n, shape = cfg.ndm, latent_shape(cfg)
    if n.mode not in MODES:
        raise TrainingError(f"ndm.mode must be one of {list(MODES)}, got {n.mode!r}")
    scratch = (lambda: instantiate(cfg.vae, _convert_="all")) if n.mode == "joint" else None
    vae = load_vae(cfg.vae_ckpt, resolution, shape, scratch=scratch)
    denoiser, transform = build_networks(n, shape[0])
    return LatentNDM(vae, denoiser, transform, shape)


def build_networks(n: DictConfig, channels: int) -> tuple[Any, Any]:
    """(denoiser x_hat_theta, transform F_phi) from an `ndm` config (live or a saved `ndm_config.yaml`)."""
    schedule = instantiate(n.schedule)
    denoiser = build_denoiser(instantiate(n.denoiser, _convert_="all"), schedule,
                              instantiate(n.parameterisation), channels, n.mixing, n.mixing_init)
    return denoiser, instantiate(n.transform, _convert_="all")


def check_latent_data(cfg: DictConfig, datamodule: L.LightningDataModule | None, model: LatentNDM) -> None:
    """Pre-encoded latents (`data=latents`) train the disjoint stage only, and only on the VAE that encoded them."""
    record = getattr(datamodule, "vae_record", None)
    if getattr(datamodule, "kind", "images") != "latents" or record is None:
        return
    if cfg.ndm.mode != "disjoint":
        raise TrainingError("ndm.mode=joint trains the encoder and needs images, not pre-encoded latents; use "
                            "data=synthetic or data=shards (or ndm.mode=disjoint)")
    check_same_vae(record, cfg.vae_ckpt, model.vae.latent_scale.item(), str(cfg.data.root))


def build_model(cfg: DictConfig, datamodule: L.LightningDataModule) -> NDMModule:
    resolution = getattr(datamodule, "resolution", None) or cfg.data.resolution
    model = build_latent_ndm(cfg, resolution)
    check_latent_data(cfg, datamodule, model)
    objective, val_objective = build_objectives(cfg)
    s = cfg.stage
    scheduler = instantiate(cfg.optim.scheduler) if cfg.optim.get("scheduler") else None
    return NDMModule(
        model,
        loss=NDMTrainingLoss(objective, cfg.ndm.mode, pixel_dims(model.vae.image_channels, resolution)),
        val_objective=val_objective,
        optimizer=instantiate(cfg.optim.optimizer),
        scheduler=scheduler,
        lr=dict(s.lr),
        ema_decay=s.ema.decay,
        ema_warmup=s.ema.warmup,
        seed=cfg.seed,
    )


def build_callbacks(cfg: DictConfig, run_dir: Path) -> list[L.Callback]:
    s = cfg.stage
    checkpoints = LastCheckpoint(run_dir / "checkpoints")
    callbacks: list[L.Callback] = [
        NDMNonFiniteGuard(checkpoints.path, s.non_finite, s.max_skips),
        checkpoints,
        NDMExport(run_dir / "export", resolved(cfg)),
        NDMSampleGrids(run_dir / "images", instantiate(cfg.ndm.schedule), cfg.ndm.t_eps, s.images.every_n_steps,
                       s.images.num, s.images.steps, s.images.eta, seed=cfg.seed),
    ]
    if cfg.logger.tensorboard or cfg.logger.csv:
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    return callbacks


def format_metrics(m: dict[str, float]) -> str:
    """One line: the latent NELBO and its parts, and the same VAE with its N(0, I) prior (pre-encoded latents: the
    KL part of the NELBO, as there are no images for rec)."""
    if "nelbo_bpd" not in m:
        return (f"  val KL(q || p) {m['kl_bpd']:.4f} bits/dim (neg. entropy {m['neg_entropy_bpd']:.4f} + "
                f"cross-entropy {m['cross_entropy_bpd']:.4f}; NDM diff {m['ndm_diff_bpd']:.4f}, prior "
                f"{m['ndm_prior_bpd']:.4f}, rec {m['ndm_rec_bpd']:.4f}); with p(z) = N(0, I): {m['vae_kl_bpd']:.4f} "
                "bits/dim; pre-encoded latents, so no rec term: the NELBO adds the VAE's rec")
    return (f"  val NELBO {m['nelbo_bpd']:.4f} bits/dim (rec {m['rec_bpd']:.4f} + neg. entropy "
            f"{m['neg_entropy_bpd']:.4f} + cross-entropy {m['cross_entropy_bpd']:.4f}; NDM diff "
            f"{m['ndm_diff_bpd']:.4f}, prior {m['ndm_prior_bpd']:.4f}, rec {m['ndm_rec_bpd']:.4f}); "
            f"the VAE with p(z) = N(0, I): {m['vae_nelbo_bpd']:.4f} bits/dim")


def report(trainer: L.Trainer, module: NDMModule, run_dir: Path) -> dict[str, Any]:
    """The last validation metrics (under "ndm_metrics"; printed here on rank 0) and where the outputs are."""
    csv_dirs = [Path(lg.log_dir) for lg in trainer.loggers if type(lg).__name__ == "CSVLogger"]
    places = {
        "checkpoint": run_dir / "checkpoints" / "last.ckpt",
        "export": run_dir / "export",
        "images": run_dir / "images",
        "tensorboard": run_dir / "tensorboard",
        "csv": csv_dirs[0] / "metrics.csv" if csv_dirs else None,
    }
    metrics = dict(module.val_metrics)
    if metrics and trainer.is_global_zero:
        print(format_metrics(metrics))
    return {"step": trainer.global_step, "metrics": {}, "ndm_metrics": metrics,
            **{k: p for k, p in places.items() if p is not None and p.exists()}}
