"""Priors over VAE latents: the VAE stage's N(0, I) and the NDM (docs/MATH.md sections 6-7).

Each gives, per example in nats: an upper-bound estimate of -log p(u) (`nll_bound`), the cross-entropy term of the
NELBO (`cross_entropy`), the probability-flow ODE's bound (`ode_nll`), and samples. A prior sees the variable it
models, u: the NDM models normalised latents u = z / s (`normalised = True`), N(0, I) the latents themselves;
`latent_ndm.model.latent.LatentModel` maps z to u and adds the D log s of the change of variables.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from latent_ndm.diffusion.forward_process import ForwardProcess
from latent_ndm.diffusion.likelihood import ode_nll_bound, standard_normal_logp
from latent_ndm.diffusion.noise import NoiseScale
from latent_ndm.diffusion.objectives.protocol import Objective, ObjectiveResult
from latent_ndm.diffusion.reverse_process import ReverseProcess
from latent_ndm.diffusion.samplers import Sampler, build_sampler
from latent_ndm.diffusion.schedule import VPSchedule
from latent_ndm.diffusion.transforms import Transform
from vae import DiagonalGaussian


def process_kind(transform_kind: str, learned_noise: bool, is_bound: bool,
                 process: type[ForwardProcess] = ForwardProcess) -> str:
    """The model family: the forward process's `family` ("lsgm": F = identity, fixed noise; "ndm": a learned F_phi;
    "nfdm": a learned noise scale), with "-straight" when trained on a regression that is not a bound."""
    kind = process.family(transform_kind, learned_noise)
    return kind if is_bound else f"{kind}-straight"


@dataclass
class PriorBound:
    """-log p(z) estimate per example (B,) in nats, and named parts of it (each (B,))."""

    nll: torch.Tensor
    parts: dict[str, torch.Tensor] = field(default_factory=dict)


class Prior(nn.Module):
    """p(u) over latents of `latent_shape` (C, H, W); `normalised`: u = z / s (else u = z)."""

    latent_shape: tuple[int, int, int] | None = None
    normalised: bool = False

    def nll_bound(self, u: torch.Tensor, generator: torch.Generator | None = None) -> PriorBound:
        """An estimate (at this u) whose expectation upper-bounds -log p(u)."""
        raise NotImplementedError

    def cross_entropy(self, q: DiagonalGaussian, u: torch.Tensor,
                      generator: torch.Generator | None = None) -> PriorBound:
        """An estimate of the NELBO's cross-entropy E_q[-log p(u)] from one sample u ~ q."""
        return self.nll_bound(u, generator)

    def ode_nll(self, u: torch.Tensor, generator: torch.Generator | None = None, **solver: Any
                ) -> tuple[PriorBound, int]:
        """(-log p(u) from the probability-flow ODE, the solver's NFE)."""
        raise NotImplementedError

    def sample(self, z_1: torch.Tensor, sampler: Sampler, generator: torch.Generator | None = None
               ) -> tuple[torch.Tensor, int]:
        """(latents u drawn from z_1 ~ N(0, I), NFE)."""
        raise NotImplementedError

    def check_sampler(self, sampler: Sampler) -> None:
        """Raise a one-sentence ValueError when this prior cannot be sampled with `sampler`."""


class StandardNormalPrior(Prior):
    """The VAE stage's p(z) = N(0, I): every quantity is exact; the cross-entropy is taken in closed form over q,
    so that log q + cross-entropy is the VAE stage's analytic KL."""

    def nll_bound(self, u: torch.Tensor, generator: torch.Generator | None = None) -> PriorBound:
        return PriorBound(-standard_normal_logp(u))

    def cross_entropy(self, q: DiagonalGaussian, u: torch.Tensor,
                      generator: torch.Generator | None = None) -> PriorBound:
        terms = math.log(2 * math.pi) + q.mean.pow(2) + q.logvar.exp()
        return PriorBound(0.5 * terms.flatten(1).sum(1))

    def ode_nll(self, u: torch.Tensor, generator: torch.Generator | None = None, **solver: Any
                ) -> tuple[PriorBound, int]:
        return self.nll_bound(u), 0

    def sample(self, z_1: torch.Tensor, sampler: Sampler, generator: torch.Generator | None = None
               ) -> tuple[torch.Tensor, int]:
        return z_1, 0


