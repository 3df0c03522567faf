"""Load a trained run for sampling and evaluation: an NDM run (VAE + NDM prior) or a VAE run (N(0, I) prior).

`ckpt` may be a run folder (`runs/ndm/default`), its `export/` folder, or a Lightning `.ckpt` file. Exports hold
EMA weights only; `ema=False` reads the raw weights from the run's `checkpoints/last.ckpt`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from latent_ndm.errors import EvaluationError
from latent_ndm.model import LatentModel
from latent_ndm.runs.build import build_ndm_prior
from latent_ndm.runs.export import (
    CHECKPOINT_DIR,
    EXPORT_DIR,
    RunFiles,
    find_export,
    last_checkpoint,
    read_export,
    read_run_checkpoint,
)

TRAIN_HINT = "train one with `python -m latent_ndm.train stage=ndm` (or stage=vae)"


@dataclass
class LoadedRun:
    """A model ready to evaluate: the latent model (VAE + prior), where results go, and the run's config.

    kind: "ndm" or "vae"; weights: "ema" or "raw"; out_dir: the folder of the checkpoint (results go beside it);
    config: the resolved training config (plain dict; `data` says which held-out set the run used).
    """

    kind: str
    model: LatentModel
    out_dir: Path
    config: dict[str, Any]
    weights: str
    source: Path

    @property
    def run_dir(self) -> Path:
        """The run folder (the parent of export/ or checkpoints/)."""
        return self.out_dir.parent if self.out_dir.name in (EXPORT_DIR, CHECKPOINT_DIR) else self.out_dir

    @property
    def resolution(self) -> int:
        return int(self.config["data"]["resolution"])

    def to(self, device: torch.device | str) -> LoadedRun:
        self.model.to(device)
        return self


def load_run(ckpt: str | Path, ema: bool = True) -> LoadedRun:
    """The model of `ckpt` (a run folder, an export folder or a `.ckpt` file), on the CPU, in eval mode."""
    path = Path(ckpt)
    if not path.exists():
        raise EvaluationError(f"no checkpoint at {path}: {TRAIN_HINT}, then give ckpt=<its run folder>")
    export = None if path.is_file() else find_export(path)
    if path.is_file() or not ema:
        checkpoint = path if path.is_file() else last_checkpoint(export or path)
        if not checkpoint.is_file():
            raise EvaluationError(f"ema=false needs the run's raw weights in {checkpoint}, which does not exist; "
                                  "use ema=true (the export) or give ckpt=<a .ckpt file>")
        return _model(_read(read_run_checkpoint, checkpoint, ema), checkpoint)
    if export is None:
        raise EvaluationError(f"{path} holds no export (ndm.safetensors or vae_config.yaml, directly or in "
                              f"export/): {TRAIN_HINT}, or give ckpt=<a run folder>")
    return _model(_read(read_export, export), export)


def _read(reader: Any, *args: Any) -> RunFiles:
    try:
        return reader(*args)
    except (FileNotFoundError, ValueError) as err:
        raise EvaluationError(str(err)) from err


def _model(files: RunFiles, source: Path) -> LoadedRun:
    prior = None
    if files.kind == "ndm":
        try:
            prior = build_ndm_prior(files.ndm_config, files.ndm_state, source=f"the ndm config of {source}")
        except ValueError as err:
            raise EvaluationError(str(err)) from err
    model = LatentModel(files.vae, prior).eval().requires_grad_(False)
    return LoadedRun(files.kind, model, files.folder, files.config, files.weights, source)
