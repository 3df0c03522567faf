"""`python -m latent_ndm.toy`: train four models on the 2D checkerboard for several seeds: the F = identity baseline,
the NDM (learnable F_phi), the NFDM (learnable F_phi and noise scale) and NFDM-straight (the NFDM's forward process
trained for straight ODE paths, not on a bound); print the held-out NELBO and ODE NLL bound of the three bound-trained
models, and every model's sample quality (energy distance to held-out data) with the adaptive ODE and with K Euler
steps, per seed and as mean +- SE over seeds with paired differences; write a PNG (first seed) and a JSON.
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
from latent_ndm.distance import energy_distance
from latent_ndm.toy import evaluate
from latent_ndm.toy.data import CHECKERBOARD_ENTROPY_NATS, CHECKERBOARD_STD, fraction_on_board, sample_checkerboard
from latent_ndm.toy.plot import FigureData, save_figure
from latent_ndm.toy.train import (
    EXTRA_MODELS,
    TOY_MODELS,
    ModelSpec,
    ToyModel,
    build_objective,
    build_process,
    model_objective,
    train,
)

MODELS = {m.name: m for m in (*TOY_MODELS, *EXTRA_MODELS)}
DEFAULT_MODELS = [m.name for m in TOY_MODELS]
BOUND_METRICS = ("nelbo", "ode_nll_bound")
PAIRS = (("ndm", "baseline"), ("nfdm", "ndm"))  # paired differences of the bounds: (model, against)
STRAIGHT_PAIRS = (("nfdm-straight", "nfdm"), ("ndm-straight", "ndm"))  # paired sample quality at each K
LABELS = {"ndm": "NDM", "baseline": "baseline", "nfdm": "NFDM", "nfdm-straight": "NFDM-straight",
          "ndm-straight": "NDM-straight"}
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
    p.add_argument("--models", default=",".join(DEFAULT_MODELS),
                   help=f"comma-separated subset of {', '.join(MODELS)} (default: all but ndm-straight)")
    p.add_argument("--euler-steps", default="1,2,4,8", help="the K of the K-step Euler samplers, comma-separated")
    p.add_argument("--curvature-weight", type=float, default=0.1,
                   help="weight of the path-acceleration penalty of the straight models (not tuned)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (1 is fastest for these small networks, and robust on a shared machine)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default runs/toy/<YYYYmmdd-HHMMSS>)")
    args = p.parse_args(argv)
    if args.seeds < 1:
        p.error(f"--seeds must be >= 1, got {args.seeds}")
    if args.out is None:
        args.out = Path("runs/toy") / time.strftime("%Y%m%d-%H%M%S")
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in args.models if m not in MODELS]
    if unknown or not args.models:
        p.error(f"--models must name some of {', '.join(MODELS)}, got {unknown or 'nothing'}")
    try:
        args.euler_steps = sorted({int(k) for k in args.euler_steps.split(",")})
    except ValueError:
        p.error(f"--euler-steps must be comma-separated integers, got {args.euler_steps!r}")
    if min(args.euler_steps) < 1:
        p.error("--euler-steps must be >= 1")
    return args


def model_spec(args: argparse.Namespace) -> ModelSpec:
    """The toy networks' sizes, with G_phi's from the command line."""
    return ModelSpec(transform_hidden=args.transform_hidden, transform_depth=args.transform_depth,
                     transform_time_scale=args.transform_time_scale)


def run_model(model: ToyModel, args: argparse.Namespace, seed: int, heldout: torch.Tensor, figure: bool
              ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train and evaluate one model for one seed; returns (numbers for the JSON, tensors for the figure)."""
    schedule = VPSchedule()
    process = build_process(model, CHECKERBOARD_STD, model_spec(args), schedule, seed=seed)

    def data(batch: int, step: int) -> torch.Tensor:  # even seeds; the held-out set uses an odd one
        return sample_checkerboard(batch, seed=2 * (seed * 10**7 + step))[0]

    objective = model_objective(model, schedule, args.t_eps, args.curvature_weight)
    result = train(process, objective, data, args.steps, args.batch, lr=args.lr, seed=seed,
                   transform_lr=args.transform_lr)
    start = time.perf_counter()
    numbers, tensors = evaluate_model(model, evaluate.as_float64(result.process), heldout.double(), args, seed,
                                      figure)
    tail = result.losses[-100:]
    numbers.update(train_seconds=result.seconds, eval_seconds=time.perf_counter() - start,
                   final_train_loss=sum(tail) / len(tail))
    return numbers, tensors


