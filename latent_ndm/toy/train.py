"""Models and a small plain-torch training loop for the 2D demo.

Both models share the denoiser x_hat_theta = SkipPrediction(TimeMLP) on the VP schedule and differ only in
the forward transform: the NDM learns F_phi(x, t) = x + t G_phi(x, t), the baseline has F = identity.
Both are trained on the continuous-time NELBO (`ContinuousNDMObjective(...).total.mean()`).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from latent_ndm.diffusion.objectives import ContinuousNDMObjective
from latent_ndm.diffusion.parameterisation import Denoiser, SkipPrediction
from latent_ndm.diffusion.reverse_process import ReverseProcess
from latent_ndm.diffusion.schedule import VPSchedule
from latent_ndm.diffusion.time_sampling import LikelihoodISTime
from latent_ndm.diffusion.transforms import IdentityTransform, NeuralTransform
from latent_ndm.networks import TimeMLP

DataFn = Callable[[int, int], torch.Tensor]  # (batch, step) -> x of shape (batch, 2)


@dataclass(frozen=True)
class ModelSpec:
    """Sizes of the toy networks (primitives only)."""

    hidden: int = 128
    depth: int = 3
    time_scale: float = 1000.0  # denoiser: the DDPM embedding scale
    transform_hidden: int = 64
    transform_depth: int = 2
    transform_time_scale: float = 4.0  # small, so that F_phi is smooth in t and dF/dt stays moderate


def build_process(learn_transform: bool, sigma_data: float, spec: ModelSpec, schedule: VPSchedule,
                  seed: int) -> ReverseProcess:
    """The reverse process of one model; the denoiser's initial weights depend only on `seed`."""
    torch.manual_seed(seed)
    denoiser = Denoiser(TimeMLP(dim=2, hidden=spec.hidden, depth=spec.depth, time_scale=spec.time_scale),
                        schedule, SkipPrediction(sigma_data=sigma_data))
    if learn_transform:
        net = TimeMLP(dim=2, hidden=spec.transform_hidden, depth=spec.transform_depth,
                      time_scale=spec.transform_time_scale)
        transform = NeuralTransform(net)  # G_phi starts at zero, so F starts as the identity
    else:
        transform = IdentityTransform()
    return ReverseProcess(denoiser, transform, schedule)


def build_objective(schedule: VPSchedule, t_eps: float, stratified: bool = True) -> ContinuousNDMObjective:
    """The continuous NELBO with sigma_t^2 log-uniform (`LikelihoodISTime`, LSGM's `ll_iw`).

    The three unbiased samplers were compared on this data (t_eps = 1e-3, 600 steps of batch 512, then 10,000
    held-out draws): the per-example std of the NELBO estimate was 9.1 nats with LikelihoodISTime, 11.7 with
    InverseG2Time and 62 with UniformTime (for both models), and the baseline's training loss was lowest when
    trained with LikelihoodISTime (2.57 vs 2.63 and 3.34 nats). Stratified draws (VDM's low-discrepancy trick)
    lower the batch-mean variance further at no cost; the evaluation uses independent draws so that its
    standard error is honest. Training at t_eps = 1e-3 was stable (no need for 1e-2).
    """
    return ContinuousNDMObjective(schedule, LikelihoodISTime(schedule, t_eps=t_eps, stratified=stratified))


class EMA:
    """An exponential moving average of a module's parameters: p_ema <- decay p_ema + (1 - decay) p."""

    def __init__(self, module: nn.Module, decay: float = 0.995) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must lie in [0, 1), got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(module).requires_grad_(False)

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        for p_ema, p in zip(self.module.parameters(), module.parameters(), strict=True):
            p_ema.lerp_(p, 1.0 - self.decay)


@dataclass(frozen=True)
class TrainResult:
    """The EMA model, the per-step training losses (nats) and the wall time of the loop in seconds."""

    process: ReverseProcess
    losses: list[float]
    seconds: float


def cosine_lr(step: int, steps: int, lr: float, warmup: int) -> float:
    """Linear warm-up over `warmup` steps, then cosine decay from lr to lr / 20."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return lr * (0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def train(process: ReverseProcess, objective: ContinuousNDMObjective, data: DataFn, steps: int, batch: int,
          lr: float = 2e-3, seed: int = 0, clip: float = 1.0, ema_decay: float = 0.995,
          transform_lr: float | None = None) -> TrainResult:
    """Adam on the NELBO `objective(...).total.mean()` for `steps` steps; returns the EMA weights.

    `transform_lr` is the peak learning rate of F_phi's parameters (default `lr`); both groups follow the same
    warm-up and cosine decay.
    """
    transform_params = list(process.transform.parameters())
    ids = {id(p) for p in transform_params}
    groups = [{"params": [p for p in process.parameters() if id(p) not in ids], "peak_lr": lr}]
    if transform_params:
        groups.append({"params": transform_params, "peak_lr": lr if transform_lr is None else transform_lr})
    optimiser = torch.optim.Adam(groups, lr=lr)
    ema = EMA(process, ema_decay)
    generator = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    start = time.perf_counter()
    process.train()
    for step in range(steps):
        for group in optimiser.param_groups:
            group["lr"] = cosine_lr(step, steps, group["peak_lr"], warmup=min(100, steps // 10 + 1))
        x = data(batch, step)
        loss = objective(process.denoiser, process.transform, x, generator=generator).total.mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(process.parameters(), clip)
        optimiser.step()
        ema.update(process)
        losses.append(loss.item())
    return TrainResult(process=ema.module.eval(), losses=losses, seconds=time.perf_counter() - start)
