"""The VP schedule against its closed forms (docs/MATH.md section 1)."""

import math

import pytest
import torch

from latent_ndm.diffusion.schedule import VPSchedule

f64 = torch.float64


def test_reference_values():
    s = VPSchedule()(torch.tensor([0.01, 1.0], dtype=f64))
    assert s.sigma2[0].item() == pytest.approx(1.99e-3, rel=2e-3)
    assert (s.alpha[1] ** 2).item() == pytest.approx(math.exp(-10.05), rel=1e-12)
    assert torch.allclose(s.alpha**2 + s.sigma2, torch.ones(2, dtype=f64), atol=1e-15)


def test_derivatives_match_central_differences():
    sch, h = VPSchedule(), 1e-6
    t = torch.tensor([0.003, 0.2, 0.5, 0.97], dtype=f64)
    s, sp, sm = sch(t), sch(t + h), sch(t - h)
    assert torch.allclose(s.d_alpha, (sp.alpha - sm.alpha) / (2 * h), rtol=1e-7)
    assert torch.allclose(s.d_sigma2, (sp.sigma2 - sm.sigma2) / (2 * h), rtol=1e-7)
    assert torch.allclose(s.r, (torch.log(sp.alpha) - torch.log(sm.alpha)) / (2 * h), rtol=1e-7)
    # g_F^2 = -sigma^2 d lambda / dt = beta(t) for VP
    dlam = (sp.log_snr - sm.log_snr) / (2 * h)
    assert torch.allclose(s.g2, -s.sigma2 * dlam, rtol=1e-6)
    assert torch.allclose(s.g2, sch.beta(t), rtol=1e-12)


def test_inverses():
    sch = VPSchedule()
    t = torch.tensor([1e-5, 1e-3, 0.1, 0.6, 1.0], dtype=f64)
    assert torch.allclose(sch.t_from_sigma2(sch.sigma2(t)), t, rtol=1e-9)
    assert torch.allclose(sch.t_from_beta(sch.beta(t)), t, rtol=1e-12)


def test_dtypes_and_autocast():
    sch = VPSchedule()
    assert sch(torch.rand(3, dtype=torch.bfloat16)).alpha.dtype == torch.float32
    assert sch(torch.rand(3, dtype=f64)).alpha.dtype == f64
    with torch.autocast("cpu", dtype=torch.bfloat16):
        s = sch(torch.tensor([1e-3]))
    assert s.sigma2.dtype == torch.float32
    assert s.sigma2.item() == pytest.approx(sch(torch.tensor([1e-3], dtype=f64)).sigma2.item(), rel=1e-6)


@pytest.mark.parametrize("bad", [torch.tensor([1.5]), torch.tensor([-0.1]), torch.tensor([float("nan")]),
                                 torch.zeros(2, 2)])
def test_bad_times_raise(bad):
    with pytest.raises(ValueError):
        VPSchedule()(bad)


def test_bad_parameters_raise():
    with pytest.raises(ValueError):
        VPSchedule(b0=20.0, b1=0.1)
    with pytest.raises(ValueError):
        VPSchedule().t_from_sigma2(torch.tensor([1.0]))
