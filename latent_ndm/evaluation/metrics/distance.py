"""The energy distance between decoded samples and held-out images (`latent_ndm.distance`), for each few-step
sampler at each NFE budget and the adaptive ODE: sample quality without reference statistics."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar

import torch
from omegaconf import DictConfig

from latent_ndm.diffusion.samplers import AdaptiveODE, FixedStepODE, Sampler
from latent_ndm.distance import grouped_energy_distance
from latent_ndm.errors import EvaluationError
from latent_ndm.evaluation.generation import batches, generate
from latent_ndm.evaluation.heldout import configured_sampler, heldout_sample
from latent_ndm.evaluation.metrics.base import Metric, Row
from latent_ndm.evaluation.processes import Processes
from latent_ndm.progress import progress
from latent_ndm.runs.load import LoadedRun


def distance_samplers(d: DictConfig) -> dict[str, Sampler]:
    """The samplers of `distance` by label: each of `d.samplers`, a fixed-step one at every budget of `d.nfe` that
    holds at least one step, then (with `d.ode`) the adaptive ODE at `d.tol`, labelled "ode"; all stop at `d.t_end`."""
    out: dict[str, Sampler] = {}
    budgets = [int(n) for n in d.nfe]
    if not budgets or min(budgets) < 1:
        raise EvaluationError(f"distance.nfe needs budgets >= 1, got {list(d.nfe)}")
    for i, entry in enumerate(d.samplers or []):
        spec = configured_sampler(entry, f"distance.samplers[{i}]", t_end=d.t_end)
        if isinstance(spec, FixedStepODE):  # one step is 1 -> t_end on any grid: the uniform one stands for all
            variants = [replace(spec, steps=k, grid=spec.grid if k > 1 else "uniform")
                        for k in (type(spec).steps_for(n) for n in budgets) if k]
        else:
            variants = [spec]
        out.update({v.describe(): v for v in variants})
    if d.ode:
        out["ode"] = AdaptiveODE(tol=float(d.tol), t_end=d.t_end)
    if not out:
        raise EvaluationError("distance has no sampler to run: give distance.samplers or distance.ode=true")
    return out


def eval_distance(run: LoadedRun, procs: Processes, cfg: DictConfig) -> dict[str, Any]:
    """For each sampler of `distance_samplers` (the fixed-step ones at each NFE budget, and the adaptive ODE):
    `distance.num` samples, decoded, and their energy distance to as many held-out images (flattened pixels in
    [-1, 1]; mean +- SE over `distance.groups` disjoint groups), with NFE and images/s, under the sampler's label.
    One process; every sampler starts from the same noise."""
    d = cfg.distance
    if procs.world > 1:
        raise EvaluationError("metrics=[distance] runs on one process; run it without devices>1 / torchrun")
    specs = distance_samplers(d)
    if d.num < 2 * d.groups:
        raise EvaluationError(f"distance needs num >= 2 x groups, got num={d.num}, groups={d.groups}")
    reference = heldout_sample(run, procs, cfg, int(d.num))
    n = reference.shape[0]
    if n < 2 * d.groups:
        raise EvaluationError(f"the {cfg.split!r} split has {n} images, fewer than the {2 * d.groups} that "
                              f"distance.groups={d.groups} needs")
    out: dict[str, Any] = {"num": n, "by_sampler": {}}
    for label, spec in specs.items():
        images, nfe, seconds = [], 0, 0.0
        for chunk in progress(list(batches(range(n), d.batch_size)), f"distance ({spec.describe()})", unit="batch",
                              enabled=cfg.progress):
            got = generate(run, chunk, spec, cfg.seed, procs.device)
            images.append(got.images.cpu())
            nfe, seconds = nfe + got.nfe, seconds + got.seconds
        est = grouped_energy_distance(torch.cat(images), reference, groups=int(d.groups))
        out["by_sampler"][label] = {"energy_distance": est.mean, "se": est.se, "groups": est.groups,
                                    "nfe": nfe / max(1, len(images)), "images_per_s": n / max(seconds, 1e-9),
                                    "sampler": spec.describe(), "settings": spec.settings()}
    out["settings"] = {"split": cfg.split, "seed": cfg.seed, "groups": int(d.groups), "t_end": d.t_end,
                       "metric": "energy distance of flattened pixels in [-1, 1] (U-statistic)"}
    return out


class Distance(Metric):
    """The energy distance of decoded samples to held-out images, per sampler. The benchmark measures it in its
    few-step section (`latent_ndm.comparison.few_step`), not in its main table."""

    name: ClassVar[str] = "distance"
    section: ClassVar[str | None] = "distance"

    def compute(self, run: LoadedRun, procs: Processes) -> dict[str, Any]:
        return eval_distance(run, procs, self.cfg)

    @classmethod
    def rows(cls, result: dict[str, Any]) -> list[Row]:
        r = result
        rows = []
        for e in r["by_sampler"].values():
            se = f" ± {e['se']:.4f}" if e.get("se") is not None else ""
            rows.append((f"energy distance, {e['sampler']}", f"{e['energy_distance']:.4f}", "",
                         f"{se.strip()} over {r['settings']['groups']} groups; {r['num']} samples vs held-out images; "
                         f"NFE {e['nfe']:.0f}, {e['images_per_s']:.2f} images/s"))
        return rows
