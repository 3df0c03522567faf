"""`RunExport`: the EMA model exported for the next stage whenever a checkpoint is saved and at the end of fit
(rank 0), in the format of `latent_ndm.runs.export`. Checkpoints also carry the run and VAE configs (plain dicts)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Timer

from latent_ndm.model import LatentModel
from latent_ndm.runs.export import read_run_record, save_ndm, save_run_record, save_vae


class RunExport(L.Callback):
    """Args:
    export_dir: the folder the next stage loads.
    run_config: the resolved run config as a plain dict.
    """

    def __init__(self, export_dir: str | Path, run_config: dict[str, Any]) -> None:
        self.export_dir, self.run_config = Path(export_dir), run_config
        self._trained = False

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._trained = False

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._trained = True

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint["config"] = self.run_config
        checkpoint["vae_config"] = _vae(pl_module.ema.module).config()
        if trainer.is_global_zero:
            self.export(pl_module)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The export at the end of fit; a fit that trained nothing (the rerun of a finished run) leaves the export of
        that step as it is: its record holds the last validation's metrics, which this fit never computed."""
        if not trainer.is_global_zero:
            return
        if not self._trained and read_run_record(self.export_dir).get("step") == trainer.global_step:
            return
        self.export(pl_module)

    def export(self, pl_module: L.LightningModule) -> Path:
        """The weights (a VAE: `save_vae`; a latent NDM: `save_ndm`), then the run record that describes them."""
        model = pl_module.ema.module
        if isinstance(model, LatentModel):
            save_ndm(model, self.export_dir, self.run_config["ndm"])
        else:
            save_vae(model, self.export_dir)
        metrics = dict(pl_module.val_metrics)
        val_step = metrics.pop("step", None)  # the metrics are of the last validation, which may be steps before
        record = {"step": int(pl_module.global_step), **train_seconds(pl_module.trainer), **metrics,
                  **({"val_step": int(val_step)} if val_step is not None else {})}
        save_run_record(self.export_dir, self.run_config, record)
        return self.export_dir


def train_seconds(trainer: L.Trainer) -> dict[str, float]:
    """{"train_seconds": wall-clock of fitting so far, validation included, summed over resumes} from the trainer's
    Lightning `Timer`, or {} without one."""
    timers = [c for c in trainer.callbacks if isinstance(c, Timer)]
    return {"train_seconds": round(float(timers[0].time_elapsed("train")), 3)} if timers else {}


def _vae(model: Any) -> Any:
    return model.vae if isinstance(model, LatentModel) else model
