"""The NDM-vs-LSGM study behind `python -m latent_ndm.benchmark`: train (or take) both runs, measure everything,
write the report.

`benchmark(cfg)` (cfg: configs/benchmark.yaml) returns the typed report (`latent_ndm.comparison.report.Comparison`)
that `write` turns into benchmark.md, benchmark.json and benchmark.png.
"""

from __future__ import annotations

import copy
import re
import shlex
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from data_tools.files import atomic_write_text
from latent_ndm import stats
from latent_ndm.comparison import chart, concurrent_runs, curve_chart, curve_runs, few_step, measure, report
from latent_ndm.comparison.report import EQUAL_TIME, Comparison, ModelReport, StepCost
from latent_ndm.comparison.step_cost import step_costs
from latent_ndm.errors import EvaluationError
from latent_ndm.evaluation.metrics import Metric
from latent_ndm.progress import progress
from latent_ndm.runs.config import stored_vae_export, vae_export_of
from latent_ndm.runs.export import find_export, read_run_record, read_yaml
from latent_ndm.runs.folders import RECORD_DIR
from latent_ndm.runs.hardware import describe, resolve_device
from latent_ndm.runs.load import TRAIN_HINT, LoadedRun, load_run

KINDS = {"NDM": "ndm", "LSGM": "lsgm"}
MATCHES = ("steps", "time")



def vae_export(cfg: DictConfig) -> str | None:
    """The VAE export the benchmark trains its priors on (`vae_export`, or its deprecated alias `vae_ckpt`)."""
    try:
        return vae_export_of(cfg, has_default=True)
    except ValueError as err:
        raise EvaluationError(str(err)) from err


def check(cfg: DictConfig) -> None:
    """Every user error that can be seen before anything runs, as one sentence."""
    if not isinstance(cfg.seeds, int) or cfg.seeds < 1:
        raise EvaluationError(f"seeds is the number of training seeds per model (0 .. seeds-1) and must be >= 1, got "
                              f"{cfg.seeds}")
    if cfg.seeds > 1 and (cfg.ndm_run is not None or cfg.lsgm_run is not None):
        raise EvaluationError(f"seeds={cfg.seeds} trains one run per seed here; leave ndm_run and lsgm_run unset "
                              "(finished runs of earlier benchmarks are reused)")
    if cfg.match not in MATCHES:
        raise EvaluationError(f"match must be one of {list(MATCHES)}, got {cfg.match!r}")
    if cfg.match == "time" and (cfg.ndm_run is not None or cfg.lsgm_run is not None):
        raise EvaluationError("match=time trains the equal-time LSGM here from the measured times of runs it trains "
                              "itself; leave ndm_run and lsgm_run unset")
    if not isinstance(cfg.get("jobs"), int) or cfg.jobs < 1:
        raise EvaluationError(f"jobs is the number of runs trained at a time and must be an integer >= 1, got "
                              f"{cfg.get('jobs')}")
    if not isinstance(cfg.budget, int) or cfg.budget < 1:
        raise EvaluationError(f"budget is the number of optimizer steps per model and must be >= 1, got {cfg.budget}")
    if cfg.sample_num < 1 or cfg.sample_batch_size < 1 or not cfg.tolerances or min(cfg.tolerances) <= 0:
        raise EvaluationError("need sample_num >= 1, sample_batch_size >= 1 and tolerances > 0, got "
                              f"{cfg.sample_num}, {cfg.sample_batch_size}, {list(cfg.tolerances)}")
    for name, key in KINDS.items():
        given = cfg.get(f"{key}_run")
        if given is not None and not Path(given).exists():
            raise EvaluationError(f"no {name} run at {given} ({key}_run): {TRAIN_HINT}"
                                  f"{' ndm/transform=identity' if key == 'lsgm' else ''}, or leave {key}_run unset "
                                  "to train it here")
    for name, overrides in (cfg.get("variants") or {}).items():
        if not re.fullmatch(r"[A-Za-z0-9_]+", str(name)) or not isinstance(overrides, Sequence) or isinstance(
                overrides, str):
            raise EvaluationError(f"variants maps a name (letters, digits, _) to a list of train overrides, got "
                                  f"{name!r}: {overrides!r}; e.g. 'variants={{T10:[\"ndm/objective=discrete\","
                                  f"\"ndm.objective.T=10\"]}}'")
    for name, run in (cfg.few_step.runs or {}).items():
        if not Path(str(run)).exists():
            raise EvaluationError(f"no run at {run} (few_step.runs.{name}): train it with `python -m latent_ndm.train "
                                  "stage=ndm ...` first, or leave it out")
    curve_runs.check(cfg)
    if ((cfg.ndm_run is None or cfg.lsgm_run is None or cfg.get("variants"))
            and not Path(str(vae_export(cfg))).exists()):
        raise EvaluationError(f"no VAE export at {vae_export(cfg)} (vae_export) to train the priors on: run "
                              "`python -m latent_ndm.train stage=vae` first, or give vae_export=<a VAE export folder>")


