"""`python -m latent_ndm.benchmark [vae_ckpt=...] [budget=600] [ndm_run=...] [lsgm_run=...]`: NDM against LSGM.

    python -m latent_ndm.benchmark                                            # trains both for 600 steps, then compares
    python -m latent_ndm.benchmark ndm_run=runs/ndm/default lsgm_run=runs/ndm/lsgm   # compares two trained runs
    python -m latent_ndm.benchmark budget=2000 fid.stats=data/synthetic-32-fid 'train_overrides=["data.batch_size=32"]'

Trains (or takes) the NDM (learnable F) and the LSGM baseline (F = identity) on the same VAE export, data and
budget of optimizer steps; evaluates both (NELBO, ODE NLL, FID with fid.stats); measures the ODE sampler's NFE and
images/s at each tolerance and the training step time and peak memory of both models side by side in this process.
Writes `<out>/benchmark.md`, `benchmark.json`, `benchmark.png` and prints the table. Options: configs/benchmark.yaml.
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig

from latent_ndm.cli import CONFIG_DIR, quiet_known_warnings, run_or_exit
from latent_ndm.evaluation import benchmark_report, comparison
from latent_ndm.evaluation.checkpoint import TRAIN_HINT, EvaluationError, LoadedRun, load_run
from latent_ndm.evaluation.runner import hardware
from latent_ndm.evaluation.step_cost import step_costs

KINDS = {"NDM": "ndm", "LSGM": "lsgm"}


def check(cfg: DictConfig) -> None:
    """Every user error that can be seen before anything runs, as one sentence."""
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
    if (cfg.ndm_run is None or cfg.lsgm_run is None) and not Path(cfg.vae_ckpt).exists():
        raise EvaluationError(f"no VAE export at {cfg.vae_ckpt} (vae_ckpt) to train the priors on: run "
                              "`python -m latent_ndm.train stage=vae` first, or give vae_ckpt=<a VAE export folder>")


def obtain_runs(cfg: DictConfig) -> dict[str, str]:
    """The run folder of each model: given, or trained here for `budget` steps."""
    runs = {}
    for name, key in KINDS.items():
        given = cfg.get(f"{key}_run")
        if given is None:
            overrides = comparison.train_overrides(key, str(cfg.vae_ckpt), cfg.budget, list(cfg.train_overrides),
                                                   cfg.train_root)
            print(f"training {name}: python -m latent_ndm.train {' '.join(overrides)}", flush=True)
            given = str(comparison.train_run(overrides))
        runs[name] = str(given)
    return runs


def check_pair(loaded: dict[str, LoadedRun], runs: dict[str, str]) -> None:
    """NDM and LSGM must be NDM runs with a learnable F and with F = identity respectively."""
    for name, run in loaded.items():
        if run.kind != "ndm":
            raise EvaluationError(f"{runs[name]} is a VAE run; give {KINDS[name]}_run=<a stage=ndm run>")
    if comparison.transform_name(loaded["LSGM"]) != comparison.IDENTITY:
        raise EvaluationError(f"lsgm_run={runs['LSGM']} has F = {comparison.transform_name(loaded['LSGM'])}, "
                              "not the identity; give the run of `python -m latent_ndm.train stage=ndm "
                              "ndm/transform=identity`")
    if comparison.transform_name(loaded["NDM"]) == comparison.IDENTITY:
        raise EvaluationError(f"ndm_run={runs['NDM']} has F = identity (an LSGM run); give a run with a learnable F")


def pairing_notes(loaded: dict[str, LoadedRun], budget: int, steps: dict[str, int | None]) -> list[str]:
    notes = []
    ndm, lsgm = loaded["NDM"].config, loaded["LSGM"].config
    if ndm.get("vae_ckpt") != lsgm.get("vae_ckpt") or ndm.get("data") != lsgm.get("data"):
        notes.append(f"the two runs differ in VAE export or data (vae_ckpt {ndm.get('vae_ckpt')} vs "
                     f"{lsgm.get('vae_ckpt')}); the comparison is not like for like")
    for name, n in steps.items():
        if n is not None and n != budget:
            notes.append(f"the {name} run was trained for {n} steps, not the budget of {budget}")
    return notes


def trained_steps(run: LoadedRun) -> int | None:
    import yaml

    path = run.out_dir / "metrics.yaml"
    if not path.is_file():
        return None
    return (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("step")


def command_line() -> str:
    try:
        from hydra.core.hydra_config import HydraConfig

        return " ".join(["python -m latent_ndm.benchmark", *map(shlex.quote, HydraConfig.get().overrides.task)])
    except ValueError:  # not under @hydra.main
        return "latent_ndm.benchmark.benchmark(cfg)"


def benchmark(cfg: DictConfig) -> dict[str, Any]:
    """Train or take both runs, measure everything, write benchmark.{md,json,png}; the report (a dict)."""
    check(cfg)
    runs = obtain_runs(cfg)
    device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available() else
                          "cpu" if cfg.device == "auto" else cfg.device)
    check_pair({name: load_run(ckpt) for name, ckpt in runs.items()}, runs)
    evaluations, loaded = {}, {}
    for name, ckpt in runs.items():
        print(f"evaluating {name} ({ckpt})", flush=True)
        evaluations[name], loaded[name] = comparison.evaluate_run(ckpt, cfg)
    sampling = {}
    for name, run in loaded.items():
        print(f"sampling {name} at tolerances {list(cfg.tolerances)}", flush=True)
        sampling[name] = comparison.sampling_speed(run, list(cfg.tolerances), cfg.sample_num, cfg.sample_batch_size,
                                                   cfg.seed, device)
    print("timing training steps", flush=True)
    x = comparison.training_images(loaded["NDM"], cfg.step.batch_size)
    steps = {name: comparison.train_step(run, x, cfg.seed, device) for name, run in loaded.items()}
    costs = step_costs(steps, cfg.step.repeats, cfg.step.warmup, device)
    models = {}
    for name, run in loaded.items():
        c = costs[name]
        models[name] = {"run": runs[name], "transform": comparison.transform_name(run),
                        "steps": trained_steps(run), "evaluation": evaluations[name], "sampling": sampling[name],
                        "step": {"ms": 1e3 * c.median_s, "times_ms": [1e3 * t for t in c.times_s],
                                 "memory_mib": c.memory_mib, "memory_kind": c.memory_kind,
                                 "batch_size": int(x.shape[0])}}
    notes = pairing_notes(loaded, cfg.budget, {n: m["steps"] for n, m in models.items()})
    if cfg.fid.stats is None:
        notes.append("FID skipped (—): precompute reference statistics with `python -m latent_ndm.fid_stats "
                     "shards=DATA_DIR out=STATS_DIR` and give fid.stats=STATS_DIR")
    ratio = {"step_time": costs["NDM"].median_s / costs["LSGM"].median_s,
             "memory": costs["NDM"].memory_mib / max(costs["LSGM"].memory_mib, 1e-9)}
    return {"budget": cfg.budget, "command": command_line(), "hardware": hardware(device, 1),
            "tolerances": [float(t) for t in cfg.tolerances], "notes": notes, "models": models, "ratios": ratio,
            "paper": benchmark_report.PAPER, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}


def write(report: dict[str, Any], out: Path) -> dict[str, Path]:
    """benchmark.md, benchmark.json and benchmark.png in `out` (each written atomically)."""
    from latent_ndm.training.export import atomic_write_text

    paths = {"md": out / "benchmark.md", "json": out / "benchmark.json", "png": out / "benchmark.png"}
    atomic_write_text(paths["md"], "# NDM vs LSGM\n\n" + benchmark_report.markdown(report))
    benchmark_report.write_json(paths["json"], report)
    benchmark_report.write_chart(paths["png"], report)
    return paths


def run(cfg: DictConfig) -> dict[str, Any]:
    report = benchmark(cfg)
    if cfg.fid.stats is None:
        print("note: FID skipped; precompute reference statistics with `python -m latent_ndm.fid_stats "
              "shards=DATA_DIR out=STATS_DIR` and give fid.stats=STATS_DIR to include it")
    paths = write(report, Path(cfg.out))
    print(benchmark_report.markdown(report))
    print(f"written: {paths['md']}, {paths['json']}, {paths['png']}")
    return report


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="benchmark")
def main(cfg: DictConfig) -> None:
    quiet_known_warnings()
    run_or_exit(run, cfg)


if __name__ == "__main__":
    main()
