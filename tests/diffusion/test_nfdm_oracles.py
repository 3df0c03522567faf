"""docs/MATH.md section 11: the Gaussian NFDM forward process (learned noise sigma(x, t) = sigma_t exp(L)) against
closed forms, in the Gaussian-data setting of the NDM oracles (D = 3, VP schedule, t_eps = 1e-3, float64).

(a) L = 0 is NDM element for element (objective terms and reverse drifts);
(b) an x-independent L(t) with the exact Gaussian denoiser: the Monte Carlo diffusion term matches the quadrature of
    its closed-form integrand, and the NELBO stays above the data entropy;
(c) random mean and noise networks with an inexact denoiser: the NELBO stays above the data entropy;
(d) dL/dt by jvp against central differences, and L = 0 at t = 0 and 1;
(e) the drifts: with the exact denoiser the ODE velocity is the marginal probability flow M' + V'/(2V) (z - M), and the
    SDE drift adds g^2/(2V) (z - M); a wrong sign or a missing factor in the noise term fails these.
"""

import math

import pytest
import torch

from latent_ndm.diffusion import gaussian
from latent_ndm.diffusion.forward_process import ForwardProcess
from latent_ndm.diffusion.noise import NoiseScale
from latent_ndm.diffusion.objectives import ContinuousNDMObjective
from latent_ndm.diffusion.reverse_process import ReverseProcess
from latent_ndm.diffusion.schedule import VPSchedule
from latent_ndm.diffusion.time_sampling import LikelihoodISTime
from latent_ndm.diffusion.transforms import IdentityTransform
from tests.support.nfdm_oracle import ExactNFDMDenoiser, L_of_t, RandomRho, TimeRho, ZeroRho, marginal
from tests.support.oracle import GaussianOracleDenoiser, data_entropy
from tests.support.oracle_setup import T_EPS, CurvedF, M, S, f64, gaussian_data

sch = VPSchedule()


