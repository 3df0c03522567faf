"""Discretised likelihoods: exact normalisation, an independent float64 reference, sampling, quantisation."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from vae.likelihoods import (
    BinGrid,
    DiscretizedGaussian,
    DiscretizedMixtureOfLogistics,
    discretized_gaussian_log_prob,
    discretized_logistic_log_prob,
    quantize,
)
from vae.units import bits_per_dim


def _all_colours(bits: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Every RGB value of the b-bit grid, shape (2^(3b), 3, 1, 1)."""
    centres = BinGrid(bits).centres(dtype=dtype)
    return torch.cartesian_prod(centres, centres, centres).reshape(-1, 3, 1, 1)


def _dml_params(seed: int, num_mix: int, extreme: bool, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Random DML params for one pixel, (1, 10 M, 1, 1); `extreme` widens every range."""
    g = torch.Generator().manual_seed(seed)
    wide = 4.0 if extreme else 1.0
    logits = 5.0 * wide * torch.randn(num_mix, generator=g, dtype=torch.float64)
    mu = wide * torch.randn(3 * num_mix, generator=g, dtype=torch.float64)
    low, high = (-10.0, 3.0) if extreme else (-3.0, 0.0)
    log_scale = low + (high - low) * torch.rand(3 * num_mix, generator=g, dtype=torch.float64)
    coeffs = 2.0 * wide * torch.randn(3 * num_mix, generator=g, dtype=torch.float64)
    return torch.cat([logits, mu, log_scale, coeffs]).to(dtype).reshape(1, -1, 1, 1)


def _reference_dml_log_prob(params: torch.Tensor, x: torch.Tensor, bits: int, num_mix: int) -> torch.Tensor:
    """Slow float64 oracle for one pixel: log sum_m pi_m prod_c [S((u_c - mu'_c)/s) - S((l_c - mu'_c)/s)]."""
    p = params.reshape(-1).double()
    m_ = num_mix
    weights = torch.softmax(p[:m_], 0)
    mu, log_s = p[m_ : 4 * m_].reshape(3, m_), p[4 * m_ : 7 * m_].reshape(3, m_).clamp_min(-7.0)
    a = torch.tanh(p[7 * m_ :]).reshape(3, m_)
    h, colours = 1.0 / (2**bits - 1), x.reshape(-1, 3).double()
    lower = torch.where(colours < -1 + h / 2, -math.inf, colours - h)
    upper = torch.where(colours > 1 - h / 2, math.inf, colours + h)
    r, g = colours[:, 0], colours[:, 1]
    prob = torch.zeros(len(colours), dtype=torch.float64)
    for m in range(m_):
        locs = [mu[0, m] + 0 * r, mu[1, m] + a[0, m] * r, mu[2, m] + a[1, m] * r + a[2, m] * g]
        component = weights[m].expand(len(colours))
        for c in range(3):
            s = log_s[c, m].exp()
            component = component * (
                torch.sigmoid((upper[:, c] - locs[c]) / s) - torch.sigmoid((lower[:, c] - locs[c]) / s)
            )
        prob = prob + component
    return prob.log()


@pytest.mark.parametrize("bits, num_mix", [(3, 4), (4, 2)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dml_sums_to_one_over_all_colours(bits: int, num_mix: int, dtype: torch.dtype) -> None:
    x = _all_colours(bits, dtype)
    for seed, extreme in itertools.product(range(4), (False, True)):
        params = _dml_params(seed, num_mix, extreme, dtype).expand(len(x), -1, -1, -1)
        log_p = DiscretizedMixtureOfLogistics(params, bits=bits, num_mix=num_mix).log_prob(x)
        assert torch.isfinite(log_p).all()
        assert abs(torch.logsumexp(log_p.double(), 0).item()) < 1e-5


def test_dml_matches_float64_reference() -> None:
    bits, num_mix = 3, 3
    x = _all_colours(bits, torch.float64)
    for seed in range(3):
        params = _dml_params(seed, num_mix, extreme=False, dtype=torch.float64)
        ours = DiscretizedMixtureOfLogistics(params.expand(len(x), -1, -1, -1), bits=bits, num_mix=num_mix)
        reference = _reference_dml_log_prob(params, x, bits, num_mix)
        torch.testing.assert_close(ours.log_prob(x), reference, rtol=1e-9, atol=1e-9)
        ours32 = DiscretizedMixtureOfLogistics(params.float().expand(len(x), -1, -1, -1), bits=bits, num_mix=num_mix)
        torch.testing.assert_close(ours32.log_prob(x.float()).double(), reference, rtol=1e-5, atol=1e-4)


def _reference_logistic_log_prob(x: float, loc: float, scale: float, bits: int) -> float:
    """50-digit oracle: log[S((u - loc)/s) - S((l - loc)/s)], S the logistic CDF, edge bins open to +-inf."""
    mp = pytest.importorskip("mpmath")
    mp.mp.dps = 50
    h = mp.mpf(1) / (2**bits - 1)

    def log_sf(t: object) -> object:  # log(1 - S(t)) = -log(1 + e^t), exact in the right tail
        return -mp.log1p(mp.exp(t))

    upper = mp.inf if x > 1 - float(h) / 2 else (mp.mpf(x) + h - loc) / scale
    lower = -mp.inf if x < -1 + float(h) / 2 else (mp.mpf(x) - h - loc) / scale
    if upper == mp.inf:
        return float(log_sf(lower))
    if lower == -mp.inf:
        return float(log_sf(-upper))
    if upper < 0:  # left tail: S(u) - S(l) = (1 - S(-u)) - (1 - S(-l)), both tiny, no cancellation
        return float(mp.log(mp.exp(log_sf(-upper)) - mp.exp(log_sf(-lower))))
    return float(mp.log(mp.exp(log_sf(lower)) - mp.exp(log_sf(upper))))


def test_discretized_logistic_needs_no_mid_bin_fallback() -> None:
    """The log-sigmoid identity stays accurate in float32 from the clamp (s = e^-7) to s = e^9, in both tails."""
    bits = 5
    centres = BinGrid(bits).centres(dtype=torch.float64)
    for loc, log_scale in itertools.product((-3.0, -0.99, 0.0, 0.4, 2.5), (-7.0, -3.0, 0.0, 3.0, 6.0, 9.0)):
        ref = torch.tensor(
            [_reference_logistic_log_prob(c, loc, math.exp(log_scale), bits) for c in centres.tolist()],
            dtype=torch.float64,
        )
        for dtype, tol in ((torch.float64, 1e-9), (torch.float32, 2e-5)):
            x = centres.to(dtype)
            ours = discretized_logistic_log_prob(
                x, torch.tensor(loc, dtype=dtype), torch.tensor(log_scale, dtype=dtype), BinGrid(bits)
            )
            torch.testing.assert_close(ours.double(), ref, rtol=tol, atol=tol)


def test_dml_uniform_model_has_bits_per_dim_equal_to_bit_depth() -> None:
    """One tiny-scale component per colour, equal weights: p(x) = 2^(-3b) per pixel, so bpd = b."""
    bits, (b, h, w) = 2, (2, 3, 3)
    colours = _all_colours(bits).reshape(-1, 3)  # (64, 3)
    num_mix = len(colours)
    mu = colours.T.reshape(-1)  # (channel, component)
    params = torch.cat([torch.zeros(num_mix), mu, torch.full((3 * num_mix,), -7.0), torch.zeros(3 * num_mix)])
    likelihood = DiscretizedMixtureOfLogistics(params.reshape(1, -1, 1, 1).expand(b, -1, h, w), bits, num_mix)
    idx = torch.randint(num_mix, (b, h, w), generator=torch.Generator().manual_seed(0))
    x = colours[idx].permute(0, 3, 1, 2)
    bpd = bits_per_dim(-likelihood.log_prob(x), (3, h, w))
    torch.testing.assert_close(bpd, torch.full((b,), float(bits)), rtol=0, atol=1e-5)


def test_dml_stable_gradients_with_extreme_parameters() -> None:
    params = (30.0 * torch.randn(2, 30, 4, 4, generator=torch.Generator().manual_seed(1))).requires_grad_()
    x = quantize(torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(2)) * 2 - 1, bits=5)
    log_p = DiscretizedMixtureOfLogistics(params, bits=5, num_mix=3).log_prob(x)
    log_p.sum().backward()
    assert torch.isfinite(log_p).all() and torch.isfinite(params.grad).all()


def test_dml_samples_follow_the_pmf_and_mean_mode_are_images() -> None:
    bits, num_mix, n = 2, 3, 20000
    x = _all_colours(bits)
    params = _dml_params(5, num_mix, extreme=False)
    pmf = DiscretizedMixtureOfLogistics(params.expand(len(x), -1, -1, -1), bits, num_mix).log_prob(x).exp()
    likelihood = DiscretizedMixtureOfLogistics(params.expand(n, -1, -1, -1), bits, num_mix)
    samples = likelihood.sample(torch.Generator().manual_seed(0)).reshape(n, 3)
    index = ((samples + 1) * 1.5).round().long() @ torch.tensor([16, 4, 1])  # same order as cartesian_prod
    freq = torch.bincount(index, minlength=len(x)).float() / n
    assert (freq - pmf).abs().max().item() < 0.015
    for image in (likelihood.mean(), likelihood.mode()):
        assert image.shape == (n, 3, 1, 1) and image.min() >= -1 and image.max() <= 1
    grid = BinGrid(bits)
    torch.testing.assert_close(likelihood.mode(), grid.snap(likelihood.mode()))


def test_dml_tiny_scale_mean_and_mode_follow_the_autoregressive_means() -> None:
    mu, a = torch.tensor([0.2, -0.3, 0.1]), torch.tensor([0.5, -0.4, 0.25])  # a_GR, a_BR, a_BG
    params = torch.cat([torch.zeros(1), mu, torch.full((3,), -7.0), torch.atanh(a)]).reshape(1, 10, 1, 1)
    likelihood = DiscretizedMixtureOfLogistics(params.double(), bits=8, num_mix=1)
    r = 0.2
    g = -0.3 + 0.5 * r
    expected = torch.tensor([r, g, 0.1 - 0.4 * r + 0.25 * g], dtype=torch.float64).reshape(1, 3, 1, 1)
    torch.testing.assert_close(likelihood.mean(), expected)
    assert (likelihood.mode() - expected).abs().max() <= 1 / 255 + 1e-9


def _reference_gaussian_log_prob(x: float, loc: float, scale: float, bits: int) -> float:
    """50-digit oracle: log[Phi((u - loc)/s) - Phi((l - loc)/s)], edge bins open to +-inf."""
    mp = pytest.importorskip("mpmath")
    mp.mp.dps = 50
    h = mp.mpf(1) / (2**bits - 1)
    upper = mp.inf if x > 1 - float(h) / 2 else mp.mpf(x) + h
    lower = -mp.inf if x < -1 + float(h) / 2 else mp.mpf(x) - h
    a, b = (upper - loc) / mp.mpf(scale), (lower - loc) / mp.mpf(scale)
    if b > 0:  # right tail: 1 - Phi(b) - (1 - Phi(a)), so that 50 digits do not cancel
        return float(mp.log(mp.ncdf(-b) - mp.ncdf(-a)))
    return float(mp.log(mp.ncdf(a) - mp.ncdf(b)))


@pytest.mark.parametrize("bits", [3, 5])
def test_gaussian_normalises_and_matches_reference_across_scales(bits: int) -> None:
    """Scales from the clamp (e^-7) to e^9 cover both tails and the narrow-bin mid-point branch."""
    centres = BinGrid(bits).centres(dtype=torch.float64)
    x = centres.reshape(-1, 1, 1, 1).expand(-1, 3, 1, 1)
    for loc, log_scale in itertools.product((-3.0, -0.99, 0.0, 0.4, 2.5), (-7.0, -3.0, 0.0, 3.0, 6.0, 9.0)):
        mean, logscale = torch.full_like(x, loc), torch.full_like(x, log_scale)
        lp32 = DiscretizedGaussian(mean.float(), logscale.float(), bits=bits).log_prob(x.float()).double() / 3
        lp64 = DiscretizedGaussian(mean, logscale, bits=bits).log_prob(x) / 3
        assert abs(torch.logsumexp(lp32, 0).item()) < 1e-5
        assert abs(torch.logsumexp(lp64, 0).item()) < 1e-10
        ref = torch.tensor(
            [_reference_gaussian_log_prob(c, loc, math.exp(log_scale), bits) for c in centres.tolist()],
            dtype=torch.float64,
        )
        keep = ref > -1e4  # float64 log_ndtr is exact far into the tail; ignore only underflowed bins
        torch.testing.assert_close(lp64[keep], ref[keep], rtol=1e-7, atol=1e-7)
        torch.testing.assert_close(lp32[keep], ref[keep], rtol=1e-5, atol=2e-5)


def test_gaussian_stable_gradients_with_extreme_parameters() -> None:
    params = (40.0 * torch.randn(2, 6, 4, 4, generator=torch.Generator().manual_seed(3))).requires_grad_()
    x = quantize(torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(4)) * 2 - 1, bits=5)
    log_p = DiscretizedGaussian.from_params(params, bits=5).log_prob(x)
    log_p.sum().backward()
    assert torch.isfinite(log_p).all() and torch.isfinite(params.grad).all()


def test_gaussian_sample_mode_mean_and_params() -> None:
    mean = torch.tensor([-0.95, -0.2, 0.3, 0.98]).reshape(1, 1, 2, 2).expand(1, 3, 2, 2)
    logscale = torch.tensor([1.0, -3.0, -5.0, 0.5]).reshape(1, 1, 2, 2).expand(1, 3, 2, 2)
    likelihood = DiscretizedGaussian.from_params(torch.cat([mean, logscale], 1), bits=3)
    assert DiscretizedGaussian.num_params(3) == 6 and likelihood.num_bins == 8 and likelihood.bits == 3
    centres = BinGrid(3).centres().reshape(-1, 1, 1, 1, 1)  # (8, 1, 1, 1, 1) against (1, 3, 2, 2)
    log_p = discretized_gaussian_log_prob(centres, likelihood.loc, likelihood.log_scale, likelihood.grid)
    torch.testing.assert_close(likelihood.mode(), BinGrid(3).centres()[log_p.argmax(0)])
    torch.testing.assert_close(likelihood.mean(), mean.clamp(-1, 1))
    samples = likelihood.sample(torch.Generator().manual_seed(0))
    torch.testing.assert_close(samples, BinGrid(3).snap(samples))
    with pytest.raises(ValueError):
        likelihood.log_prob(torch.zeros(1, 3, 4, 4))


def test_quantize_8_to_5_bits() -> None:
    k8 = torch.arange(256, dtype=torch.float32)
    x8 = k8 / 255 * 2 - 1
    x5 = quantize(x8, bits=5)
    expected = torch.floor(k8 / 8) / 31 * 2 - 1
    torch.testing.assert_close(x5, expected)
    assert len(torch.unique(x5)) == 32 and x5.min() == -1 and x5.max() == 1
    torch.testing.assert_close(quantize(x8, bits=8), x8)
    for bits in range(1, 9):
        xb = quantize(x8, bits)
        assert len(torch.unique(xb)) == 2**bits
        torch.testing.assert_close(quantize(xb, bits), xb)
        torch.testing.assert_close(BinGrid(bits).snap(xb), xb)
    with pytest.raises(ValueError):
        quantize(x8, bits=9)


def test_num_params_and_bad_shapes() -> None:
    assert DiscretizedMixtureOfLogistics.num_params(3, 10) == 100
    assert DiscretizedMixtureOfLogistics.num_params(1, 10) == 30
    with pytest.raises(ValueError):
        DiscretizedMixtureOfLogistics(torch.zeros(1, 99, 2, 2), num_mix=10)
    likelihood = DiscretizedMixtureOfLogistics(torch.zeros(1, 20, 2, 2), num_mix=2)
    with pytest.raises(ValueError):
        likelihood.log_prob(torch.zeros(1, 3, 2, 3))
