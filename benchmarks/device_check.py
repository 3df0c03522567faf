"""One device check: what a lent GPU should measure in a few minutes, printed as one JSON line.

Given a CUDA device (`--device cuda`, the default when one is present) it measures, at the paper's scale:

1. the training step of the paper U-Net priors in bf16 at batch 4 (8x32x32 latents): step time and peak memory of
   the default F (separable, width 0.25), the width-1 separable F and the neural F (jvp), each as a ratio to LSGM's,
   timed alternately (`benchmarks.ndm_step_time`);
2. the paper VAE's training step (NELBO + backward, 256x256 5-bit images) in bf16: peak memory per image;
3. sampling 256x256 images (prior + decoder, random weights: the NFE of a trained model differs, the cost of an
   evaluation does not): images/s with the adaptive ODE at tol 1e-2 and with RK4 in 2 steps (8 NFE, `sample`'s
   default);
4. the compile speed-up: the default prior's step with `stage.speed.compile` against without.

Each part is timed and the whole stops starting new parts after `--budget-s` (default 420 s, inside the 8 minutes a
lent device allows); a part that fails is recorded with its error, not fatal. `--tiny` (the default on a CPU) runs
every part at a toy size, which the tests do:

    python -m benchmarks.device_check                 # on the lent GPU: one JSON line
    python -m benchmarks.device_check --tiny          # anywhere, seconds
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch

from benchmarks import ndm_step_time
from latent_ndm.comparison.step_cost import cuda_peak_bytes, saved_activation_bytes, sync, time_alternating
from latent_ndm.diffusion.samplers import RK4, AdaptiveODE
from latent_ndm.model import LatentModel
from latent_ndm.runs.build import build_ndm_prior
from latent_ndm.runs.config import compose_config
from latent_ndm.runs.targets import instantiate_trusted
from latent_ndm.training.speed import compiled_networks

PAPER = {"set": ["ndm/denoiser=celebahq256", "ndm.latent.channels=8", "ndm.latent.resolution=32"], "batch": 4,
         "vae": ["vae=celebahq256", "data.resolution=256"], "vae_batch": 4, "samples": 8, "steps": 6}
TINY = {"set": ["ndm/denoiser=tiny", "ndm.latent.channels=4", "ndm.latent.resolution=8"], "batch": 2,
        "vae": ["vae=small", "data.resolution=32"], "vae_batch": 2, "samples": 2, "steps": 2}
VARIANTS = ("lsgm", "default", "separable_w1", "neural_w1")


def peak_of(step: Callable[[], None], device: str) -> float:
    """MiB: the CUDA peak of one step, or on a CPU the bytes autograd saves for backward."""
    if device.startswith("cuda"):
        return cuda_peak_bytes(step, device) / 2**20
    return saved_activation_bytes(step) / 2**20


def autocast(device: str, bf16: bool) -> Any:
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16, enabled=bf16)


def step_ratios(size: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    ns = argparse.Namespace(set=list(size["set"]), batch=size["batch"], steps=size["steps"], warmup=1,
                            threads=torch.get_num_threads(), device=args.device,
                            precision="bf16-mixed" if args.bf16 else "32", no_memory=True, only=None, variant=[])
    built = {n: ndm_step_time.build(ndm_step_time.VARIANTS[n], ns) for n in VARIANTS}
    runs = {n: ndm_step_time.with_precision(step, ns) for n, (step, _) in built.items()}
    times = time_alternating(runs, size["steps"], 1, args.device)
    med = {n: statistics.median(v) for n, v in times.items()}
    mem = {n: peak_of(runs[n], args.device) for n in VARIANTS}
    return {"step_ms": {n: 1e3 * v for n, v in med.items()},
            "time_ratio": {n: med[n] / med["lsgm"] for n in VARIANTS},
            "memory_mib": mem, "memory_ratio": {n: mem[n] / mem["lsgm"] for n in VARIANTS},
            "memory_per_image_mib": {n: mem[n] / size["batch"] for n in VARIANTS}}


def vae_memory(size: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    cfg = compose_config("train", ["stage=vae", *size["vae"]])
    torch.manual_seed(0)
    vae = instantiate_trusted(cfg.vae, _convert_="all").to(args.device).train()
    res = int(cfg.data.resolution)
    x = torch.rand(size["vae_batch"], 3, res, res, device=args.device) * 2 - 1

    def step() -> None:
        with autocast(args.device, args.bf16):
            loss = vae.nelbo(x).total.mean()
        loss.backward()

    mib = peak_of(step, args.device)
    return {"resolution": res, "batch": size["vae_batch"], "peak_mib": mib, "per_image_mib": mib / size["vae_batch"],
            "params": sum(p.numel() for p in vae.parameters())}


@torch.no_grad()
def sampling(size: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    cfg = compose_config("train", ["stage=ndm", *size["set"], *size["vae"]])
    torch.manual_seed(0)
    vae = instantiate_trusted(cfg.vae, _convert_="all")
    prior = build_ndm_prior(cfg.ndm, t_eps=float(cfg.ndm.t_eps))
    model = LatentModel(vae, prior).to(args.device).eval()
    z_1 = torch.randn(size["samples"], *prior.latent_shape, device=args.device)
    out = {}
    for label, sampler in (("ode_tol_1e-2", AdaptiveODE(tol=1e-2)), ("rk4_2_steps", RK4(steps=2))):
        with autocast(args.device, args.bf16):
            model.decode_mean(model.sample(z_1[:1], sampler)[0])  # warm-up
            sync(args.device)
            start = time.perf_counter()
            z, nfe = model.sample(z_1, sampler)
            images = model.decode_mean(z)
            sync(args.device)
        seconds = time.perf_counter() - start
        out[label] = {"images_per_s": size["samples"] / seconds, "nfe": nfe, "image_px": list(images.shape[-2:])}
    return out


def compile_speedup(size: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    ns = argparse.Namespace(set=list(size["set"]), batch=size["batch"], device=args.device)
    plain, _ = ndm_step_time.build([], ns)
    compiled, _ = ndm_step_time.build([], ns)
    for net in compiled_networks(compiled.denoiser, compiled.transform):  # what stage.speed.compile compiles
        net.compile()
    runs = {n: ndm_step_time.with_precision(s, argparse.Namespace(device=args.device,
                                                                  precision="bf16-mixed" if args.bf16 else "32"))
            for n, s in (("eager", plain), ("compiled", compiled))}
    start = time.perf_counter()
    runs["compiled"]()  # the compile itself
    compile_s = time.perf_counter() - start
    times = time_alternating(runs, size["steps"], 1, args.device)
    med = {n: statistics.median(v) for n, v in times.items()}
    return {"eager_ms": 1e3 * med["eager"], "compiled_ms": 1e3 * med["compiled"],
            "speedup": med["eager"] / med["compiled"], "compile_s": compile_s}


PARTS: dict[str, Callable[[dict[str, Any], argparse.Namespace], dict[str, Any]]] = {
    "prior_step": step_ratios, "vae_step": vae_memory, "sampling_256": sampling, "compile": compile_speedup}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="toy sizes (the default on a CPU)")
    parser.add_argument("--budget-s", type=float, default=420.0, help="start no part after this many seconds")
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=list(PARTS))
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message=".*torch.jit.script.*is deprecated")
    tiny = args.tiny or not args.device.startswith("cuda")
    args.bf16 = args.device.startswith("cuda")
    size = TINY if tiny else PAPER
    result: dict[str, Any] = {"device": torch.cuda.get_device_name(args.device) if args.device.startswith("cuda")
                              else "cpu", "size": "tiny" if tiny else "paper", "bf16": args.bf16,
                              "torch": torch.__version__, "parts": {}, "skipped": [], "errors": {}}
    start = time.perf_counter()
    for name in args.parts:
        if time.perf_counter() - start > args.budget_s:
            result["skipped"].append(name)
            continue
        t0 = time.perf_counter()
        try:
            result["parts"][name] = {**PARTS[name](size, args), "seconds": time.perf_counter() - t0}
        except Exception as err:  # noqa: BLE001 - one part's failure is recorded, the others still run
            result["errors"][name] = f"{type(err).__name__}: {' '.join(str(err).split())[:300]}"
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
    result["seconds"] = time.perf_counter() - start
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
