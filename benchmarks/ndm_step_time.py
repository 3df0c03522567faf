"""Training-step cost of NDM priors (learnable F) against the LSGM baseline (F = identity), side by side.

Every variant is the prior that `python -m latent_ndm.train stage=ndm <overrides>` builds (the composed config, the
same builders): `default` is exactly the configuration of `stage=ndm` with no override, `lsgm` adds
ndm/transform=identity, and the others change F's kind or size (`ndm.F_size.width`, `ndm.F_size.depth`: F_phi's
U-Net relative to the denoiser's). A step is the NDM objective on a batch of latents (the training t_eps), its
backward and an Adam step over the denoiser and F; the timings alternate between the variants (step 1 of every
variant, then step 2, ...) so that all see the same machine state, and LSGM is built and timed twice in the same
alternation: the ratio of its two medians (`repeat`) says whether the machine was steady enough (within 5%). Per
variant: the median step time and its interquartile range (over --steps >= 20 timed steps after --warmup), the FLOPs
of one step (`step_cost.step_flops`), the time ratio and the FLOP ratio over LSGM and (time ratio) / (FLOP ratio):
1 when a variant's time follows its FLOPs. Where the time goes (`step_cost.profile_parts`, torch.profiler over
--profile-steps more steps): the denoiser, F at x, F at x_hat (the forward process's first and later calls, with a
learned noise scale's), the rest of the objective's arithmetic, backward and the optimizer. Memory is measured per
variant in a fresh process: on CUDA the peak allocated over a few steps; on CPU the bytes autograd saves for backward
in one step. The last line is one JSON object with all of it (`time_ratio`, `flop_ratio`, `time_over_flop_ratio`,
`iqr_step_s`, `parts_s`, `repeat`, ...).

    python -m benchmarks.ndm_step_time                      # the default CPU run's prior: 4x16x16 latents, batch 16
    python -m benchmarks.ndm_step_time --variant wide=ndm.F_size.width=2 --variant d2=ndm.F_size.depth=2
    python -m benchmarks.ndm_step_time --device cuda --precision bf16-mixed --batch 4 \\
        --set ndm/denoiser=celebahq256 --set ndm.latent.channels=8 --set ndm.latent.resolution=32  # the paper's U-Net
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import statistics
import warnings
from collections.abc import Sequence
from typing import Any

import torch

from latent_ndm.comparison.step_cost import (
    CallRanges,
    TrainStep,
    cuda_peak_bytes,
    interquartile,
    prior_step,
    profile_parts,
    saved_activation_bytes,
    step_flops,
    time_alternating,
)
from latent_ndm.model import NDMPrior
from latent_ndm.runs.build import build_ndm_prior, transform_kind
from latent_ndm.runs.config import compose_config
from latent_ndm.runs.targets import instantiate_trusted

# name -> train overrides on top of `stage=ndm` (and the common --set overrides)
VARIANTS: dict[str, list[str]] = {
    "lsgm": ["ndm/transform=identity"],
    "default": [],
    "separable_w1": ["ndm/transform=separable", "ndm.F_size.width=1"],
    "separable_w0.5": ["ndm/transform=separable", "ndm.F_size.width=0.5"],
    "separable_w0.25": ["ndm/transform=separable", "ndm.F_size.width=0.25"],
    "neural_w1": ["ndm/transform=neural", "ndm.F_size.width=1"],
    "neural_w0.5": ["ndm/transform=neural", "ndm.F_size.width=0.5"],
}


def latent_overrides(common: Sequence[str]) -> list[str]:
    """`ndm.latent.*` overrides for what the `stage=ndm` config with `common` leaves to the VAE export (null): the
    latent shape of the `vae` group's VAE at the data resolution. Computed once for all variants."""
    cfg = compose_config("train", ["stage=ndm", *common])
    latent = cfg.ndm.latent
    if latent.channels is not None and latent.resolution is not None:
        return []
    c, r, _ = instantiate_trusted(cfg.vae, _convert_="all").latent_shape(int(cfg.data.resolution))
    return [f"ndm.latent.{key}={value}" for key, value in (("channels", c), ("resolution", r))
            if latent[key] is None]


REPEAT = "lsgm (again)"  # the baseline built and timed a second time in the same alternation
REPEAT_TOLERANCE = 0.05


def build(overrides: Sequence[str], args: argparse.Namespace) -> tuple[TrainStep, dict[str, Any]]:
    """One variant's training step on fixed random latents, and what it is (F's kind, parameter counts, latents).
    `args.set` holds the common overrides, the latent shape included (`latent_overrides`)."""
    step, info, _ = build_with_prior(overrides, args)
    return step, info


