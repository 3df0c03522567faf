"""docs/MATH.md section 9, oracles 1-4 and 6: the NDM objective against closed forms."""

import math

import pytest
import torch

from latent_ndm.diffusion.forward_process import ForwardProcess
from latent_ndm.diffusion.objectives import ContinuousNDMObjective, DiscreteNDMObjective
from latent_ndm.diffusion.schedule import ScheduleOutput, VPSchedule
from latent_ndm.diffusion.terms import continuous_integrand, discrete_kl, prior_kl, reconstruction
from latent_ndm.diffusion.time_sampling import InverseG2Time, LikelihoodISTime, UniformTime
from latent_ndm.diffusion.transforms import IdentityTransform
from tests.support.oracle import (
    GaussianOracleDenoiser,
    continuous_diffusion_loss,
    data_entropy,
    discrete_diffusion_loss,
    expected_integrand,
)
from tests.support.oracle_setup import T_EPS, AffineF, CurvedF, M, S, f64, gaussian_data

sch = VPSchedule()


def _random_pair(n=16, d=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, dtype=f64, generator=g), torch.randn(n, d, dtype=f64, generator=g)


# -- oracle 1: F = identity is the VDM / LSGM loss, element for element -------------------------------------
def test_identity_continuous_is_vdm():
    x, x_hat = _random_pair()
    eps = torch.randn(x.shape, dtype=f64, generator=torch.Generator().manual_seed(2))
    t = torch.linspace(0.001, 0.999, x.shape[0], dtype=f64)
    s = sch(t)
    tf = IdentityTransform()
    a, b = tf.F_and_dF_dt(x, t), tf.F_and_dF_dt(x_hat, t)
    ours = continuous_integrand(a.F, a.dF_dt, b.F, b.dF_dt, s)
    h = 1e-6
    dsnr = (torch.exp(sch(t + h).log_snr) - torch.exp(sch(t - h).log_snr)) / (2 * h)
    vdm = -0.5 * dsnr * ((x - x_hat) ** 2).sum(1)
    assert torch.allclose(ours, vdm, rtol=1e-5)  # central differences of a steep SNR near t = 0.001
    z = s.alpha[:, None] * x + s.sigma[:, None] * eps
    eps_hat = (z - s.alpha[:, None] * x_hat) / s.sigma[:, None]
    lsgm = s.g2 / (2 * s.sigma2) * ((eps - eps_hat) ** 2).sum(1)
    assert torch.allclose(ours, lsgm, rtol=1e-10)


def test_identity_discrete_is_ddpm_vdm():
    x, x_hat = _random_pair()
    t = torch.linspace(0.01, 1.0, x.shape[0], dtype=f64)
    s = (t - 0.004).clamp_min(1e-3)
    ss, st = sch(s), sch(t)
    ours = discrete_kl(x, x_hat, x, x_hat, ss, st)
    vdm = 0.5 * (torch.exp(ss.log_snr) - torch.exp(st.log_snr)) * ((x - x_hat) ** 2).sum(1)
    assert torch.allclose(ours, vdm, rtol=1e-9)
    # and the DDPM Gaussian KL between posteriors with means computed the DDPM way, variance nu^2
    a_ts = st.alpha / ss.alpha
    s2_ts = st.sigma2 - a_ts**2 * ss.sigma2
    coef_x = (ss.alpha * s2_ts / st.sigma2)[:, None]
    nu2 = s2_ts * ss.sigma2 / st.sigma2
    ddpm = ((coef_x * (x - x_hat)) ** 2).sum(1) / (2 * nu2)
    assert torch.allclose(ours, ddpm, rtol=1e-9)


def test_identity_objective_matches_independent_lsgm_loss():
    x = gaussian_data(64)
    den = GaussianOracleDenoiser(M, S, sch)
    sampler = LikelihoodISTime(sch, t_eps=T_EPS)
    out = ContinuousNDMObjective(sch, sampler)(den, ForwardProcess(sch, IdentityTransform()), x,
                                               generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)  # replay the draws: t first, then eps
    ts = sampler.sample(64, dtype=f64, generator=g)
    eps = torch.randn(x.shape, dtype=f64, generator=g)
    s = sch(ts.t)
    z = s.alpha[:, None] * x + s.sigma[:, None] * eps
    eps_hat = (z - s.alpha[:, None] * den(z, ts.t)) / s.sigma[:, None]
    lsgm = ts.weight * s.g2 / (2 * s.sigma2) * ((eps - eps_hat) ** 2).sum(1)
    assert torch.allclose(out.diff, lsgm, rtol=1e-10)
    assert torch.allclose(out.total, out.rec + out.diff + out.prior)


