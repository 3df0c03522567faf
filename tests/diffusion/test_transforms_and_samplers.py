"""Transforms (oracle 6 on a network), time samplers and x_hat parameterisations."""

import math

import pytest
import torch

from latent_ndm.diffusion.forward_process import ForwardProcess
from latent_ndm.diffusion.parameterisation import DataPrediction, Denoiser, EpsilonPrediction, SkipPrediction
from latent_ndm.diffusion.schedule import VPSchedule
from latent_ndm.diffusion.time_sampling import InverseG2Time, LikelihoodISTime, UniformTime
from latent_ndm.diffusion.transforms import IdentityTransform, NeuralTransform, SeparableTransform
from latent_ndm.networks import TimeMLP

f64 = torch.float64
sch = VPSchedule()


def neural_transform(method: str = "forward") -> NeuralTransform:
    torch.manual_seed(0)
    net = TimeMLP(dim=3, hidden=32, depth=2, time_dim=16, time_scale=5.0, zero_init_output=False).double()
    return NeuralTransform(net, jvp_method=method)


@pytest.mark.parametrize("method", ["forward", "double_vjp"])
def test_network_jvp_matches_central_differences(method):
    F = neural_transform(method)
    x = torch.randn(8, 3, dtype=f64)
    t = torch.linspace(0.05, 0.95, 8, dtype=f64)
    out = F.F_and_dF_dt(x, t)
    h = 1e-4
    fd = (F(x, t + h) - F(x, t - h)) / (2 * h)
    assert torch.allclose(out.F, F(x, t), rtol=1e-12, atol=1e-12)
    assert torch.allclose(out.dF_dt, fd, rtol=1e-6, atol=1e-7)


