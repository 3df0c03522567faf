"""`train(cfg)`: one training stage of latent NDM from a composed config (what `python -m latent_ndm.train` runs).

Builds datamodule, model, callbacks, loggers and trainer, in that order, resumes when asked, fits, and returns the
stage's report. Each stage (`vae_stage`, `ndm_stage`) contributes its model, callbacks and report.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, open_dict

from latent_ndm.errors import TrainingError
from latent_ndm.runs.folders import (
    check_run_name,
    record_run,
    refuse_links,
    run_log,
    sole_writer_of_run,
    use_throwaway_folder,
)
from latent_ndm.runs.hardware import configure_cpu_threads, select_accelerator
from latent_ndm.training import ndm_stage, vae_stage
from latent_ndm.training.builders import (
    build_datamodule,
    build_loggers,
    build_trainer,
    log_hyperparameters,
    logger_folders,
    resume_checkpoint,
)
from latent_ndm.training.out_of_memory import out_of_memory_message

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stage:
    """What a stage contributes to `train`: its model, its callbacks and its report."""

    build_model: Callable[[DictConfig, L.LightningDataModule], L.LightningModule]
    build_callbacks: Callable[[DictConfig, Path], list[L.Callback]]
    report: Callable[[L.Trainer, L.LightningModule, Path], dict[str, Any]]


STAGES: dict[str, Stage] = {
    "vae": Stage(vae_stage.build_model, vae_stage.build_callbacks, vae_stage.report),
    "ndm": Stage(ndm_stage.build_model, ndm_stage.build_callbacks, ndm_stage.report),
}


@dataclass
class RunResult:
    """The outcome of `train`: the fitted trainer and module, the run folder and the stage's report."""

    trainer: L.Trainer
    module: L.LightningModule
    run_dir: Path
    report: dict[str, Any]
    wall_s: float


def train(cfg: DictConfig, overrides: Sequence[str] = ()) -> RunResult:
    """Build datamodule, model, callbacks, loggers and trainer from `cfg`, in that order, decide what to resume, then
    record the run (`.latent-ndm-run`, `.hydra/`, `train.log`: only now is the run folder written) and fit, holding the
    run folder's lock throughout (one writer per run folder). `name=` and `run_dir=` are checked first; an existing
    `run_dir` that is not a latent-ndm run is refused unless `run_dir_reuse=true`, and so is a run folder with a
    symbolic link among the entries a run writes (`latent_ndm.runs.folders`). `overrides` (the command line's) go
    into the record."""
    if cfg.stage.name not in STAGES:
        raise TrainingError(f"stage={cfg.stage.name!r} is not available in this version; choose one of {list(STAGES)}")
    check_run_name(cfg.name)
    check_run_name(cfg.run_dir, "run_dir")
    start = time.monotonic()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    configure_cpu_threads(cfg.cpu_threads, select_accelerator(cfg.trainer.accelerator))
    use_throwaway_folder(cfg)
    with sole_writer_of_run(Path(cfg.run_dir), reuse=bool(cfg.get("run_dir_reuse", False))):
        return _train(cfg, STAGES[cfg.stage.name], overrides, start)


def _train(cfg: DictConfig, stage: Stage, overrides: Sequence[str], start: float) -> RunResult:
    run_dir = Path(cfg.run_dir)
    datamodule = build_datamodule(cfg.data)
    if cfg.data.get("resolution") is None and getattr(datamodule, "resolution", None):
        with open_dict(cfg):  # the manifest's resolution, for everything that interpolates ${data.resolution}
            cfg.data.resolution = int(datamodule.resolution)
    model = stage.build_model(cfg, datamodule)
    callbacks = stage.build_callbacks(cfg, run_dir)
    loggers = build_loggers(cfg.get("logger"))
    refuse_links(run_dir, logger_folders(loggers))  # before anything is written; the lock is held
    trainer = build_trainer(cfg.trainer, callbacks, loggers, run_dir, cfg.ddp_timeout_s)
    ckpt_path = resume_checkpoint(cfg.resume, run_dir, cfg)
    record_run(run_dir, cfg, overrides)
    with run_log(run_dir):
        log.info("started: stage=%s name=%s in %s%s", cfg.stage.name, cfg.name, run_dir,
                 f", resuming from {ckpt_path}" if ckpt_path else "")
        log_hyperparameters(loggers, cfg)
        try:
            trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
        except torch.OutOfMemoryError as err:
            raise TrainingError(out_of_memory_message(err, cfg, trainer.global_step)) from err
        report = stage.report(trainer, model, run_dir)
        log.info("finished at step %d: %s", trainer.global_step,
                 {k: v for k, v in (report.get("metrics") or report.get("ndm_metrics") or {}).items()
                  if k.endswith("_bpd") or k in ("psnr", "lpips")})
    return RunResult(trainer, model, run_dir, report, time.monotonic() - start)
