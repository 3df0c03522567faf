"""`python -m latent_ndm.toy`: train an NDM (learnable F_phi) and the F = identity baseline on the 2D checkerboard,
print both models' held-out NELBO and ODE NLL bound, and write a PNG and a JSON of the numbers.
"""

from __future__ import annotations

import argparse
import json
import re
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from latent_ndm.diffusion.reverse_process import ReverseProcess
from latent_ndm.diffusion.schedule import VPSchedule
from latent_ndm.toy import evaluate
from latent_ndm.toy.data import CHECKERBOARD_ENTROPY_NATS, CHECKERBOARD_STD, fraction_on_board, sample_checkerboard
from latent_ndm.toy.plot import FigureData, save_figure
from latent_ndm.toy.train import ModelSpec, build_objective, build_process, train

MODELS = (("ndm", True), ("baseline", False))  # (name, learn_transform)
F_TIMES = [0.0, 0.25, 0.5, 0.75, 1.0]
JIT_WARNING = re.escape("`torch.jit.script` is deprecated")  # emitted from inside torch by torch.func.jvp


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The CLI options; `--out` defaults to runs/toy/<YYYYmmdd-HHMMSS>."""
    p = argparse.ArgumentParser(prog="python -m latent_ndm.toy", description=__doc__)
    p.add_argument("--steps", type=int, default=2000, help="training steps per model")
    p.add_argument("--batch", type=int, default=512, help="training batch size")
    p.add_argument("--lr", type=float, default=2e-3, help="peak Adam learning rate (cosine decay)")
    p.add_argument("--t-eps", type=float, default=1e-3, help="lower end of the diffusion time interval")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-points", type=int, default=1000, help="held-out points for the NELBO and ODE NLL")
    p.add_argument("--nelbo-repeats", type=int, default=50, help="objective draws per held-out point")
    p.add_argument("--samples", type=int, default=4000, help="ODE samples per model for the figure")
    p.add_argument("--trajectories", type=int, default=30, help="ODE trajectories per model for the figure")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (1 is fastest for these small networks, and robust on a shared machine)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default runs/toy/<YYYYmmdd-HHMMSS>)")
    args = p.parse_args(argv)
    if args.out is None:
        args.out = Path("runs/toy") / time.strftime("%Y%m%d-%H%M%S")
    return args


def run_model(learn: bool, args: argparse.Namespace, heldout: torch.Tensor) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train and evaluate one model; returns (numbers for the JSON, tensors for the figure)."""
    schedule = VPSchedule()
    process = build_process(learn, CHECKERBOARD_STD, ModelSpec(), schedule, seed=args.seed)

    def data(batch: int, step: int) -> torch.Tensor:  # even seeds; the held-out set uses an odd one
        return sample_checkerboard(batch, seed=2 * (args.seed * 10**7 + step))[0]

    result = train(process, build_objective(schedule, args.t_eps), data, args.steps, args.batch, lr=args.lr,
                   seed=args.seed)
    numbers, tensors = evaluate_model(evaluate.as_float64(result.process), heldout.double(), args)
    tail = result.losses[-100:]
    numbers.update(train_seconds=result.seconds, final_train_loss=sum(tail) / len(tail))
    return numbers, tensors


def evaluate_model(model: ReverseProcess, x: torch.Tensor, args: argparse.Namespace
                   ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Held-out NELBO and ODE NLL bound, ODE samples, trajectories and F(x, t) of a float64 model."""
    objective = build_objective(model.schedule, args.t_eps, stratified=False)
    with torch.no_grad():
        nelbo = evaluate.nelbo(model, objective, x, args.nelbo_repeats, seed=args.seed + 1)
    ode = evaluate.ode_nll(model, x, args.t_eps, seed=args.seed + 2)
    samples, sample_nfe = evaluate.samples(model, args.samples, args.t_eps, seed=args.seed + 3)
    z_1 = torch.randn(args.trajectories, 2, dtype=x.dtype, generator=torch.Generator().manual_seed(args.seed + 4))
    F = evaluate.transform_at(model, x, F_TIMES)
    displacement = {f"{t:g}": (F_t - x).norm(dim=1).mean().item() for t, F_t in zip(F_TIMES, F, strict=True)}
    numbers = dict(nelbo=asdict(nelbo), ode_nll_bound=asdict(ode.nll), ode_nll_nfe=ode.nfe, sample_nfe=sample_nfe,
                   samples_on_board=fraction_on_board(samples), F_displacement=displacement)
    tensors = dict(samples=samples, paths=evaluate.trajectories(model, z_1, args.t_eps), F=F)
    return numbers, tensors


def format_table(results: dict[str, dict[str, Any]]) -> str:
    """model | NELBO | its parts | ODE NLL bound | NFE | on-board fraction | train time, plus the data entropy."""
    head = (f"{'model':<10} | {'NELBO (nats)':>16} | {'rec':>7} {'diff':>7} {'prior':>7} | {'ODE NLL bound':>16} | "
            f"{'NFE':>4} | {'on board':>8} | {'train (s)':>9}")
    rows = [head, "-" * len(head)]
    for name, r in results.items():
        n, o = r["nelbo"], r["ode_nll_bound"]
        rows.append(f"{name:<10} | {n['total']['mean']:7.3f} +- {n['total']['se']:5.3f} | {n['rec']:7.3f} "
                    f"{n['diff']['mean']:7.3f} {n['prior']:7.3f} | {o['mean']:7.3f} +- {o['se']:5.3f} | "
                    f"{r['ode_nll_nfe']:>4} | {r['samples_on_board']:8.3f} | {r['train_seconds']:9.1f}")
    rows.append("F displacement E||F(x,t) - x|| of the NDM at t = " + ", ".join(
        f"{t}: {d:.3f}" for t, d in results["ndm"]["F_displacement"].items()))
    rows.append(f"reference: entropy of the true checkerboard density = log 8 = {CHECKERBOARD_ENTROPY_NATS:.3f} nats")
    return "\n".join(rows)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Train both models, write <out>/toy.json and <out>/toy.png, print the table; returns the JSON dict."""
    torch.manual_seed(args.seed)
    heldout, square = sample_checkerboard(args.eval_points, seed=2 * args.seed * 10**7 + 1)
    results, tensors = {}, {}
    for name, learn in MODELS:
        print(f"[toy] training {name} ({args.steps} steps, batch {args.batch}) ...", flush=True)
        results[name], tensors[name] = run_model(learn, args, heldout)
    print(format_table(results), flush=True)
    titles = {name: f"{name}: ODE samples ({r['samples_on_board']:.1%} on the board)" for name, r in results.items()}
    save_figure(FigureData(data=heldout, square=square, samples={k: v["samples"] for k, v in tensors.items()},
                           paths={k: v["paths"] for k, v in tensors.items()}, F_times=F_TIMES,
                           F_ndm=tensors["ndm"]["F"], titles=titles), args.out / "toy.png")
    report = dict(config={k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                  model_spec=asdict(ModelSpec()), time_sampler="LikelihoodISTime",
                  data_entropy_nats=CHECKERBOARD_ENTROPY_NATS, models=results)
    (args.out / "toy.json").write_text(json.dumps(report, indent=2))
    print(f"[toy] wrote {args.out / 'toy.png'} and {args.out / 'toy.json'}", flush=True)
    return report


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    args = parse_args(argv)
    start, threads = time.perf_counter(), torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=JIT_WARNING, category=FutureWarning)
            run(args)
    finally:
        torch.set_num_threads(threads)
    print(f"[toy] total wall time {time.perf_counter() - start:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
