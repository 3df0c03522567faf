"""A new forward-process family is one subclass: defined here and nowhere else, it trains (the NELBO's gradients
through `NDMPrior`), samples (a sampler draws from its `ReverseProcess`) and gives its ODE NLL (`ode_nll_bound`), is
named in a config (`ndm.process._target_`, trusted by `LATENT_NDM_TRUSTED_TARGETS`), and its marginal is its formula.

The family: q(z_t | x) = N(alpha_t x, (sigma_t exp(-c t (1 - t)))^2 I), a noise shrunk inside (0, 1) by a fixed
amount (c = 1/2), the same at both ends as the schedule's; F = identity. A valid Gaussian process other than LSGM's.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from latent_ndm.diffusion.forward_process import ForwardProcess
from latent_ndm.diffusion.likelihood import ode_nll_bound
from latent_ndm.diffusion.noise import NoiseScale
from latent_ndm.diffusion.objectives import ContinuousNDMObjective
from latent_ndm.diffusion.parameterisation import Denoiser, SkipPrediction
from latent_ndm.diffusion.samplers import build_sampler
from latent_ndm.diffusion.schedule import VPSchedule
from latent_ndm.diffusion.time_sampling import LikelihoodISTime
from latent_ndm.diffusion.transforms import IdentityTransform, Transform
from latent_ndm.model import NDMPrior
from latent_ndm.networks import TimeMLP

SHRINK = 0.5


class ConstantRho(nn.Module):
    """rho(x, t) = -c: L(x, t) = -c t (1 - t) through `NoiseScale`'s gate."""

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.full_like(x, -SHRINK)


class ShrunkNoise(ForwardProcess):
    """The test's family: the schedule's noise times exp(-c t (1 - t)); a learned noise, if one is given, is ignored."""

    def __init__(self, schedule: VPSchedule, transform: Transform, noise: NoiseScale | None = None) -> None:
        super().__init__(schedule, transform, NoiseScale(ConstantRho()))

    @classmethod
    def family(cls, transform_kind: str, learned_noise: bool) -> str:
        return "shrunk"


def prior(t_eps: float = 1e-2) -> NDMPrior:
    sch = VPSchedule()
    torch.manual_seed(0)
    denoiser = Denoiser(TimeMLP(dim=2, hidden=16, depth=1, zero_init_output=False), sch, SkipPrediction())
    objective = ContinuousNDMObjective(sch, LikelihoodISTime(sch, t_eps=t_eps))
    return NDMPrior(denoiser, ShrunkNoise(sch, IdentityTransform()), objective, (2, 1, 1), t_eps=t_eps)


def test_its_marginal_and_its_samples_are_its_formula() -> None:
    process = prior().process
    x = torch.randn(64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    t = torch.rand(64, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    m = process.marginal(x, t)
    shrink = -SHRINK * t * (1 - t)
    assert torch.allclose(m.L, shrink[:, None].expand_as(x)) and torch.allclose(m.F, x)
    assert torch.allclose(m.dL_dt, (-SHRINK * (1 - 2 * t))[:, None].expand_as(x))
    eps = torch.randn(x.shape, dtype=x.dtype, generator=torch.Generator().manual_seed(3))
    s = process.schedule(t)
    expected = s.alpha[:, None] * x + (s.sigma * torch.exp(shrink))[:, None] * eps
    assert torch.allclose(process.sample(m, eps, s), expected, rtol=1e-12)
    assert process.kind == "shrunk" and not process.has_discrete_posterior


def test_it_trains_samples_and_gives_its_ode_nll() -> None:
    p = prior()
    u = torch.randn(32, 2, generator=torch.Generator().manual_seed(4)) * 0.5 + 0.3
    optimizer = torch.optim.Adam(p.parameters(), lr=1e-2)
    before = [q.detach().clone() for q in p.denoiser.parameters()]
    for step in range(2):
        loss = p.nll_bound(u, torch.Generator().manual_seed(step)).nll.mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        assert math.isfinite(loss.item())
    assert any(not torch.equal(a, b) for a, b in zip(before, p.denoiser.parameters(), strict=True))
    z_1 = torch.randn(8, 2, generator=torch.Generator().manual_seed(5))
    x, nfe = p.sample(z_1, build_sampler({"name": "euler", "steps": 3}))
    assert x.shape == (8, 2) and torch.isfinite(x).all() and nfe == 3
    with pytest.raises(ValueError, match="learns its noise"):
        p.check_sampler(build_sampler({"name": "discrete", "steps": 3}))
    with torch.no_grad():
        bound, nfe = p.ode_nll(u[:4], torch.Generator().manual_seed(6), rtol=1e-3, atol=1e-3, exact=True)
        direct = ode_nll_bound(p.reverse, u[:4], t_eps=p.t_eps, generator=torch.Generator().manual_seed(6),
                               rtol=1e-3, atol=1e-3, exact=True)
    assert torch.isfinite(bound.nll).all() and nfe > 0 and torch.equal(bound.nll, direct.nll)
    # the closed-form dequantisation term sees the family's noise: sum_d [(exp(2 L) - 1) / 2 - L] at t_eps
    L = -SHRINK * p.t_eps * (1 - p.t_eps)
    s = p.schedule(torch.full((4,), p.t_eps))
    plain = -2 * torch.log(s.alpha) + s.alpha**2 * (u[:4] - u[:4]).pow(2).sum(1) / (2 * s.sigma2)
    assert torch.allclose(direct.dequant, plain + 2 * (0.5 * math.expm1(2 * L) - L), rtol=1e-5)


def test_a_config_names_the_family(monkeypatch: pytest.MonkeyPatch) -> None:
    from latent_ndm.runs.build import build_ndm_prior, forward_process_kind
    from latent_ndm.runs.config import compose_config

    target = f"{__name__}.ShrunkNoise"
    monkeypatch.setenv("LATENT_NDM_TRUSTED_TARGETS", target)
    cfg = compose_config("train", ["stage=ndm", "ndm/denoiser=tiny", "ndm/transform=identity", "ndm.latent.channels=3",
                                   "ndm.latent.resolution=4", "ndm.denoiser.channel_mult=[1]",
                                   f"ndm.process._target_={target}"])
    built = build_ndm_prior(cfg.ndm)
    assert type(built.process) is ShrunkNoise and built.kind == forward_process_kind(cfg.ndm) == "shrunk"
