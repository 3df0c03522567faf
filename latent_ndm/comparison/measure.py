"""The measurements of the NDM-vs-LSGM benchmark, one model at a time or side by side.

`train_run` trains one model for a budget of optimizer steps; `evaluate_run` gives its NELBO / NLL / FID (merged
into its evaluation.json); `sampling_speed` the ODE sampler's NFE and images/s per tolerance; `train_step` the
training step of each model on one batch of VAE latents, for `step_cost.step_costs`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from latent_ndm.comparison.step_cost import TrainStep, latent_step
from latent_ndm.diffusion.samplers import AdaptiveODE
from latent_ndm.errors import EvaluationError
from latent_ndm.evaluation.generation import batches, generate
from latent_ndm.evaluation.heldout import heldout_images
from latent_ndm.evaluation.metrics import Metric
from latent_ndm.evaluation.results import write_results
from latent_ndm.evaluation.runner import evaluate
from latent_ndm.model import NDMPrior
from latent_ndm.model.latent import ndm_parameters
from latent_ndm.progress import progress
from latent_ndm.runs.build import transform_kind
from latent_ndm.runs.config import compose_config, resolved, shaping_differences, stored_vae_export
from latent_ndm.runs.export import EXPORT_DIR, TRAIN_CONFIG, read_run_record, read_yaml
from latent_ndm.runs.load import LoadedRun
from latent_ndm.runs.targets import instantiate_trusted
from latent_ndm.training.run import train

IDENTITY = "identity"


def transform_name(run: LoadedRun) -> str:
    """The kind of a run's forward transform F: identity (LSGM), separable or neural."""
    return transform_kind(run.config["ndm"])


def run_name(tag: str, budget: int, seed: int = 0) -> str:
    """bench-<tag>-<budget> (seed 0) or bench-<tag>-<budget>-seed<seed>."""
    return f"bench-{tag}-{budget}" + (f"-seed{seed}" if seed else "")


def train_overrides(kind: str, vae_export: str, budget: int, extra: Sequence[str], root: str | None,
                    seed: int = 0, tag: str | None = None, name: str | None = None) -> list[str]:
    """stage=ndm on `vae_export` for `budget` steps with training seed `seed`, as run `name` (default
    `run_name(tag or kind, budget, seed)`); LSGM is ndm/transform=identity."""
    name = name or run_name(tag or kind, budget, seed)
    out = ["stage=ndm", f"vae_export={vae_export}", f"trainer.max_steps={budget}", f"name={name}", f"seed={seed}"]
    out += ["ndm/transform=identity"] if kind == "lsgm" else []
    out += [f"run_dir={Path(root) / name}"] if root else []
    return out + list(extra)


def run_folder(overrides: Sequence[str]) -> Path:
    """Where `python -m latent_ndm.train <overrides>` writes its run (the composed config's run_dir)."""
    return Path(compose_config("train", overrides).run_dir)


def same_training(reference: Sequence[str], overrides: Sequence[str]) -> bool:
    """Whether `python -m latent_ndm.train <overrides>` trains the same model on the same data with the same
    optimisation and budget as with `reference` (only the run's name or place may differ): e.g. the LSGM of a variant
    that changes only F's size is the main comparison's LSGM."""
    ref, new = compose_config("train", reference), compose_config("train", overrides)
    if ref.trainer.max_steps != new.trainer.max_steps:
        return False
    return not shaping_differences(resolved(ref), new)


def finished_run(cfg: DictConfig) -> Path | None:
    """The run folder of a composed train config when its export records that it finished exactly this budget with
    this configuration. A latent shape the config leaves to the VAE export (null), and an image resolution it leaves
    to the shards' manifest (data.resolution: null), are the ones the run filled in, as `stage=ndm` does; every other
    key must match."""
    export = Path(cfg.run_dir) / EXPORT_DIR
    if not export.is_dir() or read_run_record(export).get("step") != cfg.trainer.max_steps:
        return None
    stored = read_yaml(export / TRAIN_CONFIG)
    probe = copy.deepcopy(cfg)
    with open_dict(probe):
        for key, value in probe.ndm.latent.items():
            if value is None:
                probe.ndm.latent[key] = stored.get("ndm", {}).get("latent", {}).get(key)
        if probe.data.get("resolution") is None:
            probe.data.resolution = (stored.get("data") or {}).get("resolution")
    return None if shaping_differences(stored, probe) else Path(cfg.run_dir)


