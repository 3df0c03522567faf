"""Stage-independent builders used by `latent_ndm.train.train`: datamodule, loggers, the callbacks every stage
shares, trainer, resume checkpoint, and where a finished run put its outputs."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning as L
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger
from lightning.pytorch.strategies import StrategyRegistry
from omegaconf import DictConfig

from data_tools.errors import DataToolError
from latent_ndm.errors import TrainingError
from latent_ndm.runs.checkpoints import find_resume_point, read_checkpoint
from latent_ndm.runs.config import resolved
from latent_ndm.runs.export import CHECKPOINT_DIR, EXPORT_DIR, LAST_CKPT
from latent_ndm.runs.hardware import configure_backends, select_accelerator, select_precision
from latent_ndm.training.callbacks.checkpoint import AtomicCheckpointIO, LastCheckpoint
from latent_ndm.training.callbacks.export import RunExport
from latent_ndm.training.callbacks.non_finite import NonFiniteGuard

log = logging.getLogger(__name__)


def build_datamodule(cfg: DictConfig) -> L.LightningDataModule:
    """Instantiate `cfg.data` and find its shards now, so that missing or mismatched shards fail before training."""
    try:
        datamodule = instantiate(cfg, _convert_="all")
        datamodule.setup("fit")
    except InstantiationException as err:
        if isinstance(err.__cause__, ValueError | DataToolError):  # bad data, not a bad config key
            raise TrainingError(str(err.__cause__)) from err
        raise
    except ValueError as err:
        raise TrainingError(str(err)) from err
    return datamodule


def build_loggers(cfg: DictConfig, run_dir: Path) -> list[Logger]:
    """TensorBoard (`<run_dir>/tensorboard`, appended to on resume) and CSV (`<run_dir>/csv/version_<k>`)."""
    loggers: list[Logger] = []
    if cfg.tensorboard:
        loggers.append(TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version="",
                                         default_hp_metric=False))
    if cfg.csv:
        loggers.append(CSVLogger(save_dir=str(run_dir), name="csv"))
    return loggers


def run_callbacks(cfg: DictConfig, run_dir: Path, images: L.Callback, non_finite: str = "stop", max_skips: int = 100,
                  hint: str = "") -> list[L.Callback]:
    """The callbacks of every stage, in order: the non-finite guard, `checkpoints/last.ckpt`, the `export/`, the stage's
    image grids, and the learning-rate monitor when a logger is on."""
    checkpoints = LastCheckpoint(run_dir / CHECKPOINT_DIR)
    callbacks: list[L.Callback] = [
        NonFiniteGuard(checkpoints.path, non_finite, max_skips, hint),
        checkpoints,
        RunExport(run_dir / EXPORT_DIR, resolved(cfg)),
        images,
    ]
    if cfg.logger.tensorboard or cfg.logger.csv:
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    return callbacks


def run_places(trainer: L.Trainer, run_dir: Path) -> dict[str, Path]:
    """Where a run put its outputs (those that exist): checkpoint, export, images, tensorboard and csv logs."""
    csv_dirs = [Path(lg.log_dir) for lg in trainer.loggers if isinstance(lg, CSVLogger)]
    places = {
        "checkpoint": run_dir / CHECKPOINT_DIR / LAST_CKPT,
        "export": run_dir / EXPORT_DIR,
        "images": run_dir / "images",
        "tensorboard": run_dir / "tensorboard",
        "csv": csv_dirs[0] / "metrics.csv" if csv_dirs else None,
    }
    return {k: p for k, p in places.items() if p is not None and p.exists()}


def build_strategy(strategy: Any, timeout_s: float) -> Any:
    """A DDP strategy named in Lightning's registry ("ddp", "ddp_spawn", ...), built with a collective timeout of
    `timeout_s` seconds, so that a process waiting on a stuck peer fails instead of hanging; anything else as given."""
    if isinstance(strategy, str) and strategy in StrategyRegistry and strategy.startswith("ddp"):
        entry = StrategyRegistry[strategy]
        if "timeout" in inspect.signature(entry["strategy"]).parameters:
            return entry["strategy"](**entry["init_params"], timeout=timedelta(seconds=float(timeout_s)))
    return strategy


def build_trainer(cfg: DictConfig, callbacks: Sequence[L.Callback], loggers: Sequence[Logger],
                  ddp_timeout_s: float = 1800.0) -> L.Trainer:
    """`cfg.trainer` with accelerator/precision 'auto' resolved (bf16-mixed on GPU, 32-true on CPU), a DDP timeout
    and atomic checkpoint writes."""
    accelerator = select_accelerator(cfg.accelerator)
    configure_backends(accelerator)
    return instantiate(cfg, accelerator=accelerator, precision=select_precision(cfg.precision, accelerator),
                       strategy=build_strategy(cfg.strategy, ddp_timeout_s), callbacks=list(callbacks),
                       logger=list(loggers) or False, plugins=[AtomicCheckpointIO()], _convert_="all")


def resume_checkpoint(resume: str | None, ckpt_dir: Path, model_config: dict[str, Any]) -> str | None:
    """The checkpoint to resume from: `resume` = 'auto' (the newest intact one of `<ckpt_dir>`: last.ckpt, else
    previous.ckpt; none: start), 'never'/None, or a path. A checkpoint of a different model (its stored config
    differs in `model_config`'s keys) is refused; damaged checkpoints are named, and none intact is an error."""
    if resume in (None, "never", False):
        return None
    if resume == "auto":
        point = find_resume_point(ckpt_dir)
        if point.path is None and point.damaged:
            causes = "; ".join(f"{p.name}: {cause}" for p, cause in point.damaged)
            raise TrainingError(f"cannot resume: no checkpoint in {ckpt_dir} loads ({causes}); start this run over "
                                "with resume=never, or start a new one with name=<new name>")
        if point.path is None:
            return None
        path, checkpoint = point.path, point.checkpoint
    else:
        path = Path(str(resume))
        if not path.is_file():
            raise TrainingError(f"cannot resume: no checkpoint at {path}; give resume=auto, resume=never or a .ckpt "
                                "path")
        try:
            checkpoint = read_checkpoint(path)
        except Exception as err:  # noqa: BLE001 - any unreadable file gets the same one-sentence message
            raise TrainingError(f"cannot resume from {path}: it does not load ({' '.join(str(err).split())}); "
                                "give another resume=<.ckpt path>, or resume=never") from err
    stored = checkpoint.get("config", {})
    changed = sorted(_diff({k: stored.get(k) for k in model_config}, model_config))
    if changed:
        raise TrainingError(
            f"cannot resume from {path}: it holds a different model ({', '.join(changed[:3])} changed); choose a new "
            "run with name=<new name>, or start this one over with resume=never"
        )
    log.info("resuming from %s", path)
    return str(path)


def _diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two plain nested dicts."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for k in set(old) | set(new) for d in _diff(old.get(k), new.get(k), f"{prefix}{k}.")]
    return [prefix.rstrip(".")] if old != new else []
