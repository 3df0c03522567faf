"""`python -m latent_ndm.toy`: train an NDM (learnable F_phi) and the F = identity baseline on the 2D checkerboard
for several seeds, print both models' held-out NELBO and ODE NLL bound per seed and as mean +- SE over seeds with the
paired difference NDM - baseline, and write a PNG (of the first seed) and a JSON of the numbers.
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

from latent_ndm import stats
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
    p.add_argument("--steps", type=int, default=1500, help="training steps per model and seed")
    p.add_argument("--batch", type=int, default=256,
                   help="training batch size (1500 x 256 keeps 3 seeds of both models at about 5 min on one core)")
    p.add_argument("--lr", type=float, default=2e-3, help="peak Adam learning rate (cosine decay)")
    p.add_argument("--t-eps", type=float, default=1e-3, help="lower end of the diffusion time interval")
    p.add_argument("--seed", type=int, default=0, help="the first seed; the seeds are seed, seed + 1, ...")
    p.add_argument("--seeds", type=int, default=3,
                   help="number of seeds (each trains both models on its own data stream and held-out set)")
    p.add_argument("--transform-lr", type=float, default=None,
                   help="peak Adam learning rate of F_phi's parameters (default: --lr)")
    spec = ModelSpec()
    p.add_argument("--transform-hidden", type=int, default=spec.transform_hidden, help="width of G_phi's TimeMLP")
    p.add_argument("--transform-depth", type=int, default=spec.transform_depth, help="blocks of G_phi's TimeMLP")
    p.add_argument("--transform-time-scale", type=float, default=spec.transform_time_scale,
                   help="time-embedding scale s of G_phi (e(t) = [cos(s t omega), sin(s t omega)])")
    p.add_argument("--eval-points", type=int, default=1000, help="held-out points for the NELBO and ODE NLL")
    p.add_argument("--nelbo-repeats", type=int, default=50, help="objective draws per held-out point")
    p.add_argument("--samples", type=int, default=2000,
                   help="ODE samples per model and seed (the on-board fraction; the figure shows the first seed's)")
    p.add_argument("--ode-tol", type=float, default=1e-4,
                   help="rtol = atol of the ODE NLL solve (1e-5 moved a trained model's ODE NLL by < 0.001 nats, "
                        "against a held-out SE of 0.016, at twice the cost)")
    p.add_argument("--trajectories", type=int, default=30, help="ODE trajectories per model for the figure")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (1 is fastest for these small networks, and robust on a shared machine)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default runs/toy/<YYYYmmdd-HHMMSS>)")
    args = p.parse_args(argv)
    if args.seeds < 1:
        p.error(f"--seeds must be >= 1, got {args.seeds}")
    if args.out is None:
        args.out = Path("runs/toy") / time.strftime("%Y%m%d-%H%M%S")
    return args


def model_spec(args: argparse.Namespace) -> ModelSpec:
    """The toy networks' sizes, with G_phi's from the command line."""
    return ModelSpec(transform_hidden=args.transform_hidden, transform_depth=args.transform_depth,
                     transform_time_scale=args.transform_time_scale)


def run_model(learn: bool, args: argparse.Namespace, seed: int, heldout: torch.Tensor, figure: bool
              ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train and evaluate one model for one seed; returns (numbers for the JSON, tensors for the figure)."""
    schedule = VPSchedule()
    process = build_process(learn, CHECKERBOARD_STD, model_spec(args), schedule, seed=seed)

    def data(batch: int, step: int) -> torch.Tensor:  # even seeds; the held-out set uses an odd one
        return sample_checkerboard(batch, seed=2 * (seed * 10**7 + step))[0]

    result = train(process, build_objective(schedule, args.t_eps), data, args.steps, args.batch, lr=args.lr,
                   seed=seed, transform_lr=args.transform_lr)
    start = time.perf_counter()
    numbers, tensors = evaluate_model(evaluate.as_float64(result.process), heldout.double(), args, seed, figure)
    tail = result.losses[-100:]
    numbers.update(train_seconds=result.seconds, eval_seconds=time.perf_counter() - start,
                   final_train_loss=sum(tail) / len(tail))
    return numbers, tensors