def obtain_runs(cfg: DictConfig) -> tuple[dict[str, list[str]], list[Path]]:
    """The run folders of each model, one per seed (0 .. seeds-1), and those of them trained `jobs` at a time. Each
    is given, or trained here for `budget` steps (a run that finished before is reused, one that was cut resumes: a
    killed benchmark picks up where it stopped). With curve=true, runs of their own (bench-<kind>-curve-...) that
    validate every budget / curve_points steps. With jobs > 1 the runs to train are trained that many at a time first
    (`latent_ndm.comparison.concurrent_runs`), the equal-time LSGMs (match=time) after them, as they need the others'
    measured times."""
    runs: dict[str, list[str]] = {name: [] for name in KINDS}
    planned = {(seed, key): planned_overrides(cfg, seed, key) for seed in range(cfg.seeds) for key in KINDS.values()
               if cfg.get(f"{key}_run") is None}
    side_by_side = []
    if cfg.jobs > 1:
        side_by_side += concurrent_runs.train_all(list(planned.values()), cfg.jobs,
                                                  Path(cfg.out) / concurrent_runs.LOGS)
    with progress(total=len(planned), desc="benchmark runs", unit="runs", enabled=cfg.progress) as bar:
        for seed in range(cfg.seeds):
            for name, key in KINDS.items():
                given = cfg.get(f"{key}_run")
                if given is None:
                    overrides = planned[seed, key]
                    print(f"training {name} (seed {seed}): python -m latent_ndm.train {' '.join(overrides)}",
                          flush=True)
                    given = str(measure.train_run(overrides))
                    bar.update(1)
                runs[name].append(str(given))
    if cfg.match == "time":
        equal = [equal_time_overrides(cfg, runs["NDM"][seed], runs["LSGM"][seed], seed) for seed in range(cfg.seeds)]
        if cfg.jobs > 1:
            side_by_side += concurrent_runs.train_all(equal, cfg.jobs, Path(cfg.out) / concurrent_runs.LOGS)
        runs[EQUAL_TIME] = [str(measure.train_run(overrides)) for overrides in equal]
    return runs, side_by_side


def planned_overrides(cfg: DictConfig, seed: int, key: str) -> list[str]:
    """The train overrides of the run of model `key` ("ndm" or "lsgm") and `seed` that this comparison trains: a
    variant's run that the main comparison trains already (the same training, another name) is the main one's."""
    curve = curve_runs.train_overrides(cfg)
    overrides = measure.train_overrides(key, str(vae_export(cfg)), cfg.budget, [*cfg.train_overrides, *curve],
                                        cfg.train_root, seed, tag=variant_tag(cfg, key))
    if cfg.get("_variant") is not None:
        main = measure.train_overrides(key, str(vae_export(cfg)), cfg.budget, [*cfg._main_overrides, *curve],
                                       cfg.train_root, seed, tag=variant_tag(cfg, key, main=True))
        overrides = main if measure.same_training(main, overrides) else overrides
    return overrides


def variant_tag(cfg: DictConfig, kind: str, main: bool = False) -> str:
    """The run-name stem of `kind` ("ndm" or "lsgm") in this comparison (`main`: in the main comparison):
    bench-<kind>[-<variant>][-curve]-<budget>... (curve runs validate more often than the others: their own names)."""
    variant = None if main else cfg.get("_variant")
    tag = kind if variant is None else f"{kind}-{variant}"
    return f"{tag}-{curve_runs.TAG}" if cfg.get("curve") else tag


def variant_config(cfg: DictConfig, name: str, overrides: Sequence[str]) -> DictConfig:
    """The benchmark config of one variant: its train overrides after the common ones, its own runs."""
    out = copy.deepcopy(cfg)
    with open_dict(out):
        out._main_overrides = list(cfg.train_overrides)
        out.train_overrides = [*cfg.train_overrides, *overrides]
        out.ndm_run = out.lsgm_run = None
        out.variants = {}
        out._variant = name
    return out


def run_record(run: str) -> dict[str, Any]:
    """The metrics.yaml of a run's export (a run folder, export folder or checkpoint), or {}."""
    export = find_export(Path(run))
    return read_run_record(export) if export is not None else {}