def train_run(overrides: Sequence[str]) -> Path:
    """Train (or resume) one stage=ndm run, or find it finished (then it is not reopened, so its recorded training
    time stays that of its training); its run folder. Torch's thread count is restored."""
    cfg = compose_config("train", overrides)
    done = finished_run(cfg)
    if done is not None:
        return done
    with open_dict(cfg):
        interval = cfg.trainer.get("val_check_interval")
        if isinstance(interval, int) and interval > cfg.trainer.max_steps:
            cfg.trainer.val_check_interval = int(cfg.trainer.max_steps)  # validate at least at the end
    threads = torch.get_num_threads()
    try:
        return Path(train(cfg, list(overrides)).run_dir)
    finally:
        torch.set_num_threads(threads)


def evaluation_config(ckpt: str, metrics: list[str], limit: int | None, bench: DictConfig) -> DictConfig:
    """configs/evaluate.yaml for `ckpt`, with the benchmark's seed, device and `eval_overrides`, and each metric's
    settings from the benchmark's config (`Metric.benchmark_config`, e.g. its fid section)."""
    overrides = [f"ckpt={ckpt}", f"metrics=[{','.join(metrics)}]", f"limit={'null' if limit is None else limit}",
                 f"seed={bench.seed}", f"progress={str(bool(bench.progress)).lower()}",
                 f"accelerator={'auto' if bench.device == 'auto' else ('gpu' if bench.device == 'cuda' else 'cpu')}"]
    cfg = compose_config("evaluate", [*overrides, *bench.eval_overrides])
    for cls in Metric.registry.values():
        cfg = cls.benchmark_config(bench, cfg)
    return cfg


def evaluation_passes(bench: DictConfig) -> list[tuple[list[str], int | None, dict[str, str]]]:
    """The benchmark's evaluations of one run: (metrics, held-out image limit, metric -> the key its result is kept
    under), pass 0 on `limit` images, then pass 1 on `nll_limit` (or `limit`); each pass the registered metrics of
    that pass the benchmark runs (`Metric.in_benchmark`), each after the metrics it is measured beside (the NLL's
    NELBO of the same images, kept as nelbo_nll_images)."""
    chosen = [cls for cls in Metric.registry.values() if cls.in_benchmark(bench)]
    passes = []
    for number, limit in ((0, bench.limit), (1, bench.nll_limit or bench.limit)):
        names: list[str] = []
        renamed: dict[str, str] = {}
        for cls in (c for c in chosen if c.benchmark_pass == number):
            names += [*cls.beside, cls.name]
            renamed.update(cls.beside)
        if names:
            passes.append((list(dict.fromkeys(names)), limit, renamed))
    return passes


def evaluate_run(ckpt: str, bench: DictConfig) -> tuple[dict[str, dict[str, Any]], LoadedRun]:
    """Each pass of `evaluation_passes` (the NELBO on `limit` held-out images; then the ODE NLL on `nll_limit`, 0:
    none, FID with fid.stats, ...), merged into the run's evaluation.json. Returns (results by metric, as written;
    the loaded run)."""
    results: dict[str, dict[str, Any]] = {}
    run = None
    for metrics, limit, renamed in evaluation_passes(bench):
        out = evaluate(evaluation_config(ckpt, metrics, limit, bench))
        info = {"ckpt": ckpt, "weights": out.run.weights, "hardware": out.hardware, "by": "latent_ndm.benchmark"}
        for name, key in renamed.items():  # e.g. the NELBO of the NLL's images (same z): the pair compared
            results[key] = {**out.results.pop(name), **info}
        write_results(out.run.out_dir, out.results, info)
        results.update({k: {**v, **info} for k, v in out.results.items()})
        run = out.run
    assert run is not None
    return results, run