def evaluate_model(model: ReverseProcess, x: torch.Tensor, args: argparse.Namespace, seed: int, figure: bool
                   ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Held-out NELBO and ODE NLL bound, ODE samples and F(x, t) of a float64 model (and ODE trajectories when
    `figure`)."""
    objective = build_objective(model.schedule, args.t_eps, stratified=False)
    with torch.no_grad():
        nelbo = evaluate.nelbo(model, objective, x, args.nelbo_repeats, seed=seed + 1)
    ode = evaluate.ode_nll(model, x, args.t_eps, seed=seed + 2, tol=args.ode_tol)
    samples, sample_nfe = evaluate.samples(model, args.samples, args.t_eps, seed=seed + 3)
    F = evaluate.transform_at(model, x, F_TIMES)
    displacement = {f"{t:g}": (F_t - x).norm(dim=1).mean().item() for t, F_t in zip(F_TIMES, F, strict=True)}
    numbers = dict(seed=seed, nelbo=asdict(nelbo), ode_nll_bound=asdict(ode.nll), ode_nll_nfe=ode.nfe,
                   sample_nfe=sample_nfe, samples_on_board=fraction_on_board(samples), F_displacement=displacement)
    tensors: dict[str, Any] = dict(samples=samples, F=F)
    if figure:
        z_1 = torch.randn(args.trajectories, 2, dtype=x.dtype, generator=torch.Generator().manual_seed(seed + 4))
        tensors["paths"] = evaluate.trajectories(model, z_1, args.t_eps)
    return numbers, tensors


def summarise(per_seed: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Mean +- SE over seeds of each model's held-out NELBO and ODE NLL bound, the paired differences NDM - baseline
    (same seed: same data stream, held-out set and initial denoiser) and the NDM's F displacement at each t."""
    names = [name for name, _ in MODELS]
    metric = {"nelbo": lambda r: r["nelbo"]["total"]["mean"], "ode_nll_bound": lambda r: r["ode_nll_bound"]["mean"]}
    values = {m: {name: [get(s[name]) for s in per_seed] for name in names} for m, get in metric.items()}
    return dict(
        n_seeds=len(per_seed),
        models={name: {m: {**asdict(stats.estimate(values[m][name])), "values": values[m][name]} for m in metric}
                for name in names},
        paired_difference={m: stats.paired_difference(values[m]["ndm"], values[m]["baseline"], unit="nats",
                                                      baseline="baseline") for m in metric},
        F_displacement={t: asdict(stats.estimate([s["ndm"]["F_displacement"][t] for s in per_seed]))
                        for t in per_seed[0]["ndm"]["F_displacement"]},
    )


def format_table(per_seed: list[dict[str, dict[str, Any]]], summary: dict[str, Any]) -> str:
    """Per seed: model | NELBO | its parts | ODE NLL bound | NFE | on-board fraction | train time; then the mean +- SE
    over seeds, the paired differences NDM - baseline with their verdicts, the F displacement and the data entropy."""
    head = (f"{'seed':>4} {'model':<9} | {'NELBO (nats)':>16} | {'rec':>7} {'diff':>7} {'prior':>7} | "
            f"{'ODE NLL bound':>16} | {'NFE':>4} | {'on board':>8} | {'train (s)':>9}")
    rows = [head, "-" * len(head)]
    for per_model in per_seed:
        for name, r in per_model.items():
            n, o = r["nelbo"], r["ode_nll_bound"]
            rows.append(f"{r['seed']:>4} {name:<9} | {n['total']['mean']:7.3f} +- {n['total']['se']:5.3f} | "
                        f"{n['rec']:7.3f} {n['diff']['mean']:7.3f} {n['prior']:7.3f} | {o['mean']:7.3f} +- "
                        f"{o['se']:5.3f} | {r['ode_nll_nfe']:>4} | {r['samples_on_board']:8.3f} | "
                        f"{r['train_seconds']:9.1f}")
    k = summary["n_seeds"]
    rows.append(f"over {k} seed{'s' if k > 1 else ''} (mean ± standard error over seeds; per seed above, the +- is "
                "the held-out Monte Carlo SE):")
    for name, m in summary["models"].items():
        nel, ode = (stats.Estimate(m[key]["mean"], m[key]["se"], m[key]["n"]) for key in ("nelbo", "ode_nll_bound"))
        rows.append(f"  {name:<9} NELBO {nel.text()} nats | ODE NLL bound {ode.text()} nats")
    for key, label in (("nelbo", "NELBO"), ("ode_nll_bound", "ODE NLL bound")):
        rows.append(f"  paired {label}: {summary['paired_difference'][key]['verdict']}")
    rows.append("  F displacement E||F(x,t) - x|| of the NDM at t = " + ", ".join(
        f"{t}: {stats.Estimate(d['mean'], d['se'], d['n']).text()}" for t, d in summary["F_displacement"].items()))
    rows.append(f"reference: entropy of the true checkerboard density = log 8 = {CHECKERBOARD_ENTROPY_NATS:.3f} nats")
    return "\n".join(rows)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Train both models for each seed, write <out>/toy.json and <out>/toy.png (first seed), print the table;
    returns the JSON dict."""
    seeds = [args.seed + i for i in range(args.seeds)]
    per_seed: list[dict[str, dict[str, Any]]] = []
    figure: dict[str, Any] = {}
    for i, seed in enumerate(seeds):
        torch.manual_seed(seed)
        heldout, square = sample_checkerboard(args.eval_points, seed=2 * seed * 10**7 + 1)
        results, tensors = {}, {}
        for name, learn in MODELS:
            print(f"[toy] seed {seed}: training {name} ({args.steps} steps, batch {args.batch}) ...", flush=True)
            results[name], tensors[name] = run_model(learn, args, seed, heldout, figure=i == 0)
        per_seed.append(results)
        if i == 0:
            figure = dict(heldout=heldout, square=square, tensors=tensors, results=results)
    summary = summarise(per_seed)
    print(format_table(per_seed, summary), flush=True)
    first = figure["results"]
    titles = {name: f"{name}: ODE samples ({r['samples_on_board']:.1%} on the board)" for name, r in first.items()}
    tensors = figure["tensors"]
    save_figure(FigureData(data=figure["heldout"], square=figure["square"],
                           samples={k: v["samples"] for k, v in tensors.items()},
                           paths={k: v["paths"] for k, v in tensors.items()}, F_times=F_TIMES,
                           F_ndm=tensors["ndm"]["F"], titles=titles, seed=seeds[0],
                           summary=summary["paired_difference"]["nelbo"]["verdict"]), args.out / "toy.png")
    report = dict(config={k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, seeds=seeds,
                  model_spec=asdict(model_spec(args)), time_sampler="LikelihoodISTime",
                  data_entropy_nats=CHECKERBOARD_ENTROPY_NATS, summary=summary,
                  per_seed=per_seed)
    (args.out / "toy.json").write_text(json.dumps(report, indent=2))
    print(f"[toy] wrote {args.out / 'toy.png'} (seed {seeds[0]}) and {args.out / 'toy.json'}", flush=True)
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
