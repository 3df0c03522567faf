"""Export of the VAE stage for the next stage: EMA weights + configs, written atomically, file by file.

`<export_dir>/ema.safetensors` and `vae_config.yaml` (`VAE.save_export`, what `VAE.from_checkpoint` reads),
`train_config.yaml` (the resolved run config, plain YAML) and `metrics.yaml` (the last validation metrics, step
included). Lightning checkpoints additionally carry the run config and the VAE config as plain dicts.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import lightning as L
import yaml

TRAIN_CONFIG_NAME = "train_config.yaml"
METRICS_NAME = "metrics.yaml"


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to a temporary file beside `path`, then os.replace it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; a written file gets the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class RunExport(L.Callback):
    """Exports the EMA model whenever a checkpoint is saved and at the end of fit (rank 0 only): the stage's
    weights (`write_weights`), then `train_config.yaml` and `metrics.yaml`. Checkpoints also carry the run config
    and the VAE config as plain dicts (checked on resume).

    Args:
        export_dir: the folder the next stage loads.
        run_config: the resolved run config as a plain dict.
    """

    def __init__(self, export_dir: str | Path, run_config: dict[str, Any]) -> None:
        self.export_dir, self.run_config = Path(export_dir), run_config

    def vae(self, pl_module: L.LightningModule) -> Any:
        """The EMA VAE of the module (its config goes into every checkpoint)."""
        raise NotImplementedError

    def write_weights(self, pl_module: L.LightningModule) -> None:
        """Write the stage's EMA weights (and their configs) into export_dir, atomically."""
        raise NotImplementedError

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint["config"] = self.run_config
        checkpoint["vae_config"] = self.vae(pl_module).config()
        if trainer.is_global_zero:
            self.export(pl_module)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            self.export(pl_module)

    def export(self, pl_module: L.LightningModule) -> Path:
        self.write_weights(pl_module)
        atomic_write_text(self.export_dir / TRAIN_CONFIG_NAME, yaml.safe_dump(self.run_config, sort_keys=False))
        metrics = {"step": int(pl_module.global_step), **pl_module.val_metrics}
        atomic_write_text(self.export_dir / METRICS_NAME, yaml.safe_dump(metrics, sort_keys=False))
        return self.export_dir


class VAEExport(RunExport):
    """The VAE stage's export: `ema.safetensors` + `vae_config.yaml` (`VAE.from_checkpoint(export_dir)`)."""

    def vae(self, pl_module: L.LightningModule) -> Any:
        return pl_module.ema.module

    def write_weights(self, pl_module: L.LightningModule) -> None:
        pl_module.ema.module.save_export(self.export_dir)
