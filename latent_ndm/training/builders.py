"""Stage-independent builders used by `latent_ndm.training.run.train`: datamodule, loggers, the callbacks every stage
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
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, Timer
from lightning.pytorch.loggers import CSVLogger, Logger
from lightning.pytorch.strategies import StrategyRegistry
from omegaconf import DictConfig

from data_tools.errors import DataToolError
from latent_ndm.errors import TrainingError
from latent_ndm.runs.checkpoints import find_resume_point, set_aside_requeue_checkpoints
from latent_ndm.runs.config import resolved, shaping_differences
from latent_ndm.runs.export import CHECKPOINT_DIR, EXPORT_DIR, LAST_CKPT, UnsafeFileError, read_checkpoint
from latent_ndm.runs.hardware import configure_backends, select_accelerator, select_precision
from latent_ndm.runs.targets import instantiate_trusted
from latent_ndm.training.callbacks.checkpoint import BOUND_METRIC, AtomicCheckpointIO, LastCheckpoint
from latent_ndm.training.callbacks.curve import CURVE_FILE, LearningCurve
from latent_ndm.training.callbacks.export import RunExport
from latent_ndm.training.callbacks.non_finite import NonFiniteGuard

log = logging.getLogger(__name__)


def build_datamodule(cfg: DictConfig) -> L.LightningDataModule:
    """Instantiate `cfg.data` and find its shards now, so that missing or mismatched shards fail before training."""
    try:
        datamodule = instantiate_trusted(cfg, _convert_="all")
        datamodule.setup("fit")
    except InstantiationException as err:
        if isinstance(err.__cause__, ValueError | DataToolError):  # bad data, not a bad config key
            raise TrainingError(str(err.__cause__)) from err
        raise
    except ValueError as err:
        raise TrainingError(str(err)) from err
    return datamodule


def build_loggers(cfg: DictConfig | None) -> list[Logger]:
    """The loggers of the `logger` group (tensorboard, csv, wandb: each an entry of `cfg`; none: no logger)."""
    if not cfg:
        return []
    try:
        return [instantiate_trusted(entry, _convert_="all") for entry in cfg.values()]
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, ModuleNotFoundError | ImportError):
            raise TrainingError(f"a logger of logger={list(cfg)} cannot be built ({cause}); install what it needs "
                                "or choose others, e.g. logger=[tensorboard,csv]") from err
        raise


def logger_folders(loggers: Sequence[Logger]) -> list[Path]:
    """The folders the loggers write into (`root_dir`: `<save_dir>/<name>`, else `save_dir`), which the run folder's
    link check walks (`latent_ndm.runs.folders.refuse_links`) before any logger writes."""
    folders = [getattr(lg, "root_dir", None) or getattr(lg, "save_dir", None) for lg in loggers]
    return [Path(f) for f in folders if f]


def log_hyperparameters(loggers: Sequence[Logger], cfg: DictConfig) -> None:
    """The resolved run config as every logger's hyperparameters."""
    config = resolved(cfg)
    for logger in loggers:
        logger.log_hyperparams(config)


def run_callbacks(cfg: DictConfig, run_dir: Path, images: L.Callback, non_finite: str = "stop", max_skips: int = 100,
                  hint: str = "", best_monitor: str = BOUND_METRIC) -> list[L.Callback]:
    """The callbacks of every stage, in order: Lightning's `Timer` (the run's training wall-clock, validation
    included, kept across resumes in the checkpoint; the export records it), the non-finite guard, the learning
    curve (`curve.json`: a point per validation; before the checkpoint so that the checkpoint holds its state),
    `checkpoints/last.ckpt`, the periodic and best checkpoints asked for in `cfg.checkpoints`, the `export/`, the
    stage's image grids, and the learning-rate monitor when a logger is on. `best_monitor`: the validation metric
    (lower is better) that best.ckpt keeps the best of."""
    checkpoints = LastCheckpoint(run_dir / CHECKPOINT_DIR)
    kept = kept_checkpoints(cfg.get("checkpoints"), run_dir / CHECKPOINT_DIR, best_monitor)
    callbacks: list[L.Callback] = [Timer(verbose=False), NonFiniteGuard(checkpoints.path, non_finite, max_skips, hint),
                                   LearningCurve(run_dir / CURVE_FILE), checkpoints, *kept,
                                   RunExport(run_dir / EXPORT_DIR, resolved(cfg)), images]
    if cfg.get("logger"):
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    return callbacks


