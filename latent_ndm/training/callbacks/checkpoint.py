"""The run's resume point: `LastCheckpoint` decides when `<run>/checkpoints/last.ckpt` is written, and
`AtomicCheckpointIO` (Lightning's checkpoint-IO plugin) how: in the destination folder, flushed, renamed into place,
the one before kept as `previous.ckpt` (`latent_ndm.runs.checkpoints.save_checkpoint`); and how a resumed run reads
it: as data only (`weights_only=True`), whatever Lightning asks for. Neither writes nor deletes through a symbolic
link."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.plugins.io import TorchCheckpointIO

from data_tools.files import refuse_link
from latent_ndm.runs.checkpoints import save_checkpoint
from latent_ndm.runs.export import LAST_CKPT, unsafe_file
from latent_ndm.runs.plain_data import check_plain_data

BOUND_METRIC = "val/bound_bpd"  # every stage also logs its validation bound under this name (for best.ckpt)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint IO with a truly atomic save (Lightning's own stages the file in the system temp
    folder and copies it across filesystems, which a full disk or a kill can leave half-written). What it writes
    must be plain data (`check_plain_data`: tensors, plain containers, numbers, text), so a resume can read it."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        check_plain_data(checkpoint)  # what is written must load under weights_only=True (resume)
        save_checkpoint(checkpoint, Path(path))

    def remove_checkpoint(self, path: Any) -> None:
        """Lightning's removal of a checkpoint it no longer keeps (`checkpoints.keep`), never through a link: a
        checkpoint that is a symbolic link is refused, not deleted."""
        refuse_link(Path(path), "delete the old checkpoint")
        super().remove_checkpoint(path)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        """Lightning's load with `weights_only=True` always: a checkpoint is data, never code."""
        kwargs = {} if map_location is None else {"map_location": map_location}
        try:
            return super().load_checkpoint(path, weights_only=True, **kwargs)
        except pickle.UnpicklingError as err:
            raise unsafe_file(path, err) from err


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
