"""`evaluate(cfg)`: the NELBO, the ODE NLL bound, FID and the few-step energy distance of a trained run, on 1 or N
processes (the distance on one), as one dict.

Everything that can be missing (the checkpoint, the reference statistics, the extractor weights, the data) is
checked before any model is evaluated. Held-out images are split across processes by the data module (each image
once); FID samples by index (`rank_indices`, each once); sums and feature moments are reduced exactly.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from data_tools.errors import DataToolError
from data_tools.http_stream import ReadOptions
from data_tools.shard_index import split_shards
from latent_ndm.data.module import ShardDataModule
from latent_ndm.diffusion.samplers import AdaptiveODE, FixedStepODE, Sampler, build_sampler
from latent_ndm.distance import grouped_energy_distance
from latent_ndm.errors import EvaluationError
from latent_ndm.evaluation import fid
from latent_ndm.evaluation.bounds import TermSums, nelbo_terms, nll_terms
from latent_ndm.evaluation.generation import batches, generate, rank_indices
from latent_ndm.evaluation.parallel import Processes
from latent_ndm.progress import progress
from latent_ndm.runs.file_config import DATA_SCHEMA, build_from_file
from latent_ndm.runs.hardware import describe
from latent_ndm.runs.load import LoadedRun, load_run
from vae import VAE
from vae.diagnostics import LatentUsage, collapse_verdict

METRICS = ("nelbo", "nll", "fid", "distance")


def configured_sampler(settings: Any, where: str, **defaults: Any) -> Sampler:
    """The sampler of a config mapping (configs/sampler/ or a partial one), `defaults` filling settings it does not
    give; a bad one is one EvaluationError naming `where`."""
    settings = OmegaConf.to_container(settings, resolve=True) if isinstance(settings, DictConfig) else dict(settings)
    try:
        return build_sampler({**defaults, **settings})
    except (ValueError, TypeError) as err:
        raise EvaluationError(f"{where}: {err}") from err


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
BOUNDS = ("nelbo", "nll")


def check_metrics(metrics: list[str]) -> list[str]:
    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics:
        raise EvaluationError(f"metrics must be a non-empty list drawn from {list(METRICS)}, got {list(metrics)}")
    return list(dict.fromkeys(metrics))


def heldout_images(run: LoadedRun, split: str, shards: str | None, batch_size: int | None) -> Any:
    """A loader of the `split` images (of `shards`, else of the run's own data config), `batch_size` per batch (None:
    the run's, which with seed 0 reproduces its validation numbers); each image is read by exactly one process."""
    read = ReadOptions(**dict(run.config["data"].get("read") or {}))
    try:
        if shards is not None:
            spec: Any = split_shards(shards, split, read)
        else:
            data = build_from_file(run.config["data"], DATA_SCHEMA, f"the data config of {run.source}")
            spec = data.specs.get(split)
            if spec is None:
                raise EvaluationError(f"the run's data config has no {split!r} split; give shards=<image shard "
                                      "folder>")
        batch_size = batch_size or int(run.config["data"]["batch_size"])
        module = ShardDataModule(train_shards=None, test_shards=spec, batch_size=batch_size, kind="images",
                                 resolution=run.resolution, on_error="raise", read=read)
        module.setup("test")
    except (ValueError, DataToolError) as err:
        raise EvaluationError(str(err)) from err
    return module.test_dataloader()


def _limited(loader: Any, limit: int | None, procs: Processes, desc: str, show: bool
             ) -> Iterator[tuple[int, torch.Tensor]]:
    """(batch index, images) with at most this process's share of `limit` images (progress on rank 0: a bar, or
    timed lines in a log)."""
    def part(n: int | None) -> int | None:
        return None if n is None else n * (procs.rank + 1) // procs.world - n * procs.rank // procs.world

    share, seen = part(limit), 0
    known = [n for n in (share, part(getattr(getattr(loader, "dataset", None), "total", None))) if n is not None]
    with progress(total=min(known, default=None), desc=desc, unit="img", enabled=show and procs.is_main) as bar:
        for batch_idx, x in enumerate(loader):
            if share is not None:
                if seen >= share:
                    return
                x = x[: share - seen]
            seen += x.shape[0]
            yield batch_idx, x.to(procs.device)
            bar.update(x.shape[0])


def batch_generator(seed: int, batch_idx: int, device: torch.device) -> torch.Generator:
    """The noise of held-out batch `batch_idx`: seed 0 gives the training stages' validation noise."""
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + batch_idx)


def _timed(procs: Processes) -> float:
    if procs.device.type == "cuda":
        torch.cuda.synchronize(procs.device)
    return time.perf_counter()


def num_dims(run: LoadedRun) -> int:
    return int(run.model.vae.image_channels) * run.resolution**2


