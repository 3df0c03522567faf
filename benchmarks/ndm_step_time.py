"""Training-step cost of a latent NDM (learnable F) against the LSGM baseline (F = identity), side by side.

Same denoiser U-Net, same batch, same objective. Two NDM transforms, each a U-Net of the denoiser's architecture:
`ndm_jvp`: F = x + t G(x, t) with G conditioned on t and dF/dt by forward-mode AD (torch.func.jvp);
`ndm_sep`: F = x + t sum_k phi_k(t) H_k(x) (SeparableTransform, K heads), where one pass gives F and dF/dt.
Each step is forward + backward + Adam. Timings alternate between the models so all see the same machine state.
Memory is measured per model in a fresh process: on CUDA max_memory_allocated over a few steps; on CPU the
bytes of the distinct tensors autograd saves for backward in one step (the activation memory).

    python -m benchmarks.ndm_step_time                        # CPU-sized default (4x16x16 latents, batch 8)
    python -m benchmarks.ndm_step_time --resolution 32 --channels 4 --base 128 --batch 32 --device cuda
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import warnings

import torch

from latent_ndm.comparison.step_cost import TrainStep, cuda_peak_bytes, saved_activation_bytes, time_alternating
from latent_ndm.diffusion.objectives import ContinuousNDMObjective
from latent_ndm.diffusion.parameterisation import Denoiser, SkipPrediction
from latent_ndm.diffusion.schedule import VPSchedule
from latent_ndm.diffusion.time_sampling import LikelihoodISTime
from latent_ndm.diffusion.transforms import IdentityTransform, NeuralTransform, SeparableTransform
from latent_ndm.networks import UNet

KINDS = ("lsgm", "ndm_jvp", "ndm_sep")


def build(kind: str, args: argparse.Namespace) -> TrainStep:
    torch.manual_seed(0)

    def unet(time_scale: float, out_channels: int | None = None) -> UNet:
        return UNet(args.channels, out_channels, base_channels=args.base, channel_mult=(1, 2), num_res_blocks=1,
                    attn_resolutions=(args.resolution // 2,), resolution=args.resolution,
                    num_groups=8, time_scale=time_scale, zero_init_output=False)

    schedule = VPSchedule()
    denoiser = Denoiser(unet(1000.0), schedule, SkipPrediction())
    transform = {"lsgm": IdentityTransform,
                 "ndm_jvp": lambda: NeuralTransform(unet(10.0)),
                 "ndm_sep": lambda: SeparableTransform(unet(10.0, args.channels * args.basis), args.basis)}[kind]()
    objective = ContinuousNDMObjective(schedule, LikelihoodISTime(schedule, t_eps=1e-2))
    params = list(denoiser.parameters()) + list(transform.parameters())
    x = torch.randn(args.batch, args.channels, args.resolution, args.resolution, generator=torch.Generator()
                    .manual_seed(1)).to(args.device)
    return TrainStep(denoiser.to(args.device), transform.to(args.device), objective, torch.optim.Adam(params, lr=1e-4),
                     x)


def time_both(args: argparse.Namespace) -> dict[str, list[float]]:
    return time_alternating({k: build(k, args) for k in KINDS}, args.steps, args.warmup, args.device)


def peak_memory(kind: str, args: argparse.Namespace, queue: mp.Queue) -> None:
    """Run in a fresh process: peak memory of a few steps of one model, in MiB."""
    torch.set_num_threads(args.threads)
    step = build(kind, args)
    if args.device.startswith("cuda"):
        queue.put(cuda_peak_bytes(step, args.device, step.resident_bytes()) / 2**20)
    else:
        queue.put(saved_activation_bytes(step) / 2**20)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--resolution", type=int, default=16)
    p.add_argument("--channels", type=int, default=4)
    p.add_argument("--base", type=int, default=32)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--basis", type=int, default=8, help="K, the number of time-basis heads of ndm_sep")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    warnings.filterwarnings("ignore", message=".*torch.jit.script.*is deprecated")
    torch.set_num_threads(args.threads)
    times = time_both(args)
    ctx = mp.get_context("spawn")
    mem = {}
    for kind in KINDS:
        q = ctx.Queue()
        proc = ctx.Process(target=peak_memory, args=(kind, args, q))
        proc.start()
        mem[kind] = q.get()
        proc.join()
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {"config": vars(args), "median_step_s": med, "memory_mib": mem,
              "time_ratio": {k: med[k] / med["lsgm"] for k in KINDS},
              "memory_ratio": {k: mem[k] / max(mem["lsgm"], 1e-9) for k in KINDS}}
    mem_name = "peak mem (MiB)" if args.device.startswith("cuda") else "saved act. (MiB)"
    print(f"{'model':8s} {'step (ms)':>10s} {'x LSGM':>7s} {mem_name:>17s} {'x LSGM':>7s}")
    for k in KINDS:
        tr, mr = result["time_ratio"][k], result["memory_ratio"][k]
        print(f"{k:8s} {1e3 * med[k]:10.1f} {tr:7.2f} {mem[k]:17.1f} {mr:7.2f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