def recorded_seconds(run: str) -> float:
    """The training wall-clock a run's export records (`train_seconds`: fit, validation included)."""
    seconds = run_record(run).get("train_seconds")
    if not seconds:
        raise EvaluationError(f"the run {run} records no training time (it was trained before version 0.3); train it "
                              "again (remove the folder) or use match=steps")
    return float(seconds)


def equal_time_steps(budget: int, ndm_seconds: float, lsgm_seconds: float) -> int:
    """The LSGM steps that fit in the NDM's measured wall-clock, from the LSGM's measured wall-clock for `budget`
    steps of the same data, VAE and seed: round(budget * t_NDM / t_LSGM), at least 1."""
    return max(1, round(budget * ndm_seconds / lsgm_seconds))


def equal_time_overrides(cfg: DictConfig, ndm_run: str, lsgm_run: str, seed: int) -> list[str]:
    """The train overrides of the LSGM of `seed` trained for as many steps as fit in the NDM run's measured training
    time (its learning rate schedule spans those steps, as any run's does), as run
    bench-<lsgm tag>-time-<budget>[-seed<seed>]. Once that run has started, its step count is the one it was started
    with (a rerun must not retrain it because a timing moved by a step)."""
    name = measure.run_name(f"{variant_tag(cfg, 'lsgm')}-time", cfg.budget, seed)

    def overrides(steps: int) -> list[str]:
        return measure.train_overrides("lsgm", str(vae_export(cfg)), steps, list(cfg.train_overrides), cfg.train_root,
                                       seed, name=name)

    started = measure.run_folder(overrides(cfg.budget)) / RECORD_DIR / "config.yaml"  # the folder does not depend on it
    ndm_seconds = recorded_seconds(ndm_run)
    if started.is_file():
        steps = int(read_yaml(started)["trainer"]["max_steps"])
    else:
        steps = equal_time_steps(cfg.budget, ndm_seconds, recorded_seconds(lsgm_run))
    print(f"training {EQUAL_TIME} (seed {seed}, {steps} steps in the NDM's {ndm_seconds:.0f} s): "
          f"python -m latent_ndm.train {' '.join(overrides(steps))}", flush=True)
    return overrides(steps)


def paired_keys() -> list[str]:
    """The per-seed keys compared NDM - baseline by seed: each metric's `paired`, in registry order."""
    return [key for cls in Metric.registry.values() for key in cls.paired]


def seed_summary(evaluations: list[dict[str, dict[str, Any]]], runs: list[str]) -> dict[str, Any]:
    """Per-seed values of one model (each metric's `per_seed`) and their mean +- SE: {"per_seed": [...],
    "nelbo_bpd": Estimate, ...}."""
    per_seed = [{"seed": seed, "run": run, **{k: v for cls in Metric.registry.values()
                                              for k, v in cls.per_seed(ev).items()},
                 **{k: v for k, v in run_record(run).items() if k in ("step", "train_seconds")}}
                for seed, (ev, run) in enumerate(zip(evaluations, runs, strict=True))]
    out: dict[str, Any] = {"per_seed": per_seed}
    keys = dict.fromkeys(k for cls in Metric.registry.values() for ev in evaluations for k in cls.per_seed(ev))
    for key in (*keys, "train_seconds"):
        values = [s[key] for s in per_seed if key in s]
        if len(values) == len(per_seed):
            out[key] = asdict(stats.estimate(values))
    return out


def paired(models: dict[str, ModelReport], baseline: str, margin: float | None = None) -> dict[str, Any]:
    """NDM - `baseline` per seed, for every paired key both models have on every seed (`margin`: the equivalence
    margin stated in advance, bits/dim)."""
    out = {}
    for key in paired_keys():
        values = [[s.get(key) for s in models[name].seeds["per_seed"]] for name in ("NDM", baseline)]
        if all(v is not None for vs in values for v in vs):
            bits = key.endswith("_bpd")  # the margin is in bits/dim; KID's differences have no unit and no margin
            out[key] = stats.paired_difference(*values, unit="bits/dim" if bits else "", baseline=baseline,
                                               delta=margin if bits else None)
    return out


def family(report: Comparison, key: str) -> list[tuple[str, dict[str, Any]]]:
    """Every paired difference of `key` in a report, labelled: the main one, against the equal-time LSGM, and each
    variant's (with theirs)."""
    out = []
    for label, r in {"main": report, **report.variants}.items():
        for differences, suffix in ((r.paired, ""), (r.paired_equal_time or {}, f" vs {EQUAL_TIME}")):
            if key in differences:
                out.append((label + suffix, differences[key]))
    return out