@torch.no_grad()
def update_latent_usage(usage: LatentUsage, vae: VAE, x: torch.Tensor) -> None:
    """Add a batch of images to the collapse watch of `vae` (posterior statistics, decoder-mean reconstruction)."""
    x = vae.quantize(x)
    q = vae.encode(x)
    usage.update(q, x, vae.decode(q.mode()).mean(), decode=lambda z: vae.decode(z).mean())


def eval_nelbo(run: LoadedRun, procs: Processes, cfg: DictConfig) -> dict[str, Any]:
    """The NELBO of the held-out images, and the collapse watch of the run's VAE on them (`latent`, and `collapse`:
    a sentence when the latent carries almost nothing, else None)."""
    sums, usage, start = TermSums(), LatentUsage(), _timed(procs)
    loader = heldout_images(run, cfg.split, cfg.shards, cfg.batch_size)
    for batch_idx, x in _limited(loader, cfg.limit, procs, "NELBO", cfg.progress):
        sums.update(nelbo_terms(run.model, x, cfg.k, batch_generator(cfg.seed, batch_idx, procs.device)))
        update_latent_usage(usage, run.model.vae, x)
    out = sums.compute(num_dims(run), procs.sum)
    out["latent"] = usage.compute(procs.sum)
    verdict = collapse_verdict(out["latent"])
    out["collapse"] = verdict.sentence(f"the VAE of {cfg.ckpt}") if verdict else None
    t_eps = getattr(run.model.prior, "eval_t_eps", None)
    out.update(seconds=_timed(procs) - start, settings={"k": cfg.k, "split": cfg.split, "limit": cfg.limit,
                                                        "seed": cfg.seed, "t_eps": t_eps})
    return out


def nll_cutoffs(run: LoadedRun, nll: DictConfig) -> tuple[float | None, float | None]:
    """(t_eps of the reported NLL, t_eps of the one reported beside it or None): `nll.t_eps` null means the prior's
    training t_eps, where the NELBO is taken too, so that the two bounds compare; `nll.other_t_eps` adds the NLL at
    that cut-off, labelled (a VAE run's N(0, I) prior has no cut-off: None, None)."""
    trained = getattr(run.model.prior, "t_eps", None)
    if trained is None:
        return None, None
    main = float(trained if nll.t_eps is None else nll.t_eps)
    other = nll.get("other_t_eps")
    return main, (None if other is None or float(other) == main else float(other))


def _nll_pass(run: LoadedRun, procs: Processes, cfg: DictConfig, solver: dict[str, Any]) -> dict[str, Any]:
    sums, start = TermSums(), _timed(procs)
    loader = heldout_images(run, cfg.split, cfg.shards, cfg.batch_size)
    for batch_idx, x in _limited(loader, cfg.limit, procs, f"NLL (ODE, t_eps {solver['t_eps']})", cfg.progress):
        terms, nfe = nll_terms(run.model, x, cfg.k, batch_generator(cfg.seed, batch_idx, procs.device),
                               **solver)
        sums.update(terms, nfe)
    out = sums.compute(num_dims(run), procs.sum)
    out.update(seconds=_timed(procs) - start,
               settings={"k": cfg.k, "split": cfg.split, "limit": cfg.limit, "seed": cfg.seed, **solver})
    return out


def eval_nll(run: LoadedRun, procs: Processes, cfg: DictConfig) -> dict[str, Any]:
    """The probability-flow ODE's bound at the cut-off of `nll_cutoffs` (and, under `at_other_t_eps`, the same at
    the other cut-off), on the same images and noise as the NELBO."""
    solver = {k: v for k, v in OmegaConf.to_container(cfg.nll, resolve=True).items() if k != "other_t_eps"}
    main, other = nll_cutoffs(run, cfg.nll)
    out = _nll_pass(run, procs, cfg, {**solver, "t_eps": main})
    if other is not None:
        out["at_other_t_eps"] = _nll_pass(run, procs, cfg, {**solver, "t_eps": other})
    return out


@dataclass
class FIDSetup:
    """What FID needs, resolved before anything runs: the reference statistics and the extractor weights."""

    reference: fid.FeatureStats
    weights: Path | None
    settings: dict[str, Any] = field(default_factory=dict)


def prepare_fid(cfg: DictConfig) -> FIDSetup:
    """Register extractors, then load the reference statistics and find the extractor weights (one-sentence errors)."""
    f = cfg.fid
    fid.call_registrations(list(f.register or []))
    if f.stats is None:
        raise EvaluationError("metrics includes fid but fid.stats is not set: precompute the reference with "
                              "`python -m latent_ndm.fid_stats shards=DATA_DIR out=STATS_DIR`, then give "
                              "fid.stats=STATS_DIR")
    weights = fid.resolve_weights(f.extractor, f.weights)
    reference = fid.FeatureStats.load(f.stats)
    return FIDSetup(reference, weights)


