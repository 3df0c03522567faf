"""Held-out evaluation of a toy model: the NELBO, the ODE NLL bound, samples (adaptive ODE and K-step Euler), their
energy distance to held-out data, and ODE trajectories.

ODE NLL bound (nats per 2D point): the ODE gives the model's exact density p_ODE(z_eps) of the latent at t_eps;
with the reconstruction model p(x | z_eps) = N(x; z_eps / alpha_eps, sigma_eps^2 / alpha_eps^2 I) and the
forward process q(z_eps | x) = N(alpha_eps F(x, t_eps), sigma_eps^2 I) as the variational posterior,
    -log p(x) <= E_{z_eps ~ q(z_eps | x)} [ -log p(x | z_eps) - log p_ODE(z_eps) + log q(z_eps | x) ].
(With a learned noise scale the variational posterior has its variance; `ode_nll_bound` accounts for it.)

Sample quality: the energy distance between samples and held-out points in the plane
(`latent_ndm.distance.energy_distance`, U-statistic; >= 0, and 0 only for equal distributions).
Everything here runs in float64 on a copy of the model.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch

from latent_ndm.diffusion.likelihood import ode_nll_bound
from latent_ndm.diffusion.objectives import ContinuousNDMObjective
from latent_ndm.diffusion.ode import solve
from latent_ndm.diffusion.reverse_process import ReverseProcess
from latent_ndm.diffusion.samplers import sample_ode


@dataclass(frozen=True)
class Estimate:
    """A Monte Carlo mean and its standard error, in nats."""

    mean: float
    se: float


@dataclass(frozen=True)
class NELBOReport:
    """The held-out NELBO and its parts (nats per point): total = rec + diff + prior."""

    total: Estimate
    rec: float
    diff: Estimate
    prior: float


@dataclass(frozen=True)
class ODEReport:
    """The held-out ODE NLL bound (nats per point) and the solver's function evaluations."""

    nll: Estimate
    nfe: int


def as_float64(process: ReverseProcess) -> ReverseProcess:
    """A float64 copy of the model in eval mode (the original is untouched)."""
    return copy.deepcopy(process).double().eval()


def _estimate(per_point: torch.Tensor) -> Estimate:
    """Mean and standard error over points of per-point values (n,)."""
    return Estimate(mean=per_point.mean().item(), se=per_point.std().item() / math.sqrt(per_point.numel()))


def nelbo(process: ReverseProcess, objective: ContinuousNDMObjective, x: torch.Tensor, repeats: int,
          seed: int, chunk: int = 8192) -> NELBOReport:
    """The NELBO of held-out x (n, 2): each point goes `repeats` times through the objective (fresh t and eps);
    the standard error is over the n per-point averages."""
    gen = torch.Generator().manual_seed(seed)
    xs = x.repeat(repeats, 1)
    parts = []
    for xc in xs.split(chunk):
        out = objective(process.denoiser, process.process, xc, generator=gen)
        parts.append(torch.stack([out.rec, out.diff, out.prior, out.total], dim=1).detach())
    rec, diff, prior, total = torch.cat(parts).reshape(repeats, x.shape[0], 4).mean(dim=0).unbind(dim=1)
    return NELBOReport(total=_estimate(total), rec=rec.mean().item(), diff=_estimate(diff), prior=prior.mean().item())


def ode_nll(process: ReverseProcess, x: torch.Tensor, t_eps: float, seed: int, tol: float = 1e-5) -> ODEReport:
    """E_q[-log p(x | z_eps) - log p_ODE(z_eps) + log q(z_eps | x)] per point, one z_eps draw per point."""
    out = ode_nll_bound(process, x, t_eps=t_eps, generator=torch.Generator().manual_seed(seed), rtol=tol, atol=tol,
                        exact=True)
    return ODEReport(nll=_estimate(out.nll), nfe=out.nfe)


def samples(process: ReverseProcess, n: int, t_eps: float, seed: int, tol: float = 1e-3) -> tuple[torch.Tensor, int]:
    """(x, NFE): n samples x = z_eps / alpha_eps of the probability-flow ODE from z_1 ~ N(0, I)."""
    dtype = next(process.parameters()).dtype
    out = sample_ode(process, (n, 2), t_end=t_eps, rtol=tol, atol=tol, dtype=dtype,
                     generator=torch.Generator().manual_seed(seed))
    return out.x, out.nfe


def euler_samples(process: ReverseProcess, n: int, steps: int, t_eps: float, seed: int) -> torch.Tensor:
    """n samples of the probability-flow ODE integrated with `steps` fixed Euler steps from z_1 ~ N(0, I) (the same
    z_1 for every `steps`, given the seed)."""
    dtype = next(process.parameters()).dtype
    return sample_ode(process, (n, 2), t_end=t_eps, method="euler", steps=steps, dtype=dtype,
                      generator=torch.Generator().manual_seed(seed)).x


@torch.no_grad()
def trajectories(process: ReverseProcess, z_1: torch.Tensor, t_eps: float, n_times: int = 60,
                 tol: float = 1e-4) -> torch.Tensor:
    """ODE paths z_1 -> z_eps on a grid uniform in t from 1 to t_eps (one adaptive solve); shape (n_times, B, 2)."""
    times = torch.linspace(1.0, t_eps, n_times, dtype=z_1.dtype)

    def func(t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return process.velocity(z, t.expand(z.shape[0]))

    return solve(func, z_1, times, rtol=tol, atol=tol).state


@torch.no_grad()
def transform_at(process: ReverseProcess, x: torch.Tensor, times: list[float]) -> list[torch.Tensor]:
    """F(x, t) for each t in `times` (the learned transform, or x itself for the baseline)."""
    return [process.transform(x, torch.full((x.shape[0],), t, dtype=x.dtype)) for t in times]