def decide_together(report: Comparison) -> None:
    """With several comparisons in one report, Holm's correction decides each paired key's family of differences
    together (family-wise 5%); the report records which (`holm`: key -> the labels of its family)."""
    report.holm = {}
    for key in paired_keys():
        members = [(label, p) for label, p in family(report, key) if p.get("p") is not None]
        if len(members) > 1:
            stats.holm([p for _, p in members])
            report.holm[key] = [label for label, _ in members]


def check_pair(loaded: dict[str, LoadedRun], runs: dict[str, str]) -> None:
    """NDM and LSGM must be NDM runs with a learnable F and with F = identity respectively."""
    for name, run in loaded.items():
        if run.kind != "ndm":
            raise EvaluationError(f"{runs[name]} is a VAE run; give {KINDS[name]}_run=<a stage=ndm run>")
    if measure.transform_name(loaded["LSGM"]) != measure.IDENTITY:
        raise EvaluationError(f"lsgm_run={runs['LSGM']} has F = {measure.transform_name(loaded['LSGM'])}, "
                              "not the identity; give the run of `python -m latent_ndm.train stage=ndm "
                              "ndm/transform=identity`")
    if measure.transform_name(loaded["NDM"]) == measure.IDENTITY:
        raise EvaluationError(f"ndm_run={runs['NDM']} has F = identity (an LSGM run); give a run with a learnable F")


def pairing_notes(loaded: dict[str, LoadedRun], budget: int, steps: dict[str, int | None]) -> list[str]:
    notes = []
    ndm, lsgm = loaded["NDM"].config, loaded["LSGM"].config
    if stored_vae_export(ndm) != stored_vae_export(lsgm) or ndm.get("data") != lsgm.get("data"):
        notes.append(f"the two runs differ in VAE export or data (vae_export {stored_vae_export(ndm)} vs "
                     f"{stored_vae_export(lsgm)}); the comparison is not like for like")
    for name, n in steps.items():
        if n is not None and n != budget:
            notes.append(f"the {name} run was trained for {n} steps, not the budget of {budget}")
    return notes


def trained_steps(run: LoadedRun) -> int | None:
    """The optimizer steps a run's export records it was trained for (None: not recorded)."""
    return run_record(str(run.out_dir)).get("step")


def command_line() -> str:
    try:
        return " ".join(["python -m latent_ndm.benchmark", *map(shlex.quote, HydraConfig.get().overrides.task)])
    except ValueError:  # not under @hydra.main
        return "latent_ndm.benchmark.benchmark(cfg)"


def evaluate_seeds(cfg: DictConfig, seed_runs: dict[str, list[str]]) -> tuple[dict[str, list[dict]], dict]:
    """Every run of every seed evaluated (merged into its evaluation.json); (evaluations by model and seed, seed 0's
    loaded run of each model)."""
    evaluations: dict[str, list[dict[str, Any]]] = {name: [] for name in seed_runs}
    loaded: dict[str, LoadedRun] = {}
    total = cfg.seeds * len(seed_runs)
    with progress(total=total, desc="benchmark evaluations", unit="runs", enabled=cfg.progress) as bar:
        for seed in range(cfg.seeds):
            for name, runs in seed_runs.items():
                print(f"evaluating {name} seed {seed} ({runs[seed]}), {bar.done + 1:g} of {total}", flush=True)
                evaluation, run = measure.evaluate_run(runs[seed], cfg)
                evaluations[name].append(evaluation)
                loaded.setdefault(name, run)
                bar.update(1)
    return evaluations, loaded


def benchmark(cfg: DictConfig) -> Comparison:
    """The comparison of `compare`, then the same for each of `cfg.variants` (its own NDM/LSGM runs per seed, step
    cost measured, sampling speed not) under `variants`; the report."""
    check(cfg)
    out = compare(cfg)
    variants = {str(name): list(overrides) for name, overrides in (cfg.get("variants") or {}).items()}
    for name, overrides in variants.items():
        print(f"variant {name}: train overrides {overrides}", flush=True)
        out.variants[name] = compare(variant_config(cfg, name, overrides), sampling_speed=False)
        out.variants[name].train_overrides = overrides
    decide_together(out)
    return out


