"""Samplers and the ODE likelihood against closed forms (docs/MATH.md sections 6 and 9, oracles 5 and 7)."""

import math

import pytest
import torch

from latent_ndm.diffusion.checks import append_dims
from latent_ndm.diffusion.forward_process import ForwardProcess
from latent_ndm.diffusion.likelihood import draw_probe, exact_divergence, hutchinson_divergence, ode_log_likelihood
from latent_ndm.diffusion.parameterisation import Denoiser, EpsilonPrediction
from latent_ndm.diffusion.reverse_process import ReverseProcess
from latent_ndm.diffusion.samplers import sample_discrete, sample_ode, sample_sde
from latent_ndm.diffusion.schedule import VPSchedule
from latent_ndm.diffusion.transforms import IdentityTransform
from tests.support.oracle import GaussianOracleDenoiser, marginal_logp
from tests.support.oracle_setup import T_EPS, M, S, f64

sch = VPSchedule()


def oracle_process() -> ReverseProcess:
    return ReverseProcess(GaussianOracleDenoiser(M, S, sch), ForwardProcess(sch, IdentityTransform()))


def analytic_flow(z_1: torch.Tensor, t: float) -> torch.Tensor:
    """The exact probability-flow map z_1 -> z_t for Gaussian data (per-dimension affine)."""
    s = sch(torch.tensor([t, 1.0], dtype=f64))
    std_t, std_1 = torch.sqrt(s.alpha[0] ** 2 * S + s.sigma2[0]), torch.sqrt(s.alpha[1] ** 2 * S + s.sigma2[1])
    return s.alpha[0] * M + std_t / std_1 * (z_1 - s.alpha[1] * M)