def kept_checkpoints(cfg: DictConfig | None, ckpt_dir: Path, best_monitor: str = BOUND_METRIC) -> list[ModelCheckpoint]:
    """Lightning `ModelCheckpoint`s beside last.ckpt: every `every_n_steps` optimizer steps (`step<N>.ckpt`, the
    newest `keep` of them, -1: all) and the lowest `best_monitor` so far (`best.ckpt`; the validation bound)."""
    if not cfg:
        return []
    out = []
    if cfg.get("every_n_steps"):
        out.append(ModelCheckpoint(dirpath=ckpt_dir, filename="step{step:06d}", auto_insert_metric_name=False,
                                   every_n_train_steps=int(cfg.every_n_steps), save_top_k=int(cfg.get("keep", -1)),
                                   monitor="step", mode="max", save_on_train_epoch_end=False))
    if cfg.get("best"):
        out.append(ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor=best_monitor, mode="min", save_top_k=1,
                                   enable_version_counter=False, auto_insert_metric_name=False))
    return out


def run_places(trainer: L.Trainer, run_dir: Path) -> dict[str, Path]:
    """Where a run put its outputs (those that exist): checkpoint, export, images, learning curve, tensorboard and csv
    logs."""
    csv_dirs = [Path(lg.log_dir) for lg in trainer.loggers if isinstance(lg, CSVLogger)]
    places = {
        "checkpoint": run_dir / CHECKPOINT_DIR / LAST_CKPT,
        "export": run_dir / EXPORT_DIR,
        "images": run_dir / "images",
        "curve": run_dir / CURVE_FILE,
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


def build_trainer(cfg: DictConfig, callbacks: Sequence[L.Callback], loggers: Sequence[Logger], run_dir: Path,
                  ddp_timeout_s: float = 1800.0) -> L.Trainer:
    """`cfg.trainer` with accelerator/precision 'auto' resolved (bf16-mixed on GPU, 32-true on CPU), the run folder
    as Lightning's root (a SLURM requeue checkpoint lands there), a DDP timeout and atomic checkpoint writes."""
    accelerator = select_accelerator(cfg.accelerator)
    configure_backends(accelerator)
    periodic = any(isinstance(c, ModelCheckpoint) for c in callbacks)
    return instantiate_trusted(cfg, accelerator=accelerator, precision=select_precision(cfg.precision, accelerator),
                       strategy=build_strategy(cfg.strategy, ddp_timeout_s), callbacks=list(callbacks),
                       logger=list(loggers) or False, plugins=[AtomicCheckpointIO()], default_root_dir=str(run_dir),
                       enable_checkpointing=periodic, _convert_="all")


def resume_checkpoint(resume: str | None, run_dir: Path, cfg: DictConfig) -> str | None:
    """The checkpoint to resume from: `resume` = 'auto' (the newest intact one of the run folder: last.ckpt,
    previous.ckpt or a SLURM requeue's hpc_ckpt; none: start), 'never'/None (start over), or a path. A checkpoint
    trained with another configuration (a key that shapes the model, the data or the optimisation differs) is
    refused in one sentence naming the keys; damaged checkpoints are named, and none intact is an error."""
    if resume in (None, "never", False):
        set_aside_requeue_checkpoints(run_dir)  # Lightning would load them on SLURM
        return None
    ckpt_dir = run_dir / CHECKPOINT_DIR
    if resume == "auto":
        try:
            point = find_resume_point(ckpt_dir, run_dir)
        except UnsafeFileError as err:
            raise TrainingError(f"cannot resume: {err}; delete it, or start this run over with resume=never") from err
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
        except UnsafeFileError as err:
            raise TrainingError(f"cannot resume: {err}") from err
        except Exception as err:  # noqa: BLE001 - any unreadable file gets the same one-sentence message
            raise TrainingError(f"cannot resume from {path}: it does not load ({' '.join(str(err).split())}); "
                                "give another resume=<.ckpt path>, or resume=never") from err
    changed = shaping_differences(checkpoint.get("config") or {}, cfg)
    if changed:
        shown = ", ".join(f"{k}: {_short(old)} -> {_short(new)}" for k, old, new in changed[:5])
        more = f" and {len(changed) - 5} more" if len(changed) > 5 else ""
        raise TrainingError(f"cannot resume from {path}: it was trained with another configuration ({shown}{more}); "
                            "start a new run with name=<new name>, or start this one over with resume=never")
    log.info("resuming from %s", path)
    return str(path)


def _short(value: Any) -> str:
    """A config value for a one-line message: short reprs as they are, containers and long ones cut."""
    if isinstance(value, dict):
        return "{...}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