def build_with_prior(overrides: Sequence[str], args: argparse.Namespace
                     ) -> tuple[TrainStep, dict[str, Any], NDMPrior]:
    """`build`, and the prior the step trains."""
    cfg = compose_config("train", ["stage=ndm", *args.set, *overrides])
    torch.manual_seed(0)
    prior = build_ndm_prior(cfg.ndm, t_eps=float(cfg.ndm.t_eps))
    batch = args.batch or int(cfg.data.batch_size)
    z = torch.randn(batch, *prior.latent_shape, generator=torch.Generator().manual_seed(1))
    prior = prior.to(args.device).train()
    step = prior_step(prior, z.to(args.device), torch.optim.Adam(list(prior.parameters()), lr=1e-4))
    info = {"overrides": list(overrides), "transform": transform_kind(cfg.ndm),
            "F_params": sum(p.numel() for p in prior.transform.parameters()),
            "denoiser_params": sum(p.numel() for p in prior.denoiser.parameters()),
            "latent_shape": list(prior.latent_shape), "batch": batch}
    return step, info, prior


def part_ranges(prior: NDMPrior) -> list[CallRanges]:
    """The named calls of a prior's step: the denoiser, and the forward process's first call (F at x) and later ones
    (F at x_hat)."""
    return [CallRanges([(prior.denoiser, "forward")], ["denoiser"]),
            CallRanges([(prior.process, "marginals"), (prior.process, "marginal")], ["F at x", "F at x_hat"])]


def precision_context(args: argparse.Namespace) -> contextlib.AbstractContextManager:
    """The autocast of Lightning's bf16-mixed (the whole step; the math layer turns it off where it runs fp32)."""
    if args.precision == "bf16-mixed":
        return torch.autocast(device_type=torch.device(args.device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def with_precision(step: TrainStep, args: argparse.Namespace) -> Any:
    def run() -> None:
        with precision_context(args):
            step()
    return run


def peak_memory(overrides: list[str], args: argparse.Namespace, queue: mp.Queue) -> None:
    """Run in a fresh process: the memory of one variant's step, in MiB."""
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*torch.jit.script.*is deprecated")
    step, _ = build(overrides, args)
    run = with_precision(step, args)
    if args.device.startswith("cuda"):
        queue.put(cuda_peak_bytes(run, args.device, step.resident_bytes(), release=[step.optimizer]) / 2**20)
    else:
        queue.put(saved_activation_bytes(run) / 2**20)


def parse_variant(text: str) -> tuple[str, list[str]]:
    name, sep, overrides = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"--variant takes NAME=OVERRIDE[,OVERRIDE...], got {text!r}")
    return name, [o for o in overrides.split(",") if o]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", action="append", type=parse_variant, default=[], metavar="NAME=OVERRIDES",
                   help="a variant beside lsgm and default (comma-separated train overrides); repeatable")
    p.add_argument("--only", nargs="+", metavar="NAME", help="run only these variants (lsgm and default always run)")
    p.add_argument("--set", action="append", default=[], metavar="OVERRIDE",
                   help="a train override for every variant, e.g. --set ndm/denoiser=celebahq256; repeatable")
    p.add_argument("--batch", type=int, default=None, help="latents per step (default: the config's data.batch_size)")
    p.add_argument("--steps", type=int, default=20,
                   help="timed steps per variant after the warm-up (median and interquartile range; >= 20 for a "
                   "stable median on a loaded machine)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--profile-steps", type=int, default=3,
                   help="steps per variant profiled for the per-part split (0: no split)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--precision", choices=("32", "bf16-mixed"), default="32")
    p.add_argument("--no-memory", action="store_true", help="skip the per-variant memory measurement")
    return p