def sample_marginal(n: int, t: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    s = sch(torch.tensor([t], dtype=f64))
    x = M + S.sqrt() * torch.randn(n, 3, dtype=f64, generator=g)
    return s.alpha * x + s.sigma * torch.randn(n, 3, dtype=f64, generator=g)


# -- oracle 5: the ODE log-density -------------------------------------------------------------------------------
def test_ode_likelihood_matches_closed_form():
    z = sample_marginal(8, T_EPS, seed=0)
    out = ode_log_likelihood(oracle_process().velocity, z, t_eps=T_EPS, rtol=1e-8, atol=1e-8, exact=True,
                             prior_logp=lambda z1: marginal_logp(z1, 1.0, M, S, sch))
    expected = marginal_logp(z, T_EPS, M, S, sch)
    assert torch.allclose(out.logp, expected, atol=1e-6, rtol=0)
    assert out.nfe > 10
    assert torch.allclose(out.z_1, analytic_flow_inverse(z), atol=1e-6)


def analytic_flow_inverse(z_eps: torch.Tensor) -> torch.Tensor:
    s = sch(torch.tensor([T_EPS, 1.0], dtype=f64))
    std_e, std_1 = torch.sqrt(s.alpha[0] ** 2 * S + s.sigma2[0]), torch.sqrt(s.alpha[1] ** 2 * S + s.sigma2[1])
    return s.alpha[1] * M + std_1 / std_e * (z_eps - s.alpha[0] * M)


def test_hutchinson_is_unbiased_for_the_trace():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(5, 5, dtype=f64, generator=g)
    z = torch.randn(40_000, 5, dtype=f64, generator=g).requires_grad_(True)
    v = z @ A.T
    exact = exact_divergence(v, z)
    assert torch.allclose(exact, torch.full_like(exact, torch.trace(A).item()), rtol=1e-12)
    for kind in ("rademacher", "gaussian"):
        est = hutchinson_divergence(z @ A.T, z, draw_probe(z, kind, g))
        se = est.std().item() / math.sqrt(est.numel())
        assert abs(est.mean().item() - torch.trace(A).item()) < 4 * se


def test_hutchinson_likelihood_averages_to_exact():
    # a process whose Jacobian is not diagonal: rotate the oracle's coordinates
    Q, _ = torch.linalg.qr(torch.randn(3, 3, dtype=f64, generator=torch.Generator().manual_seed(1)))
    proc = oracle_process()

    def velocity(z, t):
        return proc.velocity(z @ Q, t) @ Q.T

    z = sample_marginal(1, T_EPS, seed=3) @ Q.T
    exact = ode_log_likelihood(velocity, z, t_eps=T_EPS, rtol=1e-6, atol=1e-6, exact=True)
    zs = z.expand(512, 3).contiguous()
    est = ode_log_likelihood(velocity, zs, t_eps=T_EPS, rtol=1e-6, atol=1e-6, probe="gaussian",
                             generator=torch.Generator().manual_seed(4))
    se = est.logp.std().item() / math.sqrt(512)
    assert est.logp.std().item() > 1e-3  # the probe really varies
    assert abs(est.logp.mean().item() - exact.logp.item()) < 4 * se


# -- samplers -------------------------------------------------------------------------------------------------
def test_ode_sampler_integrates_the_linear_flow_exactly():
    z_1 = torch.randn(16, 3, dtype=f64, generator=torch.Generator().manual_seed(0))
    target = analytic_flow(z_1, T_EPS)
    out = sample_ode(oracle_process(), z_1=z_1, t_end=T_EPS, rtol=1e-9, atol=1e-9)
    assert torch.allclose(out.z, target, atol=1e-6)
    alpha_eps = sch(torch.tensor([T_EPS], dtype=f64)).alpha
    assert torch.allclose(out.x, out.z / alpha_eps)
    rk4 = sample_ode(oracle_process(), z_1=z_1, t_end=T_EPS, method="rk4", steps=400)
    assert rk4.nfe == 4 * 400
    assert torch.allclose(rk4.z, target, atol=1e-4)
    err = [(sample_ode(oracle_process(), z_1=z_1, t_end=T_EPS, method="euler", steps=n).z - target).abs().max()
           for n in (500, 1000)]
    assert err[1] < 0.65 * err[0]  # first-order convergence of Euler


def test_probability_flow_is_the_eps_form_for_identity():
    """For F = identity with eps-prediction, v = f(t) z + 1/2 g^2 eps_hat / sigma."""
    net = torch.nn.Linear(3, 3).double()
    eps_net = _TimeFree(net)
    proc = ReverseProcess(Denoiser(eps_net, sch, EpsilonPrediction()), ForwardProcess(sch, IdentityTransform()))
    z = torch.randn(6, 3, dtype=f64)
    t = torch.linspace(0.01, 0.99, 6, dtype=f64)
    s = sch(t)
    expected = append_dims(s.r, 2) * z + 0.5 * append_dims(s.g2 / s.sigma, 2) * net(z)
    assert torch.allclose(proc.velocity(z, t), expected, rtol=1e-10)


class _TimeFree(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, z, t):
        return self.net(z)


def _propagate_discrete(T: int, eta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact mean and variance of the discrete sampler's z_{t_0} for Gaussian data, by moment propagation:
    with x_hat = m + k (z_t - alpha_t m), each step is z_s = A z_t + b + nu eps."""
    from latent_ndm.diffusion.gaussian import ddpm_nu2
    from latent_ndm.diffusion.schedule import time_grid

    grid = time_grid(T, T_EPS)
    ss, st = sch(grid[:-1]), sch(grid[1:])  # step i: s = t_{i-1}, t = t_i
    nu2 = (eta**2 * ddpm_nu2(ss, st))[:, None]
    c = (torch.sqrt(ss.sigma2 - nu2[:, 0]) / st.sigma)[:, None]
    a_s, a_t, s2_t = ss.alpha[:, None], st.alpha[:, None], st.sigma2[:, None]
    k = a_t * S / (a_t**2 * S + s2_t)
    A = (a_s - c * a_t) * k + c
    b = (a_s - c * a_t) * (1 - k * a_t) * M
    mu, var = torch.zeros(3, dtype=f64), torch.ones(3, dtype=f64)
    for i in range(T - 1, -1, -1):
        mu, var = A[i] * mu + b[i], A[i] ** 2 * var + nu2[i]
    return mu, var


def _propagate_sde(steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact moments of Euler-Maruyama for Gaussian data: f = P z + q is affine in z."""
    times = torch.linspace(1.0, T_EPS, steps + 1, dtype=f64)
    s, h = sch(times[:-1]), (times[:-1] - times[1:])[:, None]
    alpha, sigma2, r, g2 = (v[:, None] for v in (s.alpha, s.sigma2, s.r, s.g2))
    k = alpha * S / (alpha**2 * S + sigma2)
    # f = r z - beta (alpha x_hat - z) / sigma^2, x_hat = m + k (z - alpha m)
    P = r - g2 * (alpha * k - 1) / sigma2
    q = -g2 * alpha * (1 - k * alpha) * M / sigma2
    noise = g2 * h
    noise[-1] = 0.0  # the last step is noise-free
    mu, var = torch.zeros(3, dtype=f64), torch.ones(3, dtype=f64)
    for j in range(steps):
        mu, var = (1 - h[j] * P[j]) * mu - h[j] * q[j], (1 - h[j] * P[j]) ** 2 * var + noise[j]
    return mu, var


def _moments_match(z: torch.Tensor, mu: torch.Tensor, var: torch.Tensor) -> None:
    n = z.shape[0]
    assert (z.mean(0) - mu).abs().max() < 4 * torch.sqrt(var / n).max(), (z.mean(0), mu)
    assert ((z.var(0) - var).abs() / var).max() < 4 * math.sqrt(2 / n), (z.var(0), var)


def test_sde_sampler_has_the_exact_euler_maruyama_moments():
    out = sample_sde(oracle_process(), (10_000, 3), steps=200, t_end=T_EPS, dtype=f64,
                     generator=torch.Generator().manual_seed(0))
    assert out.nfe == 200
    _moments_match(out.z, *_propagate_sde(200))
    # and it approaches the data marginal q(z_eps) as the step shrinks
    s = sch(torch.tensor([T_EPS], dtype=f64))
    target = s.alpha**2 * S + s.sigma2
    gaps = [((_propagate_sde(n)[1] - target).abs() / target).max() for n in (200, 2000)]
    assert gaps[1] < 0.2 * gaps[0] and gaps[1] < 0.01


@pytest.mark.parametrize("eta", [1.0, 0.5])
def test_discrete_sampler_has_the_exact_moments(eta):
    out = sample_discrete(oracle_process(), (10_000, 3), T=200, t_end=T_EPS, eta=eta, dtype=f64,
                          generator=torch.Generator().manual_seed(1))
    assert out.nfe == 200
    _moments_match(out.z, *_propagate_discrete(200, eta))
    s = sch(torch.tensor([T_EPS], dtype=f64))
    target = s.alpha**2 * S + s.sigma2
    gaps = [((_propagate_discrete(n, eta)[1] - target).abs() / target).max() for n in (200, 2000)]
    assert gaps[1] < 0.5 * gaps[0] and gaps[1] < 0.02, gaps


def test_ddim_follows_the_flow_and_is_deterministic():
    z_1 = torch.randn(8, 3, dtype=f64, generator=torch.Generator().manual_seed(2))
    a = sample_discrete(oracle_process(), z_1=z_1, T=1000, t_end=T_EPS, eta=0.0)
    b = sample_discrete(oracle_process(), z_1=z_1, T=1000, t_end=T_EPS, eta=0.0)
    assert torch.equal(a.z, b.z)
    assert torch.allclose(a.z, analytic_flow(z_1, T_EPS), atol=2e-2)


def test_ode_nll_bound_upper_bounds_the_data_density():
    """With the exact denoiser and prior q(z_1), the bound sits just above -log N(x; m, S) (gap -> 0 as t_eps -> 0)."""
    from latent_ndm.diffusion.likelihood import ode_nll_bound

    x = M + S.sqrt() * torch.randn(2000, 3, dtype=f64, generator=torch.Generator().manual_seed(5))
    exact = -(-0.5 * (torch.log(2 * math.pi * S) + (x - M) ** 2 / S)).sum(1)
    prior = lambda z1: marginal_logp(z1, 1.0, M, S, sch)  # noqa: E731
    gaps = []
    for t_eps in (1e-2, 1e-4):
        out = ode_nll_bound(oracle_process(), x, t_eps=t_eps, exact=True, rtol=1e-6, atol=1e-6, prior_logp=prior,
                            generator=torch.Generator().manual_seed(6))
        gap = (out.nll - exact).mean().item()
        se = (out.nll - exact).std().item() / math.sqrt(x.shape[0])
        assert gap > -4 * se  # a bound
        gaps.append(gap)
        assert torch.allclose(out.nll, out.dequant + out.ode_nll)
    assert gaps[1] < 0.2 * gaps[0] + 1e-3 and abs(gaps[1]) < 5e-3, gaps
