"""`LearningCurve`: the run's learning curve, `<run>/curve.json`: one point per validation of a fit (rank 0).

A point is {"step", "train_seconds", "val_seconds", "step_seconds", **the validation metrics of the EMA weights}
(the module's `val_metrics`: for stage=ndm the latent NELBO `nelbo_bpd` and its parts), all times summed over
resumes:
- `train_seconds`: Lightning's `Timer`, the fit so far (as the export's): validation, sample grids and checkpoints
  included;
- `val_seconds`: the part of it spent in validation;
- `step_seconds`: the training steps alone, each from its batch's start to its end (forward, backward, gradient
  clipping and optimizer step; CUDA synchronised), without data loading, the EMA update, validation, grids or
  checkpoints. The benchmark's equal-wall-clock axis uses it: the curve mode validates more often than a plain run, and
  NDM's validation and sample grids cost more than LSGM's, which must not count as training time.

The file is a list sorted by step, rewritten atomically at each point. A resumed run drops the points after the step
it resumes from (they belong to the timeline it replays), and a point of a step already recorded replaces the old
one (an exact resume repeats it).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch

from data_tools.files import atomic_write_text
from latent_ndm.runs.folders import CURVE_FILE
from latent_ndm.training.callbacks.export import train_seconds

__all__ = ["CURVE_FILE", "LearningCurve", "read_curve", "write_curve"]


def read_curve(path: str | Path) -> list[dict[str, Any]]:
    """The points of a curve.json (a run folder or the file), sorted by step; [] when there is none."""
    path = Path(path)
    path = path / CURVE_FILE if path.is_dir() else path
    if not path.is_file():
        return []
    points = json.loads(path.read_text())
    if not isinstance(points, list) or not all(isinstance(p, dict) and isinstance(p.get("step"), int)
                                               for p in points):
        raise ValueError(f"{path} is not a learning curve (a list of points with an integer step each)")
    return sorted(points, key=lambda p: p["step"])


def write_curve(path: Path, points: list[dict[str, Any]]) -> None:
    """`points` sorted by step, one per step (a later point of a step replaces an earlier one), written atomically."""
    by_step = {int(p["step"]): p for p in points}
    atomic_write_text(path, json.dumps([by_step[s] for s in sorted(by_step)], indent=1) + "\n")


def _plain(value: Any) -> float | None:
    """A metric as a JSON number (tensors and numpy scalars as floats; non-finite as None)."""
    value = float(value.item() if hasattr(value, "item") else value)
    return value if math.isfinite(value) else None


class LearningCurve(L.Callback):
    """Args:
    path: the curve file, `<run folder>/curve.json`.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.val_seconds = 0.0  # both kept in checkpoints: summed over resumes
        self.step_seconds = 0.0
        self._val_start: float | None = None
        self._step_start: float | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"val_seconds": self.val_seconds, "step_seconds": self.step_seconds}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.val_seconds = float(state_dict.get("val_seconds", 0.0))
        self.step_seconds = float(state_dict.get("step_seconds", 0.0))

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Points after the step this fit starts from are of another timeline (a run started over, or cut after the
        checkpoint it resumes from): dropped."""
        if trainer.is_global_zero and self.path.is_file():
            points = read_curve(self.path)
            kept = [p for p in points if p["step"] <= trainer.global_step]
            if len(kept) != len(points):
                write_curve(self.path, kept)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._step_start = _now(pl_module.device)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._step_start is not None:
            self.step_seconds += _now(pl_module.device) - self._step_start
            self._step_start = None

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._val_start = None if _skipped(trainer) else time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if _skipped(trainer) or self._val_start is None:
            return
        self.val_seconds += time.perf_counter() - self._val_start
        self._val_start = None
        metrics = dict(getattr(pl_module, "val_metrics", {}) or {})
        if metrics.pop("step", None) != trainer.global_step or not trainer.is_global_zero:
            return  # no metrics of this validation
        point = {"step": int(trainer.global_step), **train_seconds(trainer), "val_seconds": round(self.val_seconds, 3),
                 "step_seconds": round(self.step_seconds, 3), **{k: _plain(v) for k, v in metrics.items()}}
        write_curve(self.path, [*read_curve(self.path), point])


def _skipped(trainer: L.Trainer) -> bool:
    return trainer.sanity_checking or trainer.state.fn != "fit"


def _now(device: torch.device) -> float:
    """perf_counter after the device's queued work (CUDA kernels run asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()