# -- oracle 2: F(x, t) = a(t) x is the identity model with alpha_t a(t) ---------------------------------------
def test_reparameterisation():
    x, x_hat = _random_pair(seed=3)
    t = torch.linspace(0.002, 0.999, x.shape[0], dtype=f64)
    s, F = sch(t), AffineF(with_shift=False)
    a, da = F.a(t), F.da(t)
    ndm = continuous_integrand(*_pairs(F, x, x_hat, t), s)
    alpha2 = s.alpha * a  # the reparameterised model: alpha'_t = alpha_t a(t), same sigma, same reverse noise g^2
    s2 = ScheduleOutput(alpha=alpha2, sigma=s.sigma, sigma2=s.sigma2, d_alpha=s.d_alpha * a + s.alpha * da,
                        d_sigma2=s.d_sigma2, r=s.r + da / a, g2=s.g2, log_snr=torch.log(alpha2**2 / s.sigma2))
    ident = IdentityTransform()
    base = continuous_integrand(*_pairs(ident, x, x_hat, t), s2)
    assert torch.allclose(ndm, base, rtol=1e-10)


def _pairs(F, x, x_hat, t):
    a, b = F.F_and_dF_dt(x, t), F.F_and_dF_dt(x_hat, t)
    return a.F, a.dF_dt, b.F, b.dF_dt


# -- oracle 3: discrete -> continuous ---------------------------------------------------------------------------
def test_discrete_tends_to_continuous():
    F = CurvedF()
    x, x_hat = torch.tensor([[0.7, -0.4]], dtype=f64), torch.tensor([[0.5, -0.1]], dtype=f64)
    t = torch.tensor([0.37], dtype=f64)
    cont = continuous_integrand(*_pairs(F, x, x_hat, t), sch(t)).item()
    assert cont == pytest.approx(0.3407071, abs=5e-8)

    def kl_over_delta(delta):
        s = t - delta
        return (discrete_kl(F(x, s), F(x_hat, s), F(x, t), F(x_hat, t), sch(s), sch(t)) / delta).item()

    assert kl_over_delta(1e-5) == pytest.approx(0.340722, abs=1e-6)
    errs = [abs(kl_over_delta(d) - cont) for d in (1e-3, 1e-4, 1e-5)]
    assert errs[0] > 5 * errs[1] > 25 * errs[2]  # first-order convergence


# -- oracle 4: the Gaussian bound -------------------------------------------------------------------------------
def test_gaussian_closed_form_bound():
    L_diff = continuous_diffusion_loss(S, T_EPS, sch)
    assert L_diff == pytest.approx(11.77730, abs=1e-5)
    s0, s1 = sch(torch.tensor([T_EPS], dtype=f64)), sch(torch.tensor([1.0], dtype=f64))
    rec = reconstruction(M[None], M[None], s0).item()  # F = identity: the constant D/2 (1 + log 2 pi sigma0^2/alpha0^2)
    # E_x[L_prior] = 1/2 sum [sigma1^2 + alpha1^2 (m^2 + S) - 1 - log sigma1^2]: prior_kl at F = sqrt(m^2 + S)
    prior = prior_kl(torch.sqrt(M**2 + S)[None], s1).item()
    gap = rec + L_diff + prior - data_entropy(S)
    assert gap == pytest.approx(0.0013461, abs=2e-7)
    # the integrand's expectation, integrated by quadrature in log sigma^2, gives the same L_diff
    u = torch.linspace(0, 1, 20001, dtype=f64)
    lo, hi = math.log(s0.sigma2.item()), math.log(s1.sigma2.item())
    t = sch.t_from_sigma2(torch.exp(lo + (hi - lo) * u)).clamp(T_EPS, 1.0)
    vals = expected_integrand(t, S, sch) * LikelihoodISTime(sch, T_EPS).weight(t)
    assert torch.trapezoid(vals, u).item() == pytest.approx(L_diff, rel=1e-6)