def run(args: argparse.Namespace) -> dict[str, Any]:
    variants = dict(VARIANTS)
    if args.only:
        unknown = sorted(set(args.only) - set(variants) - {n for n, _ in args.variant})
        if unknown:
            raise SystemExit(f"--only names unknown variants {unknown}; known: {sorted(variants)}")
        variants = {k: v for k, v in variants.items() if k in ("lsgm", "default", *args.only)}
    variants.update(dict(args.variant))
    args.set = [*args.set, *latent_overrides(args.set)]
    torch.set_num_threads(args.threads)
    built = {name: build_with_prior(overrides, args) for name, overrides in variants.items()}
    flops = {n: step_flops(step) for n, (step, _, _) in built.items()}
    again, _, _ = build_with_prior(variants["lsgm"], args)
    timed = {**{n: step for n, (step, _, _) in built.items()}, REPEAT: again}
    times = time_alternating({n: with_precision(step, args) for n, step in timed.items()}, args.steps, args.warmup,
                             args.device)
    repeat_times = times.pop(REPEAT)
    med = {k: statistics.median(v) for k, v in times.items()}
    parts = {n: profile_parts(step, part_ranges(prior), args.profile_steps, args.device,
                              lambda: precision_context(args))
             for n, (step, _, prior) in built.items()} if args.profile_steps > 0 else {}
    mem = memory(variants, args)
    time_ratio = {k: med[k] / med["lsgm"] for k in variants}
    flop_ratio = {k: flops[k] / flops["lsgm"] for k in variants}
    repeat_ratio = statistics.median(repeat_times) / med["lsgm"]
    return {"config": {k: v for k, v in vars(args).items() if k != "variant"},
            "variants": {n: info for n, (_, info, _) in built.items()},
            "median_step_s": med, "iqr_step_s": {k: list(interquartile(v)) for k, v in times.items()},
            "step_s": times, "flops": flops, "time_ratio": time_ratio, "flop_ratio": flop_ratio,
            "time_over_flop_ratio": {k: time_ratio[k] / flop_ratio[k] for k in variants}, "parts_s": parts,
            "repeat": {"variant": "lsgm", "median_step_s": statistics.median(repeat_times), "step_s": repeat_times,
                       "ratio": repeat_ratio, "within_5pct": abs(repeat_ratio - 1) <= REPEAT_TOLERANCE},
            "memory_mib": mem,
            "memory_ratio": {k: (None if mem[k] is None or not mem["lsgm"] else mem[k] / mem["lsgm"])
                             for k in variants}}


def memory(variants: dict[str, list[str]], args: argparse.Namespace) -> dict[str, float | None]:
    """Every variant's step memory in MiB, each in a fresh process (None with --no-memory)."""
    mem: dict[str, float | None] = {}
    ctx = mp.get_context("spawn")
    for name, overrides in variants.items():
        if args.no_memory:
            mem[name] = None
            continue
        q = ctx.Queue()
        proc = ctx.Process(target=peak_memory, args=(overrides, args, q))
        proc.start()
        mem[name] = q.get()
        proc.join()
    return mem


def print_table(result: dict[str, Any], device: str) -> None:
    mem_name = "peak mem (MiB)" if device.startswith("cuda") else "saved act. (MiB)"
    print(f"{'variant':16s} {'F':10s} {'F params':>9s} {'step ms (IQR)':>22s} {'x LSGM':>7s} {'GFLOP':>8s} "
          f"{'x LSGM':>7s} {'time/FLOP':>9s} {mem_name:>17s} {'x LSGM':>7s}")
    for name, info in result["variants"].items():
        mem, mr = result["memory_mib"][name], result["memory_ratio"][name]
        mem_s = f"{mem:17.1f} {mr:7.2f}" if mem is not None else f"{'-':>17s} {'-':>7s}"
        q1, q3 = result["iqr_step_s"][name]
        step = f"{1e3 * result['median_step_s'][name]:.1f} ({1e3 * q1:.1f}-{1e3 * q3:.1f})"
        print(f"{name:16s} {info['transform']:10s} {info['F_params']:9d} {step:>22s} "
              f"{result['time_ratio'][name]:7.2f} {result['flops'][name] / 1e9:8.3f} {result['flop_ratio'][name]:7.2f} "
              f"{result['time_over_flop_ratio'][name]:9.2f} {mem_s}")
    r = result["repeat"]
    print(f"LSGM timed twice in the same alternation: second median / first = {r['ratio']:.3f} "
          f"({'within' if r['within_5pct'] else 'NOT within'} 5%: "
          f"{'steady enough' if r['within_5pct'] else 'the machine was not steady, rerun'})")
    if result["parts_s"]:
        print_parts(result["parts_s"])


def print_parts(parts: dict[str, dict[str, float]]) -> None:
    """Where each variant's step goes (ms per step and share, torch.profiler ranges)."""
    names = [k for k in next(iter(parts.values())) if k != "total"]
    print("per part, ms per step (share of the profiled step; profiler overhead included):")
    print(f"{'variant':16s} " + " ".join(f"{n:>16s}" for n in [*names, "total"]))
    for variant, p in parts.items():
        cells = [f"{1e3 * p[n]:7.1f} ({p[n] / p['total']:4.0%})" for n in names]
        print(f"{variant:16s} " + " ".join(f"{c:>16s}" for c in cells) + f" {1e3 * p['total']:16.1f}")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parser().parse_args(argv)
    warnings.filterwarnings("ignore", message=".*torch.jit.script.*is deprecated")
    result = run(args)
    print_table(result, args.device)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
