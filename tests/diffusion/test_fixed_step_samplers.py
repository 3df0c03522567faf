"""docs/MATH.md section 6.1: the fixed-step probability-flow samplers (Euler, Heun, RK4) on the time grids.

- grids: both ends exact, strictly decreasing, equally spaced in the quantity each names;
- order of convergence against the exact flow of Gaussian data, for LSGM (F = identity), NDM (an affine F with its
  exact denoiser) and NFDM (an x-independent learned noise): the end-state error falls by ~2^p per halving of the
  step, p = 1, 2, 4 (Euler, Heun, RK4), on every grid;
- NFE per step, and the sampler family: config names, settings round trip, refusals in one sentence.
"""

import pytest
import torch
from torch import nn

from latent_ndm.diffusion.forward_process import ForwardProcess
from latent_ndm.diffusion.grids import GRIDS, sampling_grid
from latent_ndm.diffusion.noise import NoiseScale
from latent_ndm.diffusion.reverse_process import ReverseProcess
from latent_ndm.diffusion.samplers import (
    RK4,
    AdaptiveODE,
    DiscretePosterior,
    Euler,
    Heun,
    Sampler,
    build_sampler,
    sample_fixed,
)
from latent_ndm.diffusion.schedule import VPSchedule
from latent_ndm.diffusion.transforms import IdentityTransform
from tests.support.nfdm_oracle import ExactNFDMDenoiser, TimeRho, marginal
from tests.support.oracle import GaussianOracleDenoiser
from tests.support.oracle_setup import AffineF, M, S, f64

sch = VPSchedule()
T_END = 1e-3


@pytest.mark.parametrize("kind", GRIDS)
@pytest.mark.parametrize("steps", [1, 2, 7, 40])
def test_grids_run_from_one_to_t_end_strictly_decreasing(kind, steps):
    t = sampling_grid(kind, steps, T_END, sch)
    assert t.shape == (steps + 1,) and t[0] == 1.0 and t[-1] == T_END and (t[1:] < t[:-1]).all()


def test_each_grid_is_equally_spaced_in_its_own_quantity():
    steps = 9
    u = sampling_grid("uniform", steps, T_END, sch)
    assert torch.allclose(u.diff(), u.diff()[0].expand(steps), rtol=1e-12)
    log_snr = sch(sampling_grid("logsnr", steps, T_END, sch)).log_snr
    assert torch.allclose(log_snr.diff(), log_snr.diff()[0].expand(steps), rtol=1e-9)
    s = torch.exp(-0.5 * sch(sampling_grid("edm", steps, T_END, sch)).log_snr) ** (1 / 7)  # sigma/alpha, ^(1/rho)
    assert torch.allclose(s.diff(), s.diff()[0].expand(steps), rtol=1e-9)


def test_a_grid_refuses_bad_settings_in_one_sentence():
    with pytest.raises(ValueError, match="unknown time grid 'cosine'"):
        sampling_grid("cosine", 4, T_END, sch)
    with pytest.raises(ValueError, match="steps >= 1"):
        sampling_grid("edm", 0, T_END, sch)


class AffineExactDenoiser(nn.Module):
    """E[x | z_t] for x ~ N(M, diag S) and z_t = alpha_t F(x, t) + sigma_t eps with the affine F = a(t) x + b(t)."""

    def forward(self, z, t):
        s = sch(t)
        al, a, b = s.alpha[:, None], AffineF.a(t)[:, None], 0.2 * t[:, None] ** 2
        gain = al * a * S / (al**2 * a**2 * S + s.sigma2[:, None])
        return M + gain * (z - al * (a * M + b))


def _flow_map(mean_var):
    """The exact probability flow of a Gaussian marginal N(mean(t), var(t)) per dimension: z_t from z_1."""
    def end(z_1, t):
        m_t, v_t = mean_var(t)
        m_1, v_1 = mean_var(1.0)
        return m_t + (v_t / v_1).sqrt() * (z_1 - m_1)
    return end


def _lsgm(t):
    s = sch(torch.tensor([t], dtype=f64))
    return s.alpha * M, s.alpha**2 * S + s.sigma2


def _ndm(t):
    tt = torch.tensor([t], dtype=f64)
    s, a, b = sch(tt), AffineF.a(tt), 0.2 * tt**2
    return s.alpha * (a * M + b), s.alpha**2 * a**2 * S + s.sigma2


