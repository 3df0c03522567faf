"""`LastCheckpoint`: the run's resume point, `<run>/checkpoints/last.ckpt`."""

from __future__ import annotations

from pathlib import Path

import lightning as L

from latent_ndm.runs.export import LAST_CKPT


class LastCheckpoint(L.Callback):
    """Writes `<dirpath>/last.ckpt` (Lightning's full training state, saved atomically) after every validation of a
    fit, so that the latent scale and metrics in it are fresh, and at the end of training if the step is new."""

    def __init__(self, dirpath: str | Path) -> None:
        self.path = Path(dirpath) / LAST_CKPT
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