class NDMPrior(Prior):
    """The latent NDM over normalised latents: denoiser x_hat_theta, the forward process (`process`: schedule,
    transform F_phi and, for NFDM, the learned noise scale L_phi), and `objective` (`objectives.Objective`): the NELBO
    estimator that bounds -log p(u) (`ContinuousNDMObjective` / `DiscreteNDMObjective`), or the straight-trajectory
    regression (`StraightFlowObjective`, not a bound: such a prior has no `nll_bound` and no `ode_nll`, and is judged
    by its samples). `t_eps` is the training t_eps (where sampling stops), `eval_t_eps` the one of the objective's
    bound.

    Gradients flow through `nll_bound` (training calls it); evaluation wraps it in `torch.no_grad()` (not
    inference mode: the jvp of F needs forward-mode AD). Weights are stored as `denoiser.*`, `process.transform.*`
    and `process.noise.*`; states of the earlier layout (`transform.*`, `noise.*`) load too."""

    normalised = True

    def __init__(self, denoiser: nn.Module, process: ForwardProcess, objective: Objective,
                 latent_shape: tuple[int, int, int], t_eps: float, eval_t_eps: float | None = None) -> None:
        super().__init__()
        self.denoiser, self.process, self.objective = denoiser, process, objective
        self.latent_shape = tuple(int(n) for n in latent_shape)
        self.t_eps = float(t_eps)
        self.eval_t_eps = float(t_eps if eval_t_eps is None else eval_t_eps)
        self.register_load_state_dict_pre_hook(_accept_old_keys)

    @property
    def transform(self) -> Transform:
        """F_phi of the forward process (read-only)."""
        return self.process.transform

    @property
    def noise(self) -> NoiseScale | None:
        """The learned noise scale L_phi of the forward process, None for the schedule's noise (read-only)."""
        return self.process.noise

    @property
    def schedule(self) -> VPSchedule:
        """The forward process's schedule (read-only)."""
        return self.process.schedule

    @property
    def reverse(self) -> ReverseProcess:
        """The reverse process p_theta of this prior's networks (built on use, so it adds no state)."""
        return ReverseProcess(self.denoiser, self.process)

    @property
    def is_bound(self) -> bool:
        """Whether the prior was trained on (and reports) a likelihood bound; False for the straight mode."""
        return bool(self.objective.is_bound)

    @property
    def kind(self) -> str:
        """lsgm | ndm | nfdm, with -straight: from the objects (the forward process's family, the objective)."""
        return self.process.kind if self.is_bound else f"{self.process.kind}-straight"

    def with_objective(self, objective: Objective, eval_t_eps: float | None = None) -> NDMPrior:
        """The same networks (shared, not copied) with another objective, e.g. `prior.objective.at(1e-5)`."""
        return NDMPrior(self.denoiser, self.process, objective, self.latent_shape, self.t_eps,
                        self.eval_t_eps if eval_t_eps is None else eval_t_eps)

    def default_sampler(self, steps: int, eta: float = 1.0) -> Sampler:
        """The sampler that suits this prior in `steps` steps (the objective's choice: Algorithm 2 with posterior noise
        `eta` for a bound on a fixed noise, the reverse SDE for a learned noise, Euler for the straight mode)."""
        return build_sampler(self.objective.default_sampler(self.process, steps, eta))

    def _require_bound(self, what: str) -> None:
        if not self.is_bound:
            raise ValueError(f"this prior was trained on the straight-trajectory regression, which is not a likelihood "
                             f"bound, so it has no {what}: judge it by its samples (sampler=euler steps=K; FID or "
                             "the energy distance)")

    def objective_terms(self, u: torch.Tensor, generator: torch.Generator | None = None) -> ObjectiveResult:
        """The objective's per-example terms at u (a bound's or a regression's)."""
        return self.objective(self.denoiser, self.process, u, generator=generator)

    def nll_bound(self, u: torch.Tensor, generator: torch.Generator | None = None) -> PriorBound:
        self._require_bound("NELBO")
        out = self.objective_terms(u, generator)
        return PriorBound(out.total, {f"ndm_{name}": value for name, value in out.terms.items()})

    def straight_loss(self, u: torch.Tensor, generator: torch.Generator | None = None) -> ObjectiveResult:
        """The regression's per-example terms at u (flow, curvature, total); a prior not trained on a bound only."""
        if self.is_bound:
            raise ValueError("straight_loss needs a prior trained with ndm/objective=straight")
        return self.objective_terms(u, generator)

    def check_sampler(self, sampler: Sampler) -> None:
        sampler.check(self.reverse)

    def ode_nll(self, u: torch.Tensor, generator: torch.Generator | None = None, **solver: Any
                ) -> tuple[PriorBound, int]:
        self._require_bound("ODE likelihood bound")
        t_eps = solver.pop("t_eps", None)
        t_eps = self.t_eps if t_eps is None else float(t_eps)  # default: the cut-off the prior was trained above
        bound = ode_nll_bound(self.reverse, u, t_eps=t_eps, generator=generator, **solver)
        return PriorBound(bound.nll, {"ode_nll": bound.ode_nll, "ode_dequant": bound.dequant}), bound.nfe

    def sample(self, z_1: torch.Tensor, sampler: Sampler, generator: torch.Generator | None = None
               ) -> tuple[torch.Tensor, int]:
        """Samples stop at the sampler's t_end, or at the training t_eps when it names none."""
        out = sampler(self.reverse, z_1, self.t_eps, generator)
        return out.x, out.nfe


OLD_PARTS = ("transform.", "noise.")  # the forward process's weights before it was one module (NDMPrior.process)


def old_key(key: str) -> str | None:
    """`process.<key>` for a weight of the earlier layout (`transform.*`, `noise.*`), else None."""
    return f"process.{key}" if key.startswith(OLD_PARTS) else None


def _accept_old_keys(module: nn.Module, state: dict[str, Any], prefix: str, *args: Any) -> None:
    """A load_state_dict pre-hook: renames `<prefix>transform.*` and `<prefix>noise.*` to `<prefix>process.*`."""
    for key in [k for k in state if k.startswith(prefix)]:
        new = old_key(key[len(prefix):])
        if new is not None:
            state[prefix + new] = state.pop(key)
