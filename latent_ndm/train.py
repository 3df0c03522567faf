"""`python -m latent_ndm.train stage=vae [key=value ...]`: train one stage of latent NDM (Hydra + Lightning).

Configs live in the repository's `configs/` folder (`train.yaml` and one group per built object); every key can be
overridden on the command line, unknown keys are errors. A run writes into `runs/<stage>/<name>/`:
`checkpoints/last.ckpt` (resumed automatically by the same command), `export/` (what the next stage loads:
`ema.safetensors`, `vae_config.yaml`, `train_config.yaml`, `metrics.yaml`), `images/`, `tensorboard/`, `csv/`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from omegaconf import DictConfig

from latent_ndm.cli import CONFIG_DIR, quiet_known_warnings, run_or_exit
from latent_ndm.training import ndm_stage, vae_stage
from latent_ndm.training.builders import (
    build_datamodule,
    build_loggers,
    build_trainer,
    resolved,
    resume_checkpoint,
)
from latent_ndm.training.errors import TrainingError
from latent_ndm.training.runtime import configure_cpu_threads, select_accelerator


@dataclass(frozen=True)
class Stage:
    """What a stage contributes to `train`: its model, its callbacks, the model's config keys, its report."""

    build_model: Callable[[DictConfig, L.LightningDataModule], L.LightningModule]
    build_callbacks: Callable[[DictConfig, Path], list[L.Callback]]
    report: Callable[[L.Trainer, L.LightningModule, Path], dict[str, Any]]
    model_keys: tuple[str, ...]


STAGES: dict[str, Stage] = {
    "vae": Stage(vae_stage.build_model, vae_stage.build_callbacks, vae_stage.report, vae_stage.MODEL_KEYS),
    "ndm": Stage(ndm_stage.build_model, ndm_stage.build_callbacks, ndm_stage.report, ndm_stage.MODEL_KEYS),
}


@dataclass
class RunResult:
    """The outcome of `train`: the fitted trainer and module, the run folder and the stage's report."""

    trainer: L.Trainer
    module: L.LightningModule
    run_dir: Path
    report: dict[str, Any]
    wall_s: float


def train(cfg: DictConfig) -> RunResult:
    """Build datamodule, model, callbacks, loggers and trainer from `cfg`, in that order, then fit."""
    if cfg.stage.name not in STAGES:
        raise TrainingError(f"stage={cfg.stage.name!r} is not available in this version; choose one of {list(STAGES)}")
    stage = STAGES[cfg.stage.name]
    start = time.monotonic()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    configure_cpu_threads(cfg.cpu_threads, select_accelerator(cfg.trainer.accelerator))
    run_dir = Path(cfg.run_dir)
    datamodule = build_datamodule(cfg.data)
    model = stage.build_model(cfg, datamodule)
    callbacks = stage.build_callbacks(cfg, run_dir)
    loggers = build_loggers(cfg.logger, run_dir)
    trainer = build_trainer(cfg.trainer, callbacks, loggers)
    model_config = {k: resolved(cfg)[k] for k in stage.model_keys}
    ckpt_path = resume_checkpoint(cfg.resume, run_dir / "checkpoints", model_config)
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    report = stage.report(trainer, model, run_dir)
    return RunResult(trainer, model, run_dir, report, time.monotonic() - start)


def format_report(cfg: DictConfig, result: RunResult) -> str:
    """The lines printed at the end of a run: metrics, then where everything is."""
    r, m = result.report, result.report.get("metrics", {})
    lines = [f"stage={cfg.stage.name} name={cfg.name}: finished at step {r['step']} in {result.wall_s:.0f} s"]
    if r.get("summary"):  # the stage's own one-line summary of its metrics
        lines.append(f"  {r['summary']}")
    elif m:
        lines.append("  " + ", ".join(f"{k} {v:.4g}" for k, v in m.items() if isinstance(v, int | float)))
    places = {"checkpoint": "checkpoint (resume)", "export": "export (next stage)", "images": "images",
              "tensorboard": "tensorboard logs", "csv": "csv metrics"}
    lines += [f"  {label + ':':22s}{r[key]}" for key, label in places.items() if r.get(key) is not None]
    return "\n".join(lines)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> None:
    quiet_known_warnings()
    result = run_or_exit(train, cfg)
    if result.trainer.is_global_zero:
        print(format_report(cfg, result))


if __name__ == "__main__":
    main()