@pytest.mark.parametrize("sampler_cls", [LikelihoodISTime, InverseG2Time, UniformTime])
def test_gaussian_monte_carlo_agrees(sampler_cls):
    n = 200_000
    x = gaussian_data(n, seed=11)
    obj = ContinuousNDMObjective(sch, sampler_cls(sch, t_eps=T_EPS))
    out = obj(GaussianOracleDenoiser(M, S, sch), ForwardProcess(sch, IdentityTransform()), x,
              generator=torch.Generator().manual_seed(7))
    mean, se = out.diff.mean().item(), out.diff.std().item() / math.sqrt(n)
    assert abs(mean - 11.77730) < 4 * se, (mean, se)
    gap = out.total.mean().item() - data_entropy(S)
    se_total = out.total.std().item() / math.sqrt(n)
    assert abs(gap - 0.0013461) < 4 * se_total


def test_discrete_bound_decreases_to_continuous():
    L = [discrete_diffusion_loss(S, T, T_EPS, sch) for T in (10, 100, 1000, 10000)]
    assert L[2] == pytest.approx(13.097, abs=1e-3)
    assert L[0] > L[1] > L[2] > L[3] > continuous_diffusion_loss(S, T_EPS, sch)
    # the discrete objective's Monte Carlo estimate agrees with the closed-form sum
    n, T = 200_000, 1000
    obj = DiscreteNDMObjective(sch, T=T, t_eps=T_EPS)
    out = obj(GaussianOracleDenoiser(M, S, sch), ForwardProcess(sch, IdentityTransform()), gaussian_data(n, seed=12),
              generator=torch.Generator().manual_seed(3))
    mean, se = out.diff.mean().item(), out.diff.std().item() / math.sqrt(n)
    assert abs(mean - L[2]) < 4 * se, (mean, se)


# -- oracle 6: jvp -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["forward", "double_vjp"])
def test_affine_jvp_is_exact(method):
    F = AffineF(jvp_method=method)
    x, _ = _random_pair()
    t = torch.rand(x.shape[0], dtype=f64)
    out = F.F_and_dF_dt(x, t)
    assert torch.allclose(out.F, F.a(t)[:, None] * x + 0.2 * t[:, None] ** 2, rtol=1e-14)
    assert torch.allclose(out.dF_dt, F.da(t)[:, None] * x + 0.4 * t[:, None], rtol=1e-12, atol=1e-14)


def test_misprinted_forms_fail():
    """The printed eq. (11) ('+' between the terms, no 1/2) does not reproduce the oracle value."""
    F = CurvedF()
    x, x_hat = torch.tensor([[0.7, -0.4]], dtype=f64), torch.tensor([[0.5, -0.1]], dtype=f64)
    t = torch.tensor([0.37], dtype=f64)
    s = sch(t)
    a, b = F.F_and_dF_dt(x, t), F.F_and_dF_dt(x_hat, t)
    c = 2 * s.g2
    delta_printed = s.alpha * (a.dF_dt - b.dF_dt) + s.alpha * c / s.sigma2 * (a.F - b.F)
    printed = (delta_printed**2).sum() / (2 * s.g2)
    assert abs(printed.item() - 0.3407071) > 0.1


@pytest.mark.parametrize("sampler_cls", [UniformTime, LikelihoodISTime, InverseG2Time])
def test_an_objective_cut_elsewhere_is_the_objective_built_there(sampler_cls):
    """`objective.at(t_eps)` equals the objective built at t_eps: the same estimate for the same draws (and a
    straight objective keeps its curvature weight)."""
    from latent_ndm.diffusion.objectives import StraightFlowObjective

    sch = VPSchedule()
    moved = ContinuousNDMObjective(sch, sampler_cls(sch, 1e-2)).at(1e-5)
    built = ContinuousNDMObjective(sch, sampler_cls(sch, 1e-5))
    assert moved.t_eps == moved.time_sampler.t_eps == 1e-5 and type(moved.time_sampler) is sampler_cls
    denoiser = GaussianOracleDenoiser(M, S, sch)
    x = gaussian_data(64, seed=3)
    a = moved(denoiser, ForwardProcess(sch, IdentityTransform()), x, generator=torch.Generator().manual_seed(1)).total
    b = built(denoiser, ForwardProcess(sch, IdentityTransform()), x, generator=torch.Generator().manual_seed(1)).total
    assert torch.equal(a, b)
    discrete = DiscreteNDMObjective(sch, T=7, t_eps=1e-2).at(1e-4)
    assert (discrete.T, discrete.t_eps) == (7, 1e-4)
    straight = StraightFlowObjective(sch, 1e-2, curvature_weight=0.3).at(1e-3)
    assert (straight.t_eps, straight.curvature_weight, straight.is_bound) == (1e-3, 0.3, False)
    assert moved.is_bound and discrete.is_bound
