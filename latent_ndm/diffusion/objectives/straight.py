"""The straight-trajectory objective (docs/MATH.md section 12): a regression for few-step sampling, not a bound.

The generative ODE is the model's probability flow v_theta(z, t) = f(z, t, x_hat_theta(z, t)) at g = 0
(`ReverseProcess.velocity`), over a forward process whose mean (F_phi) and noise (L_phi) may be learned. Per example,
with t uniform on [t_eps, 1] and z_t = alpha_t F(x, t) + sigma(x, t) eps:

    flow      = || v_theta(z_t, t) - u(z_t, t, x) ||^2,   u = f(z_t, t, x) at g = 0 = dz_t/dt at fixed eps,
    curvature = || a(z_t, t) ||^2,   a = dv/dt + (dv/dz) v, the acceleration of the ODE's path through (z_t, t),
    total     = flow + curvature_weight * curvature.

Minimising `flow` over v gives the marginal velocity E[u | z_t], which carries q(z_t) from N(0, I)-like noise to the
data (flow matching); `curvature` asks the paths of that flow to be straight lines run at constant speed, along
which a K-step Euler sampler is exact. Both terms train the denoiser and the forward process. The ends stay
hard-wired (F(x, 0) = x, L(x, 0) = L(x, 1) = 0, alpha_1 ~ 0), but that does not keep a learned noise from shrinking
inside (0, 1): the flow term's minimum falls monotonically as the noise shrinks (docs/MATH.md section 12 derives it),
so a learned noise collapses under this objective; use it with a fixed noise. The model is judged by its samples at
K steps, never by a likelihood bound.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from latent_ndm.diffusion.checks import check_batch
from latent_ndm.diffusion.forward_process import ForwardProcess
from latent_ndm.diffusion.objectives.protocol import ObjectiveResult
from latent_ndm.diffusion.reverse_process import ReverseProcess
from latent_ndm.diffusion.schedule import DEFAULT_T_EPS, VPSchedule
from latent_ndm.diffusion.terms import sum_dims


@dataclass(frozen=True)
class StraightLoss(ObjectiveResult):
    """Per-example terms, each of shape (B,): total = flow + curvature_weight * curvature (not a bound)."""

    is_bound: ClassVar[bool] = False
    name: ClassVar[str] = "straight_loss"
    flow: torch.Tensor
    curvature: torch.Tensor
    total: torch.Tensor


def acceleration(process: ReverseProcess, z: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(v(z, t), a(z, t)) with a = dv/dt + (dv/dz) v: one forward-mode jvp of (z, t) -> v in the direction (v, 1).
    The direction v is not detached: a depends on the parameters through the direction as well as through the
    derivative, and the gradient of E ||a||^2 needs both (tests/diffusion/test_straight_oracles.py checks it against
    finite differences; a detached direction gave gradients off by a relative 1.3-1.6).

    Runs with grad mode on even under `torch.no_grad()` (validation): a learned F or noise scale makes this a jvp of
    a jvp, and PyTorch has no forward-over-forward rule for some ops' no-grad kernels (silu_backward); with frozen
    parameters no graph is kept, so this costs nothing beyond the computation."""
    t = t.to(z.dtype).contiguous()
    with torch.enable_grad():
        v = process.velocity(z, t)
        _, a = torch.func.jvp(process.velocity, (z, t), (v, torch.ones_like(t)))
    return v, a


class StraightFlowObjective:
    """`objective(denoiser, process, x) -> StraightLoss` (per example): see the module doc. The model's ODE is that of
    `ReverseProcess(denoiser, process)`; its default sampler is Euler in the grid's `steps`."""

    is_bound: ClassVar[bool] = False  # a regression: no likelihood bound
    result: ClassVar[type[StraightLoss]] = StraightLoss

    def __init__(self, schedule: VPSchedule, t_eps: float = DEFAULT_T_EPS, curvature_weight: float = 0.1) -> None:
        if not 0 < t_eps < 1 or curvature_weight < 0:
            raise ValueError(f"need 0 < t_eps < 1 and curvature_weight >= 0, got {t_eps}, {curvature_weight}")
        self.schedule, self.t_eps, self.curvature_weight = schedule, float(t_eps), float(curvature_weight)

    def at(self, t_eps: float) -> StraightFlowObjective:
        """The same regression with times on [t_eps, 1]."""
        return StraightFlowObjective(self.schedule, t_eps, self.curvature_weight)

    def default_sampler(self, process: ForwardProcess, steps: int, eta: float = 1.0) -> Mapping[str, Any]:
        """Euler steps of the probability-flow ODE, the few-step sampler this regression trains for."""
        return {"name": "euler", "steps": int(steps)}

    def __call__(self, denoiser: nn.Module, process: ForwardProcess, x: torch.Tensor,
                 generator: torch.Generator | None = None, t: torch.Tensor | None = None) -> StraightLoss:
        """`t` (shape (B,)) fixes the times; by default they are uniform on [t_eps, 1]."""
        check_batch(x, "x")
        reverse = ReverseProcess(denoiser, process)
        if t is None:
            u01 = torch.rand(x.shape[0], device=x.device, dtype=x.dtype, generator=generator)
            t = self.t_eps + (1.0 - self.t_eps) * u01
        t = t.to(x.dtype)
        eps = torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)
        sched = self.schedule(t)
        z_t = process.sample(process.marginal(x, t, derivative=False), eps, sched)
        u = process.drift(z_t, t, x, g2_scale=0.0)[0]
        if self.curvature_weight > 0:
            v, a = acceleration(reverse, z_t, t)
            curvature = sum_dims(a**2)
        else:
            v = reverse.velocity(z_t, t)
            curvature = torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
        flow = sum_dims((v - u) ** 2)
        return StraightLoss(flow=flow, curvature=curvature, total=flow + self.curvature_weight * curvature)
