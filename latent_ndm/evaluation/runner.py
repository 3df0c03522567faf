"""`evaluate(cfg)`: the metrics of `cfg.metrics` (registered in `latent_ndm.evaluation.metrics`: NELBO, ODE NLL
bound, FID, few-step energy distance, ...) of a trained run, on 1 or N processes, as one dict by metric.

Everything that can be missing (the checkpoint, the reference statistics, the extractor weights, the data) is
checked before any model is evaluated. Held-out images are split across processes by the data module (each image
once); FID samples by index (`rank_indices`, each once); sums and feature moments are reduced exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig

from latent_ndm.errors import EvaluationError
from latent_ndm.evaluation.heldout import heldout_images
from latent_ndm.evaluation.metrics import Metric, check_metrics
from latent_ndm.evaluation.processes import Processes
from latent_ndm.runs.hardware import describe
from latent_ndm.runs.load import LoadedRun, load_run

__all__ = ["Evaluation", "evaluate", "heldout_images"]


@dataclass
class Evaluation:
    """Results by metric, the run, and whether this process reports (rank 0)."""

    results: dict[str, dict[str, Any]]
    run: LoadedRun
    is_main: bool
    hardware: str


def check_bound(run: LoadedRun, ckpt: str, names: list[str]) -> None:
    """A run trained on a regression that is not a likelihood bound has none of the metrics that need one."""
    if not getattr(run.model.prior, "is_bound", True) and any(Metric.registry[n].needs_bound for n in names):
        raise EvaluationError(f"{ckpt} was trained on the straight-trajectory regression (ndm/objective=straight), "
                              "which is not a likelihood bound, so it has no NELBO or NLL: evaluate it by its samples "
                              "with metrics=[distance] or metrics=[fid]")


def evaluate(cfg: DictConfig, procs: Processes | None = None) -> Evaluation:
    """Evaluate `cfg.ckpt` on `cfg.metrics` (any registered metric: nelbo, nll, fid, distance, ...)."""
    names = check_metrics(list(cfg.metrics))
    if cfg.k < 1 or (cfg.limit is not None and cfg.limit < 1):
        raise EvaluationError(f"need k >= 1 and limit >= 1 (or null), got k={cfg.k}, limit={cfg.limit}")
    run = load_run(cfg.ckpt, cfg.ema)  # fails before any process starts
    check_bound(run, cfg.ckpt, names)
    metrics = [Metric.registry[name](cfg) for name in names]
    for metric in metrics:
        metric.prepare()
    owned = procs is None  # the processes this call started, and ends
    procs = procs or Processes(cfg.accelerator, cfg.devices, cfg.num_nodes)
    torch.manual_seed(cfg.seed)
    run.to(procs.device)
    results: dict[str, dict[str, Any]] = {}
    for metric in metrics:
        results[metric.name] = metric.compute(run, procs)
        bad = [k for k, v in results[metric.name].items() if isinstance(v, float) and not math.isfinite(v)]
        if bad:
            raise EvaluationError(f"the {metric.name} evaluation gave non-finite {bad}: the checkpoint is broken or "
                                  "the solver diverged; check the run's training curves")
    if owned:
        procs.close()
    return Evaluation(results, run, procs.is_main, describe(procs.device, procs.world))