def test_network_transform_is_identity_at_zero_and_gradients_flow():
    F = neural_transform()
    x = torch.randn(4, 3, dtype=f64)
    assert torch.equal(F(x, torch.zeros(4, dtype=f64)), x)
    out = F.F_and_dF_dt(x, torch.full((4,), 0.3, dtype=f64))
    out.dF_dt.pow(2).sum().backward()
    grads = [p.grad for p in F.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0


def test_double_vjp_agrees_with_forward_mode_including_parameter_gradients():
    Fa, Fb = neural_transform("forward"), neural_transform("double_vjp")
    x = torch.randn(5, 3, dtype=f64)
    t = torch.rand(5, dtype=f64)
    a, b = Fa.F_and_dF_dt(x, t), Fb.F_and_dF_dt(x, t)
    assert torch.allclose(a.dF_dt, b.dF_dt, rtol=1e-12)
    a.dF_dt.sum().backward()
    b.dF_dt.sum().backward()
    for pa, pb in zip(Fa.parameters(), Fb.parameters(), strict=True):
        assert torch.allclose(pa.grad, pb.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cls", [UniformTime, LikelihoodISTime, InverseG2Time])
def test_time_sampler_weights_are_inverse_densities(cls):
    t_eps = 1e-3
    sampler = cls(sch, t_eps=t_eps)
    # 1/weight integrates to 1 over [t_eps, 1] (it is the density r(t))
    grid = torch.linspace(t_eps, 1.0, 200_001, dtype=f64)
    assert torch.trapezoid(1.0 / sampler.weight(grid), grid).item() == pytest.approx(1.0, rel=1e-6)
    # and samples follow that density: E_r[g(t) w(t)] = integral g for g(t) = t^2
    ts = sampler.sample(400_000, dtype=f64, generator=torch.Generator().manual_seed(0))
    assert ts.t.min() >= t_eps and ts.t.max() <= 1.0
    est = ts.t**2 * ts.weight
    se = est.std().item() / math.sqrt(est.numel())
    assert abs(est.mean().item() - (1 - t_eps**3) / 3) < 4 * se


def test_stratified_sampling_covers_the_interval():
    ts = UniformTime(sch, t_eps=0.01, stratified=True).sample(100, generator=torch.Generator().manual_seed(0))
    counts = torch.histc(ts.t, bins=10, min=0.01, max=1.0)
    assert torch.all(counts == 10)


def test_parameterisations():
    z = torch.randn(6, 3, dtype=f64)
    t = torch.linspace(0.01, 1.0, 6, dtype=f64)
    s = sch(t)
    out = torch.randn(6, 3, dtype=f64)

    class Fixed(torch.nn.Module):
        def forward(self, z_t, t):
            return out

    eps = Denoiser(Fixed(), sch, EpsilonPrediction())(z, t)
    assert torch.allclose(eps, (z - s.sigma[:, None] * out) / s.alpha[:, None])
    assert torch.equal(Denoiser(Fixed(), sch, DataPrediction())(z, t), out)
    skip = Denoiser(Fixed(), sch, SkipPrediction(sigma_data=1.0))(z, t)
    assert torch.allclose(skip, s.alpha[:, None] * z + s.sigma[:, None] * out)  # VP, sd = 1
    # with net = 0 the skip form is the Gaussian-optimal denoiser for N(0, sd^2) data
    zero = Denoiser(lambda z_t, t: torch.zeros_like(z_t), sch, SkipPrediction(sigma_data=0.5))(z, t)
    sd2 = 0.25
    assert torch.allclose(zero, s.alpha[:, None] * sd2 / (s.alpha[:, None] ** 2 * sd2 + s.sigma2[:, None]) * z)


def test_identity_transform():
    x = torch.randn(2, 3, 4, 4)
    out = IdentityTransform().F_and_dF_dt(x, torch.rand(2))
    assert torch.equal(out.F, x) and torch.equal(out.dF_dt, torch.zeros_like(x))


def test_samplers_and_likelihood_run_with_a_neural_transform():
    """End to end with a learnable F: every sampler and the likelihood give finite results of the right shape."""
    from latent_ndm.diffusion.likelihood import ode_log_likelihood
    from latent_ndm.diffusion.reverse_process import ReverseProcess
    from latent_ndm.diffusion.samplers import sample_discrete, sample_ode, sample_sde

    torch.manual_seed(0)
    # a freshly initialised (zero-output) denoiser: a nearly flat field once made torchdiffeq probe t far outside [0, 1]
    fresh = ReverseProcess(Denoiser(TimeMLP(dim=3), sch, SkipPrediction()),
                           ForwardProcess(sch, NeuralTransform(TimeMLP(dim=3))))
    assert torch.isfinite(sample_ode(fresh, (4, 3), rtol=1e-3, atol=1e-3).x).all()
    den = Denoiser(TimeMLP(dim=3, hidden=16, depth=1, zero_init_output=False), sch, SkipPrediction())
    proc = ReverseProcess(den, ForwardProcess(sch, NeuralTransform(TimeMLP(dim=3, hidden=16, depth=1, time_scale=5.0,
                                                                           zero_init_output=False))))
    for out in (sample_ode(proc, (4, 3), rtol=1e-3, atol=1e-3), sample_sde(proc, (4, 3), steps=5),
                sample_discrete(proc, (4, 3), T=5, eta=0.5), sample_ode(proc, (4, 3), method="euler", steps=4)):
        assert out.x.shape == (4, 3) and torch.isfinite(out.x).all() and out.nfe > 0
    ll = ode_log_likelihood(proc.velocity, out.z, t_eps=1e-3, exact=True, rtol=1e-4, atol=1e-4)
    hut = ode_log_likelihood(proc.velocity, out.z, t_eps=1e-3, rtol=1e-4, atol=1e-4)
    assert torch.isfinite(ll.logp).all() and torch.isfinite(hut.logp).all()


def separable(K: int = 6) -> SeparableTransform:
    torch.manual_seed(1)
    net = TimeMLP(dim=3, hidden=32, depth=2, time_dim=16, zero_init_output=False, out_dim=3 * K).double()
    return SeparableTransform(net, num_basis=K)


def test_separable_transform_derivative_is_exact():
    F = separable()
    x = torch.randn(8, 3, dtype=f64)
    t = torch.linspace(0.0, 1.0, 8, dtype=f64)
    assert torch.equal(F(x, torch.zeros(8, dtype=f64)), x)
    out = F.F_and_dF_dt(x, t.clamp(1e-4, 1 - 1e-4))
    h = 1e-5
    tc = t.clamp(1e-4, 1 - 1e-4)
    fd = (F(x, tc + h) - F(x, tc - h)) / (2 * h)
    assert torch.allclose(out.dF_dt, fd, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("make", [separable, lambda: neural_transform("forward")])
def test_evaluate_matches_single_calls(make):
    F = make()
    x = torch.randn(5, 3, dtype=f64)
    ts = [torch.rand(5, dtype=f64) for _ in range(3)]
    outs = F.evaluate(x, ts, [True, False, True])
    for t, o, d in zip(ts, outs, [True, False, True], strict=True):
        ref = F.F_and_dF_dt(x, t)
        assert torch.allclose(o.F, ref.F, rtol=1e-12, atol=1e-12)
        assert (o.dF_dt is None) != d
        if d:
            assert torch.allclose(o.dF_dt, ref.dF_dt, rtol=1e-10, atol=1e-12)


def test_separable_discrete_tends_to_continuous():
    from latent_ndm.diffusion.terms import continuous_integrand, discrete_kl

    F = separable()
    x, x_hat = torch.randn(4, 3, dtype=f64), torch.randn(4, 3, dtype=f64)
    t = torch.tensor([0.2, 0.4, 0.6, 0.8], dtype=f64)
    a, b = F.F_and_dF_dt(x, t), F.F_and_dF_dt(x_hat, t)
    cont = continuous_integrand(a.F, a.dF_dt, b.F, b.dF_dt, sch(t))
    s = t - 1e-6
    disc = discrete_kl(F(x, s), F(x_hat, s), a.F, b.F, sch(s), sch(t)) / 1e-6
    assert torch.allclose(disc, cont, rtol=1e-4)


def test_separable_transform_with_a_unet_and_the_objectives():
    from latent_ndm.diffusion.objectives import ContinuousNDMObjective, DiscreteNDMObjective
    from latent_ndm.networks import UNet

    torch.manual_seed(0)
    F = SeparableTransform(UNet(2, out_channels=2 * 4, base_channels=8, channel_mult=(1,), num_res_blocks=1,
                                attn_resolutions=(), resolution=8, num_groups=4, zero_init_output=False), 4)
    den = Denoiser(UNet(2, base_channels=8, channel_mult=(1,), num_res_blocks=1, attn_resolutions=(), resolution=8,
                        num_groups=4), sch, SkipPrediction())
    x = torch.randn(3, 2, 8, 8)
    for obj in (ContinuousNDMObjective(sch, LikelihoodISTime(sch, 1e-2)), DiscreteNDMObjective(sch, T=20)):
        out = obj(den, ForwardProcess(sch, F), x)
        out.total.mean().backward()
        assert torch.isfinite(out.total).all()
        assert all(p.grad is not None for p in F.parameters())
