"""docs/MATH.md section 12: the straight-trajectory objective (a regression, not a bound) and the Euler sampler.

- flow: with Gaussian data, F = identity and the exact denoiser (fixed noise, and an x-independent learned noise), the
  Monte Carlo E ||v - u||^2 at fixed t matches its closed form alpha^2 (r - sigma'/sigma)^2 sum_i Var[x_i | z_t];
- curvature: the jvp acceleration dv/dt + (dv/dz) v matches central differences along the path (random networks);
- Euler: K fixed steps of `sample_ode(method="euler")` are K explicit steps z <- z + h v(z, t).
"""

import math

import pytest
import torch
from torch import nn

from latent_ndm.diffusion.forward_process import ForwardProcess
from latent_ndm.diffusion.noise import NoiseScale
from latent_ndm.diffusion.objectives import StraightFlowObjective
from latent_ndm.diffusion.objectives.straight import acceleration
from latent_ndm.diffusion.reverse_process import ReverseProcess
from latent_ndm.diffusion.samplers import sample_ode
from latent_ndm.diffusion.schedule import VPSchedule
from latent_ndm.diffusion.transforms import IdentityTransform
from tests.support.nfdm_oracle import ExactNFDMDenoiser, L_of_t, RandomRho, TimeRho
from tests.support.oracle import GaussianOracleDenoiser
from tests.support.oracle_setup import CurvedF, M, S, f64, gaussian_data

sch = VPSchedule()


def flow_closed_form(t: float, learned_noise: bool) -> float:
    """E ||v - u||^2 at t: v - u = alpha (r - sigma'/sigma) (x_hat - x) for mu = alpha x and an x-independent sigma."""
    tt = torch.tensor([t], dtype=f64)
    s = sch(tt)
    L, dL = L_of_t(tt) if learned_noise else (torch.zeros(1, dtype=f64), torch.zeros(1, dtype=f64))
    var_n = s.sigma2 * torch.exp(2 * L)
    coef = s.alpha * (s.r - s.d_sigma2 / (2 * s.sigma2) - dL)
    post = (S * var_n / (s.alpha**2 * S + var_n)).sum()
    return (coef**2 * post).item()


@pytest.mark.parametrize("learned_noise", [False, True])
@pytest.mark.parametrize("t", [0.05, 0.3, 0.8])
def test_the_flow_term_with_the_exact_denoiser_is_the_posterior_variance_of_the_velocity(t, learned_noise):
    n = 100_000
    process = (ReverseProcess(ExactNFDMDenoiser(), ForwardProcess(sch, IdentityTransform(), NoiseScale(TimeRho())))
               if learned_noise
               else ReverseProcess(GaussianOracleDenoiser(M, S, sch), ForwardProcess(sch, IdentityTransform())))
    out = StraightFlowObjective(sch, curvature_weight=0.0)(process.denoiser, process.process,
                                                            gaussian_data(n, seed=21),
                                                            generator=torch.Generator().manual_seed(4),
                                                            t=torch.full((n,), t, dtype=f64))
    mean, se = out.flow.mean().item(), out.flow.std().item() / math.sqrt(n)
    expected = flow_closed_form(t, learned_noise)
    assert abs(mean - expected) < 4 * se, (mean, expected, se)
    assert torch.equal(out.total, out.flow) and not out.curvature.any()


class RandomDenoiser(nn.Module):
    """A fixed random nonlinear x_hat(z, t) in float64."""

    def __init__(self, seed=8):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w1 = torch.randn(4, 32, dtype=f64, generator=g) / 2
        self.w2 = torch.randn(32, 3, dtype=f64, generator=g) / 4

    def forward(self, z, t):
        return z + torch.tanh(torch.cat([z, t[:, None]], 1) @ self.w1) @ self.w2


def test_the_acceleration_matches_central_differences_along_the_path():
    process = ReverseProcess(RandomDenoiser(), ForwardProcess(sch, CurvedF(), NoiseScale(RandomRho())))
    g = torch.Generator().manual_seed(2)
    z = torch.randn(64, 3, dtype=f64, generator=g)
    t = torch.rand(64, dtype=f64, generator=g) * 0.8 + 0.1
    v, a = acceleration(process, z, t)
    h = 1e-5
    central = (process.velocity(z + h * v, t + h) - process.velocity(z - h * v, t - h)) / (2 * h)
    assert torch.allclose(a, central, rtol=1e-6, atol=1e-8)
    loss = StraightFlowObjective(sch, curvature_weight=0.5)(process.denoiser, process.process,
                                                            gaussian_data(64, seed=1),
                                                            generator=torch.Generator().manual_seed(0))
    assert torch.allclose(loss.total, loss.flow + 0.5 * loss.curvature) and (loss.curvature > 0).all()


