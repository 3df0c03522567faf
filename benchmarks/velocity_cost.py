"""What one probability-flow evaluation costs: NDM against LSGM (or any runs), side by side, split into its parts.

A sampler's cost is its NFE times the cost of one velocity v(z, t) = f(z, t, x_hat(z, t)). For each run this times,
on the same batch of latents and times, alternating between the runs so that all see the same machine state:
the whole velocity, the denoiser x_hat alone, the transform's F and dF/dt at x_hat alone (the F network; nothing for
F = identity), and the rest (schedule and drift arithmetic: the whole minus the two). Medians over `--repeats`. The
last line is one JSON object with every part per run and each run's velocity time over the first run's.

    python -m benchmarks.velocity_cost --run NDM=runs/ndm/default --run LSGM=runs/ndm/lsgm --batch 64
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch

from latent_ndm.evaluation.generation import latent_shape
from latent_ndm.runs.load import load_run


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


@torch.no_grad()
def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", action="append", required=True, metavar="NAME=RUN")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    runs = {}
    for spec in args.run:
        name, _, path = spec.partition("=")
        run = load_run(path)
        process = run.model.prior.reverse
        shape = (args.batch, *latent_shape(run))
        g = torch.Generator().manual_seed(0)
        z, t = torch.randn(shape, generator=g), 0.01 + 0.99 * torch.rand(args.batch, generator=g)
        x_hat = process.denoiser(z, t)
        runs[name] = {
            "velocity": lambda p=process, z=z, t=t: p.velocity(z, t),
            "denoiser": lambda p=process, z=z, t=t: p.denoiser(z, t),
            "transform": lambda p=process, x=x_hat, t=t: p.transform.F_and_dF_dt(x, t),
        }
    times: dict[str, dict[str, list[float]]] = {n: {k: [] for k in parts} for n, parts in runs.items()}
    for i in range(args.warmup + args.repeats):
        for name, parts in runs.items():
            for part, fn in parts.items():
                seconds = timed(fn)
                if i >= args.warmup:
                    times[name][part].append(seconds)
    first = next(iter(runs))
    result: dict = {"batch": args.batch, "repeats": args.repeats, "threads": torch.get_num_threads(), "runs": {}}
    print(f"{'run':<14} {'velocity ms':>12} {'denoiser ms':>12} {'transform ms':>13} {'rest ms':>9} {'ratio':>7}")
    base = statistics.median(times[first]["velocity"])
    for name, parts in times.items():
        med = {k: statistics.median(v) for k, v in parts.items()}
        med["rest"] = med["velocity"] - med["denoiser"] - med["transform"]
        ratio = med["velocity"] / base
        result["runs"][name] = {**{k: v * 1e3 for k, v in med.items()}, "ratio": ratio}
        print(f"{name:<14} {med['velocity'] * 1e3:12.2f} {med['denoiser'] * 1e3:12.2f} "
              f"{med['transform'] * 1e3:13.2f} {med['rest'] * 1e3:9.2f} {ratio:7.2f}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
