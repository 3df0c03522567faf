"""`stage=ndm`: how the composed config becomes an `NDMModule` and its callbacks, and what the run reports."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf, open_dict

from data_tools.latent_shards import check_same_vae
from latent_ndm.diffusion.samplers import build_sampler
from latent_ndm.errors import TrainingError
from latent_ndm.model import LatentModel
from latent_ndm.runs.build import (
    build_ndm_prior,
    checked_vae,
    configured_latent_shape,
    objective_at,
    objective_class,
)
from latent_ndm.runs.config import vae_export_of
from latent_ndm.runs.export import read_run_record, vae_weights_file
from latent_ndm.runs.targets import instantiate_trusted
from latent_ndm.training.builders import run_callbacks, run_places
from latent_ndm.training.callbacks.checkpoint import BOUND_METRIC
from latent_ndm.training.callbacks.images import NDMSampleGrids
from latent_ndm.training.ndm_loss import MODES, NDMTrainingLoss, pixel_dims
from latent_ndm.training.ndm_module import NDMModule, regression_metric
from latent_ndm.training.speed import apply_speed_switches
from vae.diagnostics import collapse_verdict

log = logging.getLogger(__name__)


def build_latent_model(cfg: DictConfig, resolution: int, vae_export: str | None) -> LatentModel:
    """The VAE (from the export folder `vae_export`, or from the `vae` group in joint mode without one), then the NDM
    prior (denoiser, F_phi, and the objective at the training t_eps)."""
    n = cfg.ndm
    if n.mode not in MODES:
        raise TrainingError(f"ndm.mode must be one of {list(MODES)}, got {n.mode!r}")
    is_bound = bool(objective_class(n).is_bound)
    if n.mode == "joint" and not is_bound:
        raise TrainingError("ndm/objective=straight is not a bound, so it cannot train the VAE: use "
                            "ndm.mode=disjoint, or a bound objective (continuous, discrete) for joint training")
    scratch = (lambda: instantiate_trusted(cfg.vae, _convert_="all")) if n.mode == "joint" else None
    vae = checked_vae(vae_export, resolution, configured_latent_shape(n), scratch=scratch)
    c, r, _ = vae.latent_shape(resolution)
    with open_dict(cfg):  # a null latent shape is the VAE's, for every ${ndm.latent.*} the networks interpolate
        n.latent.channels, n.latent.resolution = int(c), int(r)
    if not is_bound and n.get("noise"):
        log.warning("the straight regression rewards a learned noise scale for shrinking the noise inside (0, 1) "
                    "(docs/MATH.md section 12 derives it; measured to degrade few-step samples): "
                    "ndm/objective=straight without ndm/noise=neural keeps the schedule's noise")
    try:
        prior = build_ndm_prior(n, t_eps=n.t_eps)
    except ValueError as err:
        raise TrainingError(str(err)) from err
    return LatentModel(vae, prior)


COLLAPSED_VAE = ("refuse", "warn")


def check_vae_informative(vae_export: str | Path | None, policy: str) -> None:
    """Refuse (or, with policy "warn", warn about) a VAE export whose recorded validation metrics (`metrics.yaml`,
    written by `stage=vae`) show a collapsed latent: the prior would have nothing to learn. Exports without those
    metrics (a plain weights file, or one written before the collapse watch) pass unchecked."""
    if policy not in COLLAPSED_VAE:
        raise TrainingError(f"stage.collapsed_vae must be one of {list(COLLAPSED_VAE)}, got {policy!r}")
    if vae_export is None:
        return
    verdict = collapse_verdict(read_run_record(vae_weights_file(vae_export).parent))
    if verdict is None:
        return
    sentence = verdict.sentence(f"the VAE export {vae_export}")
    if policy == "refuse":
        raise TrainingError(f"{sentence}; or set stage.collapsed_vae=warn to train the prior anyway")
    log.warning(sentence)


def check_latent_data(cfg: DictConfig, datamodule: L.LightningDataModule | None, model: LatentModel,
                      vae_export: str | None) -> None:
    """Pre-encoded latents (`data=latents`) train the disjoint stage only, and only on the VAE that encoded them."""
    record = getattr(datamodule, "vae_record", None)
    if getattr(datamodule, "kind", "images") != "latents" or record is None:
        return
    if cfg.ndm.mode != "disjoint":
        raise TrainingError("ndm.mode=joint trains the encoder and needs images, not pre-encoded latents; use "
                            "data=synthetic or data=shards (or ndm.mode=disjoint)")
    check_same_vae(record, vae_export, vae_weights_file(vae_export), model.vae.latent_scale.item(),
                   str(cfg.data.root))


def build_model(cfg: DictConfig, datamodule: L.LightningDataModule) -> NDMModule:
    resolution = getattr(datamodule, "resolution", None) or cfg.data.resolution
    try:
        vae_export = vae_export_of(cfg, has_default=True)
    except ValueError as err:
        raise TrainingError(str(err)) from err
    check_vae_informative(vae_export, cfg.stage.collapsed_vae)
    model = build_latent_model(cfg, resolution, vae_export)
    check_latent_data(cfg, datamodule, model, vae_export)
    n, s = cfg.ndm, cfg.stage
    val_objective = model.prior.objective if n.eval_t_eps == n.t_eps else objective_at(n.objective, n.eval_t_eps)
    scheduler = instantiate_trusted(cfg.optim.scheduler, _convert_="all") if cfg.optim.get("scheduler") else None
    module = NDMModule(
        model,
        loss=NDMTrainingLoss(n.mode, pixel_dims(model.vae.image_channels, resolution)),
        val_objective=val_objective,
        optimizer=instantiate_trusted(cfg.optim.optimizer, _convert_="all"),  # plain betas: a plain checkpoint
        scheduler=scheduler,
        lr=dict(s.lr),
        ema_decay=s.ema.decay,
        ema_warmup=s.ema.warmup,
        seed=cfg.seed,
    )
    apply_speed_switches(module.model.prior, s.get("speed"), module.ema.module.prior)  # after the EMA's copy
    return module


def build_callbacks(cfg: DictConfig, run_dir: Path) -> list[L.Callback]:
    s = cfg.stage
    named = s.images.get("sampler")  # null: the prior's own choice (`NDMPrior.default_sampler`)
    sampler = None if named is None else build_sampler(OmegaConf.to_container(named, resolve=True))
    images = NDMSampleGrids(run_dir / "images", sampler, s.images.every_n_steps, s.images.num, seed=cfg.seed,
                            steps=int(s.images.steps), eta=float(s.images.eta))
    objective = objective_class(cfg.ndm)
    best = BOUND_METRIC if objective.is_bound else f"val/{regression_metric(objective)}"  # a regression: no bound
    return run_callbacks(cfg, run_dir, images, non_finite=s.non_finite, max_skips=s.max_skips,
                         hint="Set stage.non_finite=skip to skip such steps instead.", best_monitor=best)


def format_metrics(m: dict[str, float]) -> str:
    """One line: the latent NELBO and its parts, and the same VAE with its N(0, I) prior (pre-encoded latents: the
    KL part of the NELBO, as there are no images for rec); an objective that is no bound (the straight mode): its
    total and terms."""
    if "nelbo_bpd" not in m and "kl_bpd" not in m:  # an objective that is not a bound: its total first, then terms
        (main, value), *terms = [(k, v) for k, v in m.items() if k != "count"]
        parts = ", ".join(f"{k} {v:.4f}" for k, v in terms)
        return (f"  val {main.replace('_', ' ')} {value:.4f} per latent dim ({parts}); not a likelihood bound: judge "
                "the run by its samples (sampler=euler steps=K)")
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
    metrics = dict(module.val_metrics)
    if metrics and trainer.is_global_zero:
        print(format_metrics(metrics))
    return {"step": trainer.global_step, "metrics": {}, "ndm_metrics": metrics, **run_places(trainer, run_dir)}