def test_euler_takes_k_explicit_steps():
    process = ReverseProcess(RandomDenoiser(), ForwardProcess(sch, CurvedF(), NoiseScale(RandomRho())))
    z1 = torch.randn(16, 3, dtype=f64, generator=torch.Generator().manual_seed(5))
    for K in (1, 2, 4):
        out = sample_ode(process, z_1=z1, t_end=1e-3, method="euler", steps=K)
        times = torch.linspace(1.0, 1e-3, K + 1, dtype=f64)
        z = z1
        for k in range(K):
            z = z + (times[k + 1] - times[k]) * process.velocity(z, times[k].expand(16))
        assert out.nfe == K and torch.allclose(out.z, z, rtol=1e-12, atol=1e-12)


class ScaledCurvedF(CurvedF):
    """CurvedF with a learnable strength c of its nonlinear part: F = x + c [t (1 - t) tanh(2x) + 0.3 sin(3t) x^2]."""

    def __init__(self):
        super().__init__()
        self.c = nn.Parameter(torch.tensor(0.8, dtype=f64))

    def forward(self, x, t):
        return x + self.c * (super().forward(x, t) - x)


def _as_parameters(module: nn.Module) -> nn.Module:
    for name, value in list(vars(module).items()):
        if isinstance(value, torch.Tensor) and not isinstance(value, nn.Parameter):
            setattr(module, name, nn.Parameter(value.clone()))
    return module


@pytest.mark.parametrize("seed", [8, 9, 10])
def test_the_curvature_gradient_is_the_gradient_of_the_mean_squared_acceleration(seed):
    """Autograd's gradient of E ||a||^2 (denoiser, F and noise parameters) against central differences of the same
    Monte Carlo estimate (fixed times and noise) along random directions in parameter space. The acceleration's
    direction v must not be detached: a = dv/dt + (dv/dz) v depends on the parameters through v too."""
    process = ReverseProcess(_as_parameters(RandomDenoiser(seed)),
                             ForwardProcess(sch, ScaledCurvedF(), NoiseScale(_as_parameters(RandomRho(seed=seed + 1)))))
    params = [p for p in process.parameters()]
    assert len(params) == 5
    x = gaussian_data(32, seed=seed)
    t = torch.rand(32, dtype=f64, generator=torch.Generator().manual_seed(seed)) * 0.8 + 0.1
    objective = StraightFlowObjective(sch, curvature_weight=1.0)

    def mean_curvature() -> torch.Tensor:
        return objective(process.denoiser, process.process, x, generator=torch.Generator().manual_seed(3),
                         t=t).curvature.mean()

    grads = torch.autograd.grad(mean_curvature(), params)
    g = torch.Generator().manual_seed(seed + 100)
    for _ in range(3):
        direction = [torch.randn(p.shape, dtype=f64, generator=g) for p in params]
        analytic = sum((gr * d).sum() for gr, d in zip(grads, direction, strict=True)).item()
        h = 1e-6
        with torch.no_grad():
            values = []
            for sign in (1.0, -1.0):
                for p, d in zip(params, direction, strict=True):
                    p.add_(sign * h * d)
                values.append(mean_curvature().item())
                for p, d in zip(params, direction, strict=True):
                    p.sub_(sign * h * d)
        numeric = (values[0] - values[1]) / (2 * h)
        assert abs(analytic - numeric) <= 1e-6 * max(1.0, abs(numeric)), (analytic, numeric)


def optimal_flow_term(rho: float, n: int = 20001) -> float:
    """E_t flow*(t) for F = identity, Gaussian data and L(t) = t (1 - t) rho (docs/MATH.md section 12), by quadrature
    over t ~ U[t_eps, 1] of the closed form that the Monte Carlo test above checks the objective against."""
    t = torch.linspace(1e-3, 1.0, n, dtype=f64)
    s = sch(t)
    var_n = s.sigma2 * torch.exp(2 * t * (1 - t) * rho)
    coef = s.alpha * (s.r - s.d_sigma2 / (2 * s.sigma2) - (1 - 2 * t) * rho)
    post = (S[None] * var_n[:, None] / (s.alpha[:, None] ** 2 * S[None] + var_n[:, None])).sum(1)
    return (torch.trapezoid(coef**2 * post, t) / (1 - 1e-3)).item()


def test_the_optimal_flow_term_falls_as_the_learned_noise_shrinks():
    """The straight objective rewards a collapsing learned noise: its best flow term falls monotonically as
    rho -> -inf, although L = 0 at both ends (the values docs/MATH.md section 12 quotes)."""
    rhos = [2.0, 1.0, 0.0, -1.0, -2.0, -4.0, -8.0, -16.0, -32.0]
    values = [optimal_flow_term(r) for r in rhos]
    assert all(a > b for a, b in zip(values[:-1], values[1:], strict=True)), values
    assert values[2] == pytest.approx(7.52, abs=0.01) and values[7] == pytest.approx(0.61, abs=0.01)
    assert values[-1] < 0.05 * values[2]