# -- (a) ---------------------------------------------------------------------------------------------------------
def test_zero_noise_scale_is_ndm_element_for_element():
    x = gaussian_data(512, seed=3)
    obj = ContinuousNDMObjective(sch, LikelihoodISTime(sch, t_eps=T_EPS))
    den = GaussianOracleDenoiser(M, S, sch)
    a = obj(den, ForwardProcess(sch, CurvedF()), x, generator=torch.Generator().manual_seed(1))
    b = obj(den, ForwardProcess(sch, CurvedF(), NoiseScale(ZeroRho())), x, generator=torch.Generator().manual_seed(1))
    for name in ("rec", "diff", "prior", "total"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    z, t = torch.randn(64, 3, dtype=f64), torch.rand(64, dtype=f64)
    ndm = ReverseProcess(den, ForwardProcess(sch, CurvedF()))
    nf = ReverseProcess(den, ForwardProcess(sch, CurvedF(), NoiseScale(ZeroRho())))
    for scale in (1.0, 0.0):
        assert torch.equal(ndm.drift(z, t, scale)[0], nf.drift(z, t, scale)[0])


# -- (b) ---------------------------------------------------------------------------------------------------------
def expected_integrand(t):
    """E ||Delta||^2 / (2 g^2) with the exact denoiser: Delta = alpha (r - sigma'/sigma - g^2 / (2 sigma^2)) (x - x_hat)
    for mu = alpha x and an x-independent sigma(t) = sigma_t exp(L(t)), so the expectation is that coefficient squared
    times the posterior variance sum_i S_i sigma^2 / (alpha^2 S_i + sigma^2), over 2 g^2 (MATH.md section 11)."""
    s = sch(t)
    L, dL = L_of_t(t)
    var_n = s.sigma2 * torch.exp(2 * L)
    k = s.d_sigma2 / (2 * s.sigma2) + dL + s.g2 / (2 * var_n)
    coef = s.alpha * (s.r - k)
    post = (S * var_n[:, None] / (s.alpha[:, None] ** 2 * S + var_n[:, None])).sum(-1)
    return coef**2 * post / (2 * s.g2)


def quadrature(integrand):
    u = torch.linspace(0, 1, 40001, dtype=f64)
    ends = sch(torch.tensor([T_EPS, 1.0], dtype=f64)).sigma2
    lo, hi = math.log(ends[0].item()), math.log(ends[1].item())
    t = sch.t_from_sigma2(torch.exp(lo + (hi - lo) * u)).clamp(T_EPS, 1.0)
    return torch.trapezoid(integrand(t) * LikelihoodISTime(sch, T_EPS).weight(t), u).item()


def test_x_independent_noise_with_the_exact_denoiser_gives_the_closed_form():
    L_diff = quadrature(expected_integrand)
    # the same integrand with L = 0 is the NDM oracle's VDM value (checks the closed form itself)
    s = sch(torch.tensor([T_EPS, 1.0], dtype=f64))
    vdm = (0.5 * torch.log((1 + S * torch.exp(s.log_snr[0])) / (1 + S * torch.exp(s.log_snr[1])))).sum().item()
    assert vdm == pytest.approx(11.77730, abs=1e-5)
    # with sigma(t) moved off the schedule, g = g_F is no longer this process's own diffusion, and the diffusion term
    # exceeds VDM's 1/2 sum log[(1 + S SNR(t_eps)) / (1 + S SNR(1))] for its own SNR(t) = alpha^2 / sigma(t)^2
    snr_eps = torch.exp(s.log_snr[0] - 2 * L_of_t(torch.tensor(T_EPS, dtype=f64))[0])
    own_vdm = (0.5 * torch.log((1 + S * snr_eps) / (1 + S * torch.exp(s.log_snr[1])))).sum().item()
    assert L_diff > own_vdm + 0.05  # 11.8846 against 11.7758
    n = 200_000
    obj = ContinuousNDMObjective(sch, LikelihoodISTime(sch, t_eps=T_EPS))
    out = obj(ExactNFDMDenoiser(), ForwardProcess(sch, IdentityTransform(), NoiseScale(TimeRho())),
              gaussian_data(n, seed=11), generator=torch.Generator().manual_seed(7))
    mean, se = out.diff.mean().item(), out.diff.std().item() / math.sqrt(n)
    assert abs(mean - L_diff) < 4 * se, (mean, L_diff, se)
    total, se_total = out.total.mean().item(), out.total.std().item() / math.sqrt(n)
    assert total - data_entropy(S) > -4 * se_total


# -- (c) ---------------------------------------------------------------------------------------------------------
def test_the_bound_stays_above_the_data_entropy_for_random_networks():
    n = 100_000
    obj = ContinuousNDMObjective(sch, LikelihoodISTime(sch, t_eps=T_EPS))
    out = obj(GaussianOracleDenoiser(M, S, sch), ForwardProcess(sch, CurvedF(), NoiseScale(RandomRho())),
              gaussian_data(n, seed=4), generator=torch.Generator().manual_seed(9))
    gap, se = out.total.mean().item() - data_entropy(S), out.total.std().item() / math.sqrt(n)
    assert gap > 4 * se, (gap, se)  # an inexact model: strictly above, not just within noise


# -- (d) ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["forward", "double_vjp"])
def test_noise_scale_jvp_matches_central_differences(method):
    noise = NoiseScale(RandomRho(), jvp_method=method)
    x = gaussian_data(32, seed=2)
    t = torch.rand(32, dtype=f64, generator=torch.Generator().manual_seed(3)) * 0.98 + 0.01
    out = noise.F_and_dF_dt(x, t)
    h = 1e-6
    central = (noise(x, t + h) - noise(x, t - h)) / (2 * h)
    assert torch.allclose(out.dF_dt, central, rtol=1e-7, atol=1e-9)
    ends = [torch.full((32,), v, dtype=f64) for v in (0.0, 1.0)]
    assert all(torch.equal(noise(x, e), torch.zeros_like(x)) for e in ends)


# -- (e) ---------------------------------------------------------------------------------------------------------
def _drift_case():
    g = torch.Generator().manual_seed(6)
    t = torch.rand(256, dtype=f64, generator=g) * 0.95 + 0.02
    z = torch.randn(256, 3, dtype=f64, generator=g)
    Mt, V, dM, dV = marginal(t)
    process = ReverseProcess(ExactNFDMDenoiser(), ForwardProcess(sch, IdentityTransform(), NoiseScale(TimeRho())))
    return process, z, t, Mt, V, dM, dV


def test_the_ode_velocity_is_the_marginal_probability_flow_and_the_sde_drift_adds_the_score():
    process, z, t, Mt, V, dM, dV = _drift_case()
    flow = dM + dV / (2 * V) * (z - Mt)
    assert torch.allclose(process.velocity(z, t), flow, rtol=1e-10, atol=1e-12)
    drift, g2 = process.drift(z, t, 1.0)
    assert torch.allclose(drift, flow + g2[:, None] / (2 * V) * (z - Mt), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("wrong", ["sign of dL/dt", "g^2 without the 1/2", "exp(+2L)"])
def test_wrong_noise_terms_fail_the_drift_oracle(wrong, monkeypatch):
    right = gaussian.noise_excess

    def mutated(L, dL, sched, g2):
        if wrong == "sign of dL/dt":
            return right(L, -dL, sched, g2)
        if wrong == "g^2 without the 1/2":
            return right(L, dL, sched, 2 * g2)
        return right(-L, dL, sched, g2)

    monkeypatch.setattr(gaussian, "noise_excess", mutated)
    process, z, t, Mt, V, dM, dV = _drift_case()
    flow = dM + dV / (2 * V) * (z - Mt)
    drift, g2 = process.drift(z, t, 1.0)
    ok_ode = torch.allclose(process.velocity(z, t), flow, rtol=1e-6)
    ok_sde = torch.allclose(drift, flow + g2[:, None] / (2 * V) * (z - Mt), rtol=1e-6)
    assert not (ok_ode and ok_sde)