def model_reports(seed_runs: dict[str, list[str]], loaded: dict[str, LoadedRun],
                  evaluations: dict[str, list[dict]], sampling: dict[str, list[dict[str, float]]],
                  costs: dict[str, Any], batch_size: int) -> dict[str, ModelReport]:
    """Each model's report: seed 0's run and evaluations, the per-seed summary, and (NDM and LSGM) sampling speed
    and step cost."""
    models: dict[str, ModelReport] = {}
    for name, run in loaded.items():
        models[name] = ModelReport(run=seed_runs[name][0], transform=measure.transform_name(run),
                                   steps=trained_steps(run), evaluation=evaluations[name][0],
                                   seeds=seed_summary(evaluations[name], seed_runs[name]))
        if name in KINDS:
            c = costs[name]
            models[name].sampling = sampling.get(name)
            models[name].step = StepCost(ms=1e3 * c.median_s, times_ms=[1e3 * t for t in c.times_s],
                                         memory_mib=c.memory_mib, memory_kind=c.memory_kind, batch_size=batch_size)
    return models


def compare(cfg: DictConfig, sampling_speed: bool = True) -> Comparison:
    """Train or take the runs, measure everything; the report of one NDM-vs-LSGM comparison. Bounds are measured
    on every seed's runs; sampling speed (unless not asked) and step cost on seed 0's NDM and LSGM."""
    seed_runs, side_by_side = obtain_runs(cfg)
    device = resolve_device(cfg.device)
    for seed in range(cfg.seeds):
        pair = {name: seed_runs[name][seed] for name in KINDS}
        check_pair({name: load_run(ckpt) for name, ckpt in pair.items()}, pair)
    seed_evaluations, loaded = evaluate_seeds(cfg, seed_runs)
    sampling = {}
    for name in KINDS if sampling_speed else ():
        print(f"sampling {name} at tolerances {list(cfg.tolerances)}", flush=True)
        sampling[name] = measure.sampling_speed(loaded[name], list(cfg.tolerances), cfg.sample_num,
                                                cfg.sample_batch_size, cfg.seed, device, show=cfg.progress)
    print("timing training steps", flush=True)
    x = measure.training_images(loaded["NDM"], cfg.step.batch_size)
    steps = {name: measure.train_step(loaded[name], x, cfg.seed, device) for name in KINDS}
    costs = step_costs(steps, cfg.step.repeats, cfg.step.warmup, device, show=cfg.progress)
    models = model_reports(seed_runs, loaded, seed_evaluations, sampling, costs, int(x.shape[0]))
    notes = pairing_notes(loaded, cfg.budget, {n: models[n].steps for n in KINDS})
    if side_by_side:
        notes.append(f"jobs={cfg.jobs}: {len(side_by_side)} runs were trained here {cfg.jobs} at a time, so their "
                     "wall-clocks were measured beside each other on the same machine")
    if cfg.fid.stats is None:
        notes.append("FID skipped (—): precompute reference statistics with `python -m latent_ndm.fid_stats "
                     "shards=DATA_DIR out=STATS_DIR` and give fid.stats=STATS_DIR")
    ratio = {"step_time": costs["NDM"].median_s / costs["LSGM"].median_s,
             "memory": costs["NDM"].memory_mib / max(costs["LSGM"].memory_mib, 1e-9)}
    margin = cfg.get("margin")
    out = Comparison(budget=cfg.budget, seeds=cfg.seeds, match=cfg.match, margin=margin,
                     paired=paired(models, "LSGM", margin), command=command_line(), hardware=describe(device, 1),
                     tolerances=[float(t) for t in cfg.tolerances], notes=notes, models=models, ratios=ratio,
                     paper=report.PAPER, time=time.strftime("%Y-%m-%dT%H:%M:%S"))
    if EQUAL_TIME in models:
        out.paired_equal_time = paired(models, EQUAL_TIME, margin)
    if sampling_speed and cfg.few_step.nfe:
        out.few_step = few_step.section(cfg, {name: seed_runs[name][0] for name in KINDS})
    if cfg.get("curve"):
        out.curve = curve_runs.section(cfg, seed_runs, loaded, device)
    return out


def write(results: Comparison, out: Path) -> dict[str, Path]:
    """benchmark.md, benchmark.json and benchmark.png in `out` (each written atomically); with learning curves,
    curve.png (and curve-<variant>.png for each variant)."""
    paths = {"md": out / "benchmark.md", "json": out / "benchmark.json", "png": out / "benchmark.png"}
    atomic_write_text(paths["md"], "# NDM vs LSGM\n\n" + report.markdown(results))
    report.write_json(paths["json"], results)
    chart.write_chart(paths["png"], results)
    curves = {"curve": results.curve, **{f"curve-{name}": r.curve for name, r in results.variants.items()}}
    for name, section in curves.items():
        if section is not None:
            paths[name] = curve_chart.write_curve_chart(out / f"{name}.png", section)
    return paths