def evaluate_model(model: ToyModel, process: ReverseProcess, x: torch.Tensor, args: argparse.Namespace, seed: int,
                   figure: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """Held-out NELBO and ODE NLL bound (bound-trained models only), samples of the adaptive ODE and of K-step Euler
    with their energy distance to x and on-board fraction, F(x, t) of a float64 model (and ODE trajectories when
    `figure`)."""
    numbers: dict[str, Any] = dict(seed=seed, model=model.name, is_bound=model.is_bound)
    if model.is_bound:
        objective = build_objective(process.schedule, args.t_eps, stratified=False)
        with torch.no_grad():
            nelbo = evaluate.nelbo(process, objective, x, args.nelbo_repeats, seed=seed + 1)
        ode = evaluate.ode_nll(process, x, args.t_eps, seed=seed + 2, tol=args.ode_tol)
        numbers.update(nelbo=asdict(nelbo), ode_nll_bound=asdict(ode.nll), ode_nll_nfe=ode.nfe)
    samples, sample_nfe = evaluate.samples(process, args.samples, args.t_eps, seed=seed + 3)
    euler = {k: evaluate.euler_samples(process, args.samples, k, args.t_eps, seed=seed + 3) for k in args.euler_steps}
    quality = {"ode": energy_distance(samples, x), **{str(k): energy_distance(e, x) for k, e in euler.items()}}
    on_board = {"ode": fraction_on_board(samples), **{str(k): fraction_on_board(e) for k, e in euler.items()}}
    F = evaluate.transform_at(process, x, F_TIMES)
    displacement = {f"{t:g}": (F_t - x).norm(dim=1).mean().item() for t, F_t in zip(F_TIMES, F, strict=True)}
    numbers.update(sample_nfe=sample_nfe, samples_on_board=on_board["ode"], energy_distance=quality,
                   on_board=on_board, F_displacement=displacement)
    tensors: dict[str, Any] = dict(samples=samples, euler=euler, F=F)
    if figure:
        z_1 = torch.randn(args.trajectories, 2, dtype=x.dtype, generator=torch.Generator().manual_seed(seed + 4))
        tensors["paths"] = evaluate.trajectories(process, z_1, args.t_eps)
    return numbers, tensors


def summarise(per_seed: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Mean +- SE over seeds of each model's held-out bounds (bound-trained models) and energy distances; the paired
    differences (same seed: same data stream, held-out set and initial denoiser) of the bounds for `PAIRS` and of the
    energy distance for `STRAIGHT_PAIRS` at each sampler; the NDM's F displacement at each t."""
    names = list(per_seed[0])
    values = {name: {} for name in names}
    for name in names:
        if per_seed[0][name]["is_bound"]:
            values[name]["nelbo"] = [s[name]["nelbo"]["total"]["mean"] for s in per_seed]
            values[name]["ode_nll_bound"] = [s[name]["ode_nll_bound"]["mean"] for s in per_seed]
        for sampler in per_seed[0][name]["energy_distance"]:
            values[name][f"energy_distance_{sampler}"] = [s[name]["energy_distance"][sampler] for s in per_seed]
    paired: dict[str, Any] = {}
    for a, b in PAIRS:
        if a in names and b in names:
            paired[f"{a} - {b}"] = {m: stats.paired_difference(values[a][m], values[b][m], unit="nats",
                                                               name=LABELS[a], baseline=b) for m in BOUND_METRICS}
    for a, b in STRAIGHT_PAIRS:
        if a in names and b in names:
            paired[f"{a} - {b}"] = {m: stats.paired_difference(values[a][m], values[b][m], unit="", name=LABELS[a],
                                                               baseline=LABELS[b])
                                    for m in values[a] if m.startswith("energy_distance")}
    out: dict[str, Any] = dict(
        n_seeds=len(per_seed),
        models={name: {m: {**asdict(stats.estimate(v)), "values": v} for m, v in values[name].items()}
                for name in names},
        paired_difference=paired,
    )
    if "ndm" in names:
        out["F_displacement"] = {t: asdict(stats.estimate([s["ndm"]["F_displacement"][t] for s in per_seed]))
                                 for t in per_seed[0]["ndm"]["F_displacement"]}
    return out


def format_table(per_seed: list[dict[str, dict[str, Any]]], summary: dict[str, Any]) -> str:
    """Per seed: model | NELBO | its parts | ODE NLL bound | NFE | energy distance (adaptive ODE and each K) | train
    time; then the mean +- SE over seeds, the paired differences with their verdicts, the F displacement and the data
    entropy."""
    samplers = list(per_seed[0][next(iter(per_seed[0]))]["energy_distance"])
    ed_head = " ".join(f"{'ED ' + ('ode' if k == 'ode' else 'K=' + k):>8}" for k in samplers)
    head = (f"{'seed':>4} {'model':<13} | {'NELBO (nats)':>16} | {'rec':>7} {'diff':>7} {'prior':>7} | "
            f"{'ODE NLL bound':>16} | {'NFE':>4} | {ed_head} | {'train (s)':>9}")
    rows = [head, "-" * len(head)]
    for per_model in per_seed:
        for name, r in per_model.items():
            ed = " ".join(f"{r['energy_distance'][k]:8.4f}" for k in samplers)
            if r["is_bound"]:
                n, o = r["nelbo"], r["ode_nll_bound"]
                bound = (f"{n['total']['mean']:7.3f} +- {n['total']['se']:5.3f} | {n['rec']:7.3f} "
                         f"{n['diff']['mean']:7.3f} {n['prior']:7.3f} | {o['mean']:7.3f} +- {o['se']:5.3f} | "
                         f"{r['ode_nll_nfe']:>4}")
            else:
                bound = f"{'(not a bound)':>16} | {'':>7} {'':>7} {'':>7} | {'':>16} | {'':>4}"
            rows.append(f"{r['seed']:>4} {name:<13} | {bound} | {ed} | {r['train_seconds']:9.1f}")
    k = summary["n_seeds"]
    rows.append(f"over {k} seed{'s' if k > 1 else ''} (mean ± standard error over seeds; per seed above, the +- is "
                "the held-out Monte Carlo SE; ED = energy distance of 'ode' (adaptive) or K-step Euler samples to "
                "held-out data, lower is better):")
    for name, m in summary["models"].items():
        parts = [f"{label} {stats.Estimate(m[key]['mean'], m[key]['se'], m[key]['n']).text()} nats"
                 for key, label in (("nelbo", "NELBO"), ("ode_nll_bound", "ODE NLL bound")) if key in m]
        for s in samplers:
            ed = m[f"energy_distance_{s}"]
            parts.append(f"ED {s}: {stats.Estimate(ed['mean'], ed['se'], ed['n']).text()}")
        rows.append(f"  {name:<13} " + " | ".join(parts))
    for metrics in summary["paired_difference"].values():
        for metric, d in metrics.items():
            rows.append(f"  paired {metric}: {d['verdict']}")
    if "F_displacement" in summary:
        rows.append("  F displacement E||F(x,t) - x|| of the NDM at t = " + ", ".join(
            f"{t}: {stats.Estimate(d['mean'], d['se'], d['n']).text()}" for t, d in summary["F_displacement"].items()))
    rows.append(f"reference: entropy of the true checkerboard density = log 8 = {CHECKERBOARD_ENTROPY_NATS:.3f} nats")
    return "\n".join(rows)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Train the chosen models for each seed, write <out>/toy.json and <out>/toy.png (first seed), print the table;
    returns the JSON dict."""
    seeds = [args.seed + i for i in range(args.seeds)]
    per_seed: list[dict[str, dict[str, Any]]] = []
    figure: dict[str, Any] = {}
    for i, seed in enumerate(seeds):
        torch.manual_seed(seed)
        heldout, square = sample_checkerboard(args.eval_points, seed=2 * seed * 10**7 + 1)
        results, tensors = {}, {}
        for name in args.models:
            print(f"[toy] seed {seed}: training {name} ({args.steps} steps, batch {args.batch}) ...", flush=True)
            results[name], tensors[name] = run_model(MODELS[name], args, seed, heldout, figure=i == 0)
        per_seed.append(results)
        if i == 0:
            figure = dict(heldout=heldout, square=square, tensors=tensors, results=results)
    summary = summarise(per_seed)
    print(format_table(per_seed, summary), flush=True)
    first, tensors = figure["results"], figure["tensors"]
    titles = {name: f"{name}: adaptive ODE ({r['on_board']['ode']:.1%} on the board, ED "
                    f"{r['energy_distance']['ode']:.4f})" for name, r in first.items()}
    euler_titles = {name: {k: f"{name}, {k} Euler step{'s' * (int(k) > 1)}: ED {ed:.4f}"
                           for k, ed in r["energy_distance"].items() if k != "ode"} for name, r in first.items()}
    verdict = next((metrics["nelbo"]["verdict"] for metrics in summary["paired_difference"].values()
                    if "nelbo" in metrics), "")
    F_model = "ndm" if "ndm" in tensors else None
    save_figure(FigureData(data=figure["heldout"], square=figure["square"],
                           samples={k: v["samples"] for k, v in tensors.items()},
                           paths={k: v["paths"] for k, v in tensors.items()}, F_times=F_TIMES,
                           F_ndm=tensors[F_model]["F"] if F_model else [], titles=titles, seed=seeds[0],
                           summary=verdict, euler={k: v["euler"] for k, v in tensors.items()},
                           euler_titles=euler_titles), args.out / "toy.png")
    report = dict(config={k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, seeds=seeds,
                  model_spec=asdict(model_spec(args)), time_sampler="LikelihoodISTime",
                  models={name: asdict(MODELS[name]) for name in args.models},
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