def eval_fid(run: LoadedRun, procs: Processes, cfg: DictConfig, setup: FIDSetup) -> dict[str, Any]:
    f = cfg.fid
    extractor = fid.load_feature_extractor(f.extractor, f.layer, setup.weights, procs.device)
    setup.reference.check_compatible(extractor.feature_space())
    spec = configured_sampler(f.sampler, "fid.sampler")
    moments, nfe, calls, seconds, image_size = fid.RunningMoments(), 0, 0, 0.0, None
    indices = rank_indices(f.num, procs.rank, procs.world)
    with progress(total=len(indices), desc="FID samples", unit="img", enabled=cfg.progress and procs.is_main) as bar:
        for chunk in batches(indices, f.batch_size):
            out = generate(run, chunk, spec, cfg.seed, procs.device)
            nfe, calls, seconds = nfe + out.nfe, calls + 1, seconds + out.seconds
            image_size = tuple(out.images.shape[2:])
            moments.update(extractor(fid.to_uint8(out.images)))
            bar.update(len(chunk))
    totals = procs.sum(torch.tensor([float(nfe), float(calls), seconds, float(len(indices))], dtype=torch.float64))
    moments = procs.merge_moments(moments)
    stats = fid.FeatureStats(mu=moments.mean.numpy(), sigma=moments.covariance().numpy(), n=moments.n,
                             image_size=image_size, **extractor.feature_space())
    value = fid.fid_from_stats(stats, setup.reference)
    nfe_mean = float(totals[0] / max(totals[1].item(), 1.0))
    images_per_s = float(totals[3] / max(totals[2].item(), 1e-9))  # summed over processes: per-process rate
    return {"fid": value, "num": int(moments.n), "nfe": nfe_mean, "images_per_s": images_per_s * procs.world,
            "settings": {"sampler": spec.describe(), "t_end": spec.t_end, "extractor": extractor.name,
                         "layer": extractor.layer, "reference": str(f.stats), "reference_n": setup.reference.n,
                         "seed": cfg.seed}}


def heldout_sample(run: LoadedRun, procs: Processes, cfg: DictConfig, num: int) -> torch.Tensor:
    """The first `num` held-out images of `cfg.split` (fewer if the split has fewer), on the CPU, quantised as the
    VAE models them."""
    loader = heldout_images(run, cfg.split, cfg.shards, cfg.batch_size)
    taken = [x.cpu() for _, x in _limited(loader, num, procs, "held-out images", False)]
    if not taken:
        raise EvaluationError(f"the {cfg.split!r} split has no images to compare samples with")
    return run.model.vae.quantize(torch.cat(taken).float())


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


@dataclass
class Evaluation:
    """Results by metric, the run, and whether this process reports (rank 0)."""

    results: dict[str, dict[str, Any]]
    run: LoadedRun
    is_main: bool
    hardware: str


def evaluate(cfg: DictConfig, procs: Processes | None = None) -> Evaluation:
    """Evaluate `cfg.ckpt` on `cfg.metrics` (nelbo, nll, fid, distance)."""
    metrics = check_metrics(list(cfg.metrics))
    if cfg.k < 1 or (cfg.limit is not None and cfg.limit < 1):
        raise EvaluationError(f"need k >= 1 and limit >= 1 (or null), got k={cfg.k}, limit={cfg.limit}")
    run = load_run(cfg.ckpt, cfg.ema)  # fails before any process starts
    if not getattr(run.model.prior, "is_bound", True) and set(metrics) & set(BOUNDS):
        raise EvaluationError(f"{cfg.ckpt} was trained on the straight-trajectory regression (ndm/objective=straight), "
                              "which is not a likelihood bound, so it has no NELBO or NLL: evaluate it by its samples "
                              "with metrics=[distance] or metrics=[fid]")
    fid_setup = prepare_fid(cfg) if "fid" in metrics else None
    owned = procs is None  # the processes this call started, and ends
    procs = procs or Processes(cfg.accelerator, cfg.devices, cfg.num_nodes)
    torch.manual_seed(cfg.seed)
    run.to(procs.device)
    results: dict[str, dict[str, Any]] = {}
    for name in metrics:
        if name == "nelbo":
            results[name] = eval_nelbo(run, procs, cfg)
        elif name == "nll":
            results[name] = eval_nll(run, procs, cfg)
        elif name == "distance":
            results[name] = eval_distance(run, procs, cfg)
        else:
            assert fid_setup is not None
            results[name] = eval_fid(run, procs, cfg, fid_setup)
        bad = [k for k, v in results[name].items() if isinstance(v, float) and not math.isfinite(v)]
        if bad:
            raise EvaluationError(f"the {name} evaluation gave non-finite {bad}: the checkpoint is broken or the "
                                  "solver diverged; check the run's training curves")
    if owned:
        procs.close()
    return Evaluation(results, run, procs.is_main, describe(procs.device, procs.world))