def few_step(ckpt: str, bench: DictConfig, nelbo: bool = True) -> dict[str, Any]:
    """The energy distance of `ckpt`'s decoded samples to held-out images with the few-step samplers at each NFE
    budget (and the adaptive ODE), from `evaluate metrics=[distance]` with the benchmark's `few_step` settings
    (merged into evaluation.json);
    with `nelbo` and `few_step.nelbo`, a bound-trained run also gets its held-out NELBO on the `limit` images of the
    main table (so that it compares with the NDM's and the LSGM's there)."""
    f = bench.few_step
    cfg = evaluation_config(ckpt, ["distance"], None, bench)
    cfg = OmegaConf.merge(cfg, {"distance": {"num": f.num, "nfe": list(f.nfe), "groups": f.groups, "ode": f.ode,
                                             "batch_size": f.batch_size}})
    cfg.distance.samplers = OmegaConf.to_container(f.samplers, resolve=True)
    out = evaluate(cfg)
    info = {"ckpt": ckpt, "weights": out.run.weights, "hardware": out.hardware, "by": "latent_ndm.benchmark"}
    write_results(out.run.out_dir, out.results, info)
    result: dict[str, Any] = {"run": ckpt, "kind": out.run.model.prior.kind,
                              "vae_export": stored_vae_export(out.run.config), "steps": read_run_record(
                                  str(out.run.out_dir)).get("step"), "distance": out.results["distance"],
                              "nelbo_bpd": None}
    if nelbo and getattr(out.run.model.prior, "is_bound", False) and f.nelbo:
        bound = evaluate(evaluation_config(ckpt, ["nelbo"], bench.limit, bench))
        write_results(bound.run.out_dir, bound.results, info)
        result["nelbo_bpd"] = bound.results["nelbo"]["nelbo_bpd"]
        result["nelbo_count"] = int(bound.results["nelbo"]["count"])
    return result


def sampling_speed(run: LoadedRun, tolerances: Sequence[float], num: int, batch_size: int, seed: int,
                   device: torch.device, show: bool = True) -> list[dict[str, float]]:
    """For each tolerance: the ODE sampler's (dopri5, rtol = atol = tol) mean NFE per batch and images/s (sampling
    and decoding) over samples 0..num-1, after one untimed warm-up sample (`show`: progress over all tolerances)."""
    run.to(device)
    generate(run, [0], AdaptiveODE(tol=max(tolerances)), seed, device)
    out = []
    chunks = list(batches(range(num), batch_size))
    with progress(total=len(tolerances) * len(chunks), desc="ODE sampling speed", unit="batch", enabled=show) as bar:
        for tol in tolerances:
            spec = AdaptiveODE(tol=float(tol))
            nfe, seconds, calls = 0, 0.0, 0
            bar.note(f"tol {float(tol):g}")
            for chunk in chunks:
                batch = generate(run, chunk, spec, seed, device)
                nfe, seconds, calls = nfe + batch.nfe, seconds + batch.seconds, calls + 1
                bar.update(1)
            out.append({"tol": float(tol), "nfe": nfe / calls, "images_per_s": num / max(seconds, 1e-9), "num": num,
                        "seconds": seconds})
    return out


def training_images(run: LoadedRun, batch_size: int | None) -> torch.Tensor:
    """The first batch of the run's training images (its own batch size unless `batch_size` is given)."""
    batch_size = batch_size or int(run.config["data"]["batch_size"])
    parts, n = [], 0
    for x in heldout_images(run, "train", None, batch_size):  # shard ends may give short batches: fill one up
        parts.append(x[: batch_size - n])
        n += parts[-1].shape[0]
        if n == batch_size:
            break
    if not parts:
        raise EvaluationError("the run's training split holds no images; check its data config (data.root)")
    return torch.cat(parts)


def train_step(run: LoadedRun, x: torch.Tensor, seed: int, device: torch.device) -> TrainStep:
    """The disjoint step `stage=ndm` takes (`step_cost.latent_step`: the trainer's own loss, a learned noise scale
    included), from a copy of `run`'s EMA weights: the encoder posterior q(z|x) of the frozen VAE, z ~ q drawn inside
    the loss as in training; the run's optimizer over the prior's parameters (one group)."""
    prior = run.model.prior
    if not isinstance(prior, NDMPrior):
        raise EvaluationError(f"{run.source} is a VAE run, not an NDM run; give the run of a stage=ndm training")
    run.to(device)
    with torch.no_grad():
        q = run.model.posterior(x.to(device))
    model = copy.deepcopy(run.model)
    model.vae.requires_grad_(False).eval()
    model.prior.train().requires_grad_(True)
    params = [p for part in ndm_parameters(model).values() for p in part]
    optim_cfg = run.config.get("optim", {}).get("optimizer")
    optimizer = (instantiate_trusted(optim_cfg, "the run's optimizer config", _convert_="all")(params) if optim_cfg
                 else torch.optim.Adam(params, lr=1e-4))
    batch = {"mean": q.mean.detach(), "logvar": q.logvar.detach()}
    return latent_step(model, batch, optimizer, num_dims=math.prod(x.shape[1:]), seed=seed)
