"""The benchmark's curve mode (`curve=true`) around the runs: how they validate, their recorded curves, the FLOPs of
each model's training step, and the curve section of the report (`latent_ndm.comparison.curve` compares them).

Each run trained here validates every `budget // curve_points` steps; every run records `<run>/curve.json`
(`latent_ndm.training.callbacks.curve.LearningCurve`). The FLOPs of one training step are counted once per model,
on seed 0's run (every seed of a model has the same networks and batch size).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from latent_ndm.comparison import curve, measure
from latent_ndm.comparison.step_cost import step_flops
from latent_ndm.errors import EvaluationError
from latent_ndm.runs.load import LoadedRun
from latent_ndm.training.callbacks.curve import CURVE_FILE, read_curve

MODELS = ("NDM", "LSGM")
METRICS = ("nelbo_bpd", "kl_bpd")  # the validation bound of images; of pre-encoded latents (no rec term)
TAG = "curve"


def every(cfg: DictConfig) -> int:
    """Optimizer steps between two validations of a curve run."""
    return int(cfg.budget) // int(cfg.curve_points)


def train_overrides(cfg: DictConfig) -> list[str]:
    """The train overrides of a curve run (after the benchmark's own): validation every `every` steps."""
    return [f"trainer.val_check_interval={every(cfg)}"] if cfg.get("curve") else []


def check(cfg: DictConfig) -> None:
    """The combination rules of curve=true, each as one sentence."""
    if not cfg.get("curve"):
        return
    points = cfg.get("curve_points")
    if not isinstance(points, int) or points < 2 or not isinstance(cfg.budget, int) or cfg.budget % points:
        raise EvaluationError(f"curve_points is the number of validations along the budget: an integer >= 2 that "
                              f"divides budget={cfg.budget} (the last one at the budget), got {points}")
    if not isinstance(cfg.get("curve_grid"), int) or cfg.curve_grid < 2:
        raise EvaluationError(f"curve_grid is the number of grid points of the wall-clock and FLOPs axes and must be "
                              f"an integer >= 2, got {cfg.get('curve_grid')}")
    if cfg.ndm_run is not None or cfg.lsgm_run is not None:
        raise EvaluationError("curve=true trains its own runs with a validation every budget / curve_points steps; "
                              "leave ndm_run and lsgm_run unset")
    if cfg.match != "steps":
        raise EvaluationError("curve=true compares the models at equal wall-clock along the curves; use match=steps "
                              "with it")


def run_curve(run: str) -> tuple[list[dict[str, Any]], str]:
    """A run's recorded curve points and their bound (nelbo_bpd, or kl_bpd for pre-encoded latents)."""
    points = read_curve(Path(run))
    if not points:
        raise EvaluationError(f"the run {run} records no learning curve ({CURVE_FILE}); train it again (remove the "
                              "folder) or leave curve unset")
    for metric in METRICS:
        if all(p.get(metric) is not None for p in points):
            return points, metric
    raise EvaluationError(f"the run {run} records no validation bound ({' or '.join(METRICS)}) in its {CURVE_FILE}: "
                          "a straight-trajectory objective is no bound, and the curve mode compares bounds")


def flops_per_step(loaded: Mapping[str, LoadedRun], seed: int, device: torch.device) -> tuple[dict[str, int], int]:
    """The FLOPs of one training step (forward + backward) of each model on the first batch of training images at the
    NDM run's batch size (as they trained); (FLOPs by model, that batch size)."""
    x = measure.training_images(loaded["NDM"], None)
    return {name: step_flops(measure.train_step(loaded[name], x, seed, device)) for name in MODELS}, int(x.shape[0])


def section(cfg: DictConfig, seed_runs: Mapping[str, Sequence[str]], loaded: Mapping[str, LoadedRun],
            device: torch.device) -> dict[str, Any]:
    """The curve section of a comparison's report: `curve.compare_curves` on every seed's runs, with where they
    came from and how the FLOPs were counted."""
    recorded = {name: [run_curve(run) for run in seed_runs[name]] for name in MODELS}
    metrics = {metric for runs in recorded.values() for _, metric in runs}
    if len(metrics) > 1:
        raise EvaluationError(f"the runs record different validation bounds ({sorted(metrics)}): train them on the "
                              "same kind of data (images or pre-encoded latents)")
    metric = metrics.pop()
    try:
        runs = {name: [curve.curve_from_points(points, metric) for points, _ in recorded[name]] for name in MODELS}
    except ValueError as err:
        raise EvaluationError(f"a run's learning curve cannot be read ({err}); train it again (remove the folder)") \
            from err
    print("counting FLOPs per training step", flush=True)
    flops, batch_size = flops_per_step(loaded, cfg.seed, device)
    out = curve.compare_curves(runs, flops, cfg.curve_grid, cfg.get("margin"), metric=metric)
    out.update(every=every(cfg), flops_batch_size=batch_size,
               run_folders={name: list(seed_runs[name]) for name in MODELS}, notes=[])
    asked = list(range(every(cfg), int(cfg.budget) + 1, every(cfg)))
    for name in MODELS:
        for run, (points, _) in zip(seed_runs[name], recorded[name], strict=True):
            steps = [p["step"] for p in points]
            if steps != asked:
                out["notes"].append(f"{run} validated at steps {steps[:3]}{'...' if len(steps) > 3 else ''} (not "
                                    f"every {every(cfg)} steps: trained with another curve_points); its own "
                                    "checkpoints are used, the steps axis takes those every run has")
    if any(run.config["ndm"].get("mode") == "joint" for run in loaded.values()):
        out["notes"].append("joint training: the FLOPs count the prior's training step on latents of the frozen "
                            "encoder; the VAE's own forward and backward passes are not in them")
    return out