def _nfdm(t):
    m, v, *_ = marginal(torch.tensor([t], dtype=f64))
    return m[0], v[0]


PROCESSES = {
    "lsgm": (lambda: ReverseProcess(GaussianOracleDenoiser(M, S, sch), ForwardProcess(sch, IdentityTransform())),
             _lsgm),
    "ndm": (lambda: ReverseProcess(AffineExactDenoiser(), ForwardProcess(sch, AffineF())), _ndm),
    "nfdm": (lambda: ReverseProcess(ExactNFDMDenoiser(),
                                    ForwardProcess(sch, IdentityTransform(), NoiseScale(TimeRho()))), _nfdm),
}


@pytest.mark.parametrize("process_name", list(PROCESSES))
def test_the_exact_denoiser_makes_the_velocity_the_exact_flow(process_name):
    """The oracle itself: the process's velocity at the exact flow's z_t is d z_t / dt (central differences)."""
    build, mean_var = PROCESSES[process_name]
    process, end = build(), _flow_map(mean_var)
    z_1 = torch.randn(16, 3, dtype=f64, generator=torch.Generator().manual_seed(1))
    for t in (0.05, 0.4, 0.9):
        h = 1e-6
        dz = (end(z_1, t + h) - end(z_1, t - h)) / (2 * h)
        assert torch.allclose(process.velocity(end(z_1, t), torch.full((16,), t, dtype=f64)), dz, rtol=1e-6,
                              atol=1e-6)


ORDERS = {"euler": (1.8, 2.3), "heun2": (3.5, 4.5), "rk4": (13.0, 21.0)}


@pytest.mark.parametrize("process_name", list(PROCESSES))
@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("solver", list(ORDERS))
def test_fixed_step_samplers_converge_at_their_order(process_name, grid, solver):
    build, mean_var = PROCESSES[process_name]
    process, end = build(), _flow_map(mean_var)
    z_1 = torch.randn(64, 3, dtype=f64, generator=torch.Generator().manual_seed(0))
    exact = end(z_1, T_END)
    errors = [(sample_fixed(process, solver, K, grid, T_END, z_1=z_1).z - exact).abs().max().item() for K in (64, 128)]
    lo, hi = ORDERS[solver]
    assert lo < errors[0] / errors[1] < hi, errors


@pytest.mark.parametrize(("cls", "evals"), [(Euler, 1), (Heun, 2), (RK4, 4)])
def test_a_fixed_step_sampler_costs_its_evaluations_per_step(cls, evals):
    process = PROCESSES["ndm"][0]()
    z_1 = torch.randn(8, 3, dtype=f64, generator=torch.Generator().manual_seed(0))
    for steps in (1, 3):
        out = cls(steps=steps, grid="logsnr")(process, z_1, T_END)
        assert out.nfe == evals * steps and cls.steps_for(evals * steps) == steps
    assert cls.steps_for(evals - 1) == 0


def test_samplers_are_built_from_their_config_names_and_round_trip():
    assert sorted(Sampler.registry) == ["discrete", "euler", "heun", "ode", "rk4", "sde"]
    heun = build_sampler({"name": "heun", "steps": 4, "grid": "edm"})
    assert heun == Heun(steps=4, grid="edm") and build_sampler(heun.settings()) == heun
    assert heun.describe() == "heun 4 steps edm rho 7"
    assert build_sampler({"name": "ode"}) == AdaptiveODE()
    with pytest.raises(ValueError, match="unknown sampler 'dpm'"):
        build_sampler({"name": "dpm"})
    with pytest.raises(ValueError, match="sampler=heun has no setting tol"):
        build_sampler({"name": "heun", "tol": 1e-3})
    with pytest.raises(ValueError, match="fixed steps are sampler=euler, heun or rk4"):
        build_sampler({"name": "ode", "method": "rk4"})


def test_the_discrete_sampler_refuses_a_learned_noise_from_the_process_itself():
    process = PROCESSES["nfdm"][0]()
    with pytest.raises(ValueError, match="learns its noise"):
        DiscretePosterior(steps=2)(process, torch.zeros(2, 3, dtype=f64), T_END)
