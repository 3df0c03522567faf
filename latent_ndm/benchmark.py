"""`python -m latent_ndm.benchmark [vae_export=...] [budget=600] [ndm_run=...] [lsgm_run=...]`: NDM against LSGM.

    python -m latent_ndm.benchmark                                            # trains both for 600 steps, then compares
    python -m latent_ndm.benchmark ndm_run=runs/ndm/default lsgm_run=runs/ndm/lsgm   # compares two trained runs
    python -m latent_ndm.benchmark budget=2000 fid.stats=data/synthetic-32-fid 'train_overrides=["data.batch_size=32"]'
    python -m latent_ndm.benchmark seeds=5 budget=6000 curve=true               # learning curves over 5 seeds

Trains (or takes) the NDM (learnable F) and the LSGM baseline (F = identity) on the same VAE export, data and
budget of optimizer steps; evaluates both (NELBO, ODE NLL, FID with fid.stats); measures the ODE sampler's NFE and
images/s at each tolerance and the training step time and peak memory of both models side by side in this process.
Writes `<out>/benchmark.md`, `benchmark.json`, `benchmark.png` and prints the table. With `curve=true` the runs
validate every budget / curve_points steps and the report compares their learning curves at equal steps, wall-clock
and FLOPs (a section of the report, and `curve.png`). Options: configs/benchmark.yaml.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from latent_ndm.cli import hydra_command


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train or take both runs, compare them, write the report and print its table; the report as benchmark.json
    holds it."""
    from latent_ndm.comparison import report
    from latent_ndm.comparison.study import benchmark, write

    results = benchmark(cfg)
    if cfg.fid.stats is None:
        print("note: FID skipped; precompute reference statistics with `python -m latent_ndm.fid_stats "
              "shards=DATA_DIR out=STATS_DIR` and give fid.stats=STATS_DIR to include it")
    paths = write(results, Path(cfg.out))
    print(report.markdown(results))
    print(f"written: {', '.join(str(path) for path in paths.values())}")
    return results.to_json()


main = hydra_command("benchmark", run)


if __name__ == "__main__":
    main()
