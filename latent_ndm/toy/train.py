"""Models and a small plain-torch training loop for the 2D demo.

All models share the denoiser x_hat_theta = SkipPrediction(TimeMLP) on the VP schedule and differ in the forward
process and the objective (`TOY_MODELS`): the baseline has F = identity; the NDM learns F_phi(x, t) = x + t G_phi(x, t);
the NFDM learns F_phi and the noise scale sigma(x, t) = sigma_t exp(t (1 - t) rho_phi(x, t)) (docs/MATH.md section 11).
These three are trained on the continuous-time NELBO (`ContinuousNDMObjective(...).total.mean()`); NFDM-straight has
the NFDM's forward process and is trained on the straight-trajectory regression (section 12), which is not a bound.
Every objective is called the same way (`objective(denoiser, process, x, generator).total`, `objective_loss`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from latent_ndm.diffusion.forward_process import ForwardProcess
from latent_ndm.diffusion.noise import NoiseScale
from latent_ndm.diffusion.objectives import ContinuousNDMObjective, Objective, StraightFlowObjective
from latent_ndm.diffusion.parameterisation import Denoiser, SkipPrediction
from latent_ndm.diffusion.reverse_process import ReverseProcess
from latent_ndm.diffusion.schedule import VPSchedule
from latent_ndm.diffusion.time_sampling import LikelihoodISTime
from latent_ndm.diffusion.transforms import IdentityTransform, NeuralTransform
from latent_ndm.networks import TimeMLP
from latent_ndm.optim import EMA, warmup_cosine

DataFn = Callable[[int, int], torch.Tensor]  # (batch, step) -> x of shape (batch, 2)
LossFn = Callable[[ReverseProcess, torch.Tensor, torch.Generator], torch.Tensor]  # (process, x, gen) -> (B,)


@dataclass(frozen=True)
class ToyModel:
    """One model of the demo: which parts of the forward process it learns and what it is trained on."""

    name: str
    learn_transform: bool
    learn_noise: bool = False
    straight: bool = False  # trained on the straight-trajectory regression instead of the NELBO

    @property
    def is_bound(self) -> bool:
        """Whether its training loss (and so its reported NELBO) is a bound on -log p(x)."""
        return not self.straight


TOY_MODELS = (ToyModel("ndm", True), ToyModel("baseline", False), ToyModel("nfdm", True, True),
              ToyModel("nfdm-straight", True, True, True))
# the straight mode on NDM's forward process (learned F, the schedule's noise): not drawn by default; `--models`
EXTRA_MODELS = (ToyModel("ndm-straight", True, False, True),)


@dataclass(frozen=True)
class ModelSpec:
    """Sizes of the toy networks (primitives only)."""

    hidden: int = 128
    depth: int = 3
    time_scale: float = 1000.0  # denoiser: the DDPM embedding scale
    transform_hidden: int = 64
    transform_depth: int = 2
    transform_time_scale: float = 4.0  # small, so that F_phi is smooth in t and dF/dt stays moderate


def build_process(model: ToyModel | bool, sigma_data: float, spec: ModelSpec, schedule: VPSchedule,
                  seed: int) -> ReverseProcess:
    """The reverse process of one model (a `ToyModel`, or True / False for the NDM / the baseline); the denoiser's
    initial weights depend only on `seed`, and F_phi's on `seed` too (made right after the denoiser)."""
    if isinstance(model, bool):
        model = ToyModel("ndm" if model else "baseline", model)
    torch.manual_seed(seed)
    denoiser = Denoiser(TimeMLP(dim=2, hidden=spec.hidden, depth=spec.depth, time_scale=spec.time_scale),
                        schedule, SkipPrediction(sigma_data=sigma_data))
    if model.learn_transform:
        net = TimeMLP(dim=2, hidden=spec.transform_hidden, depth=spec.transform_depth,
                      time_scale=spec.transform_time_scale)
        transform = NeuralTransform(net)  # G_phi starts at zero, so F starts as the identity
    else:
        transform = IdentityTransform()
    noise = None
    if model.learn_noise:  # rho_phi starts at zero, so the noise starts as the schedule's
        noise = NoiseScale(TimeMLP(dim=2, hidden=spec.transform_hidden, depth=spec.transform_depth,
                                   time_scale=spec.transform_time_scale))
    return ReverseProcess(denoiser, ForwardProcess(schedule, transform, noise))


def objective_loss(objective: Objective) -> LossFn:
    """The per-example total of an objective (the NELBO, or the straight-trajectory loss flow + curvature_weight *
    curvature) at a reverse process's denoiser and forward process (its learned noise scale included)."""
    return lambda process, x, generator: objective(process.denoiser, process.process, x, generator=generator).total


def model_objective(model: ToyModel, schedule: VPSchedule, t_eps: float, curvature_weight: float) -> Objective:
    """What `model` trains on: the straight-trajectory regression (`model.straight`), else the NELBO
    (`build_objective`)."""
    if model.straight:
        return StraightFlowObjective(schedule, t_eps, curvature_weight)
    return build_objective(schedule, t_eps)


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


@dataclass(frozen=True)
class TrainResult:
    """The EMA model, the per-step training losses (nats) and the wall time of the loop in seconds."""

    process: ReverseProcess
    losses: list[float]
    seconds: float


def train(process: ReverseProcess, objective: Objective | LossFn, data: DataFn, steps: int, batch: int,
          lr: float = 2e-3, seed: int = 0, clip: float = 1.0, ema_decay: float = 0.995,
          transform_lr: float | None = None) -> TrainResult:
    """Adam on `loss(process, x, generator).mean()` for `steps` steps (an objective means its total,
    `objective_loss`); returns the EMA weights.

    `transform_lr` is the peak learning rate of the forward process's parameters (F_phi's, and the noise scale's)
    (default `lr`); both groups follow the same warm-up and cosine decay.
    """
    loss_fn = objective_loss(objective) if hasattr(objective, "is_bound") else objective
    transform_params = list(process.process.parameters())
    ids = {id(p) for p in transform_params}
    groups = [{"params": [p for p in process.parameters() if id(p) not in ids], "peak_lr": lr}]
    if transform_params:
        groups.append({"params": transform_params, "peak_lr": lr if transform_lr is None else transform_lr})
    optimiser = torch.optim.Adam([{"params": g["params"], "lr": g["peak_lr"]} for g in groups], lr=lr)
    schedule = warmup_cosine(optimiser, warmup_steps=min(100, steps // 10 + 1), total_steps=steps, min_lr_ratio=0.05)
    ema = EMA(process, ema_decay, warmup=False)
    generator = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    start = time.perf_counter()
    process.train()
    for step in range(steps):
        x = data(batch, step)
        loss = loss_fn(process, x, generator).mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(process.parameters(), clip)
        optimiser.step()
        schedule.step()
        ema.update(process)
        losses.append(loss.item())
    return TrainResult(process=ema.module.eval(), losses=losses, seconds=time.perf_counter() - start)
