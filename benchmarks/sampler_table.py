"""The sampler table (issue 25): energy distance to held-out images against NFE, for each fixed-step sampler and time
grid, over the training seeds of each model, with the adaptive ODE at a tight tolerance as the reference.

Every run is evaluated with `python -m latent_ndm.evaluate metrics=[distance]` (the same code, in process), swept
over `--samplers` at each budget of `--nfe` (steps = NFE // evaluations per step) and the adaptive ODE at
`--reference-tol`, from the same initial noise; each run's results are kept in <out>/<model>-<i>.json (a rerun
reuses them). The table (`latent_ndm.comparison.sampler_table`) gives, per model and sampler, the mean over training
seeds with its 95% t-interval, the paired difference to the reference with its verdict (Holm across a model's
samplers), and whether the mean lies inside the reference's interval; <out>/samplers.md, .json and .png.

    python -m benchmarks.sampler_table --model NDM=runs/ndm/ndm-seed0,runs/ndm/ndm-seed1,runs/ndm/ndm-seed2 \\
        --model LSGM=runs/ndm/lsgm-seed0,runs/ndm/lsgm-seed1,runs/ndm/lsgm-seed2 --out runs/benchmark/samplers
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from latent_ndm.comparison import sampler_table
from latent_ndm.evaluation.runner import evaluate
from latent_ndm.runs.config import compose_config
from latent_ndm.runs.hardware import describe

DEFAULT_SAMPLERS = [{"name": n, "grid": g} for n in ("euler", "heun", "rk4") for g in ("uniform", "edm", "logsnr")]


def evaluate_run(run: str, args: argparse.Namespace) -> dict:
    cfg = compose_config("evaluate", [f"ckpt={run}", "metrics=[distance]", f"seed={args.seed}", "progress=false",
                                      f"distance.num={args.num}", f"distance.groups={args.groups}",
                                      f"distance.nfe=[{','.join(str(n) for n in args.nfe)}]", "distance.ode=true",
                                      f"distance.tol={args.reference_tol}", f"distance.batch_size={args.batch_size}"])
    cfg.distance.samplers = args.samplers
    return evaluate(cfg).results["distance"]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", required=True, metavar="NAME=RUN[,RUN...]",
                        help="a model and its runs, one per training seed")
    parser.add_argument("--samplers", type=json.loads, default=DEFAULT_SAMPLERS,
                        help="JSON list of sampler settings (configs/sampler/), default: euler, heun, rk4 x grids")
    parser.add_argument("--nfe", type=lambda s: [int(n) for n in s.split(",")], default=[1, 2, 4, 8, 10])
    parser.add_argument("--reference-tol", type=float, default=1e-5)
    parser.add_argument("--num", type=int, default=256)
    parser.add_argument("--groups", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-nfe", type=int, default=10, help="the few-step goal: NFE at most this")
    parser.add_argument("--compare", action="append", default=[], metavar="NAME:BASELINE",
                        help="also the paired difference NAME - BASELINE per sampler (the i-th runs share a seed)")
    parser.add_argument("--out", type=Path, default=Path("runs/benchmark/samplers"))
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    models: dict[str, list[dict]] = {}
    start = time.perf_counter()
    for spec in args.model:
        name, _, runs = spec.partition("=")
        if not name or not runs:
            parser.error(f"--model needs NAME=RUN[,RUN...], got {spec!r}")
        models[name] = []
        for i, run in enumerate(runs.split(",")):
            cache = args.out / f"{name}-{i}.json"
            if cache.is_file() and json.loads(cache.read_text()).get("run") == run:
                result = json.loads(cache.read_text())["distance"]
            else:
                print(f"{name}: evaluating {run}", flush=True)
                result = evaluate_run(run, args)
                cache.write_text(json.dumps({"run": run, "distance": result}, indent=1) + "\n")
            models[name].append(result)
    reference = "ode"
    result = sampler_table.table(models, reference)
    lines = ["# Sampler table: energy distance against NFE", "",
             f"- command: `python -m benchmarks.sampler_table {' '.join(argv)}`".rstrip(),
             f"- hardware: {describe(torch.device('cuda' if torch.cuda.is_available() else 'cpu'))}; "
             f"{time.perf_counter() - start:.0f} s",
             f"- {args.num} samples per sampler and run against as many held-out images, ± over {args.groups} sample "
             f"groups within a run; the table's intervals are over training seeds (t, n - 1 dof); reference: the "
             f"adaptive ODE (dopri5) at rtol = atol = {args.reference_tol:g}",
             *sampler_table.markdown(result, args.max_nfe)]
    comparisons = []
    for spec in args.compare:
        name, _, baseline = spec.partition(":")
        if name in result and baseline in result:
            comparisons.append(sampler_table.compare(result, name, baseline))
            lines += sampler_table.compare_markdown(comparisons[-1])
    result = {**result, "comparisons": comparisons} if comparisons else result
    (args.out / "samplers.md").write_text("\n".join(lines) + "\n")
    (args.out / "samplers.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    sampler_table.chart({k: v for k, v in result.items() if k != "comparisons"}, args.out / "samplers.png")
    print("\n".join(lines))
    return result


if __name__ == "__main__":
    main()
