"""DiagonalGaussian against torch.distributions (analytic oracles)."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from vae.distributions import LOGVAR_MAX, LOGVAR_MIN, DiagonalGaussian


def _params(seed: int, shape: tuple[int, ...] = (3, 4, 5, 6)) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64), torch.randn(shape, generator=g, dtype=torch.float64)


def _normal(mean: torch.Tensor, logvar: torch.Tensor) -> Normal:
    return Normal(mean, torch.exp(0.5 * logvar))


def test_log_prob_entropy_kl_match_torch_distributions() -> None:
    mean, logvar = _params(0)
    mean_o, logvar_o = _params(1)
    q, p = DiagonalGaussian(mean, logvar), DiagonalGaussian(mean_o, logvar_o)
    z = torch.randn(mean.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)

    ref_q, ref_p = _normal(mean, logvar), _normal(mean_o, logvar_o)
    torch.testing.assert_close(q.log_prob(z), ref_q.log_prob(z).flatten(1).sum(1))
    torch.testing.assert_close(q.entropy(), ref_q.entropy().flatten(1).sum(1))
    torch.testing.assert_close(q.kl(p), kl_divergence(ref_q, ref_p).flatten(1).sum(1))
    standard = Normal(torch.zeros_like(mean), torch.ones_like(mean))
    torch.testing.assert_close(q.kl(), kl_divergence(ref_q, standard).flatten(1).sum(1))
    torch.testing.assert_close(q.kl_elements(), kl_divergence(ref_q, standard))  # element by element
    torch.testing.assert_close(q.kl(), q.kl(DiagonalGaussian(torch.zeros_like(mean), torch.zeros_like(mean))))
    assert q.kl().shape == (3,)


def test_std_var_mode_and_any_batch_shape() -> None:
    mean, logvar = _params(3, shape=(2, 7))
    q = DiagonalGaussian(mean, logvar)
    torch.testing.assert_close(q.var, logvar.exp())
    torch.testing.assert_close(q.std, (0.5 * logvar).exp())
    assert q.mode() is mean
    assert q.log_prob(mean).shape == (2,)
    torch.testing.assert_close(q.kl(q), torch.zeros(2, dtype=torch.float64))


def test_sample_is_seeded_reparameterised_and_has_the_right_moments() -> None:
    mean = torch.full((4000, 2), 0.5, requires_grad=True)
    logvar = torch.full((4000, 2), 2 * torch.log(torch.tensor(3.0)).item(), requires_grad=True)
    q = DiagonalGaussian(mean, logvar)
    z1 = q.sample(torch.Generator().manual_seed(0))
    z2 = q.sample(torch.Generator().manual_seed(0))
    torch.testing.assert_close(z1, z2)
    assert abs(z1.mean().item() - 0.5) < 0.15 and abs(z1.std().item() - 3.0) < 0.15
    z1.sum().backward()
    assert torch.all(mean.grad == 1.0) and torch.isfinite(logvar.grad).all()


def test_logvar_is_clamped_to_the_documented_range() -> None:
    mean = torch.zeros(1, 3)
    q = DiagonalGaussian(mean, torch.tensor([[-1e4, 0.0, 1e4]]))
    assert q.logvar.min().item() == LOGVAR_MIN and q.logvar.max().item() == LOGVAR_MAX
    assert torch.isfinite(q.kl()).all() and torch.isfinite(q.log_prob(mean)).all()


def test_from_params_splits_channels() -> None:
    params = torch.arange(2 * 6 * 2 * 2, dtype=torch.float32).reshape(2, 6, 2, 2)
    q = DiagonalGaussian.from_params(params)
    torch.testing.assert_close(q.mean, params[:, :3])
    torch.testing.assert_close(q.logvar, params[:, 3:].clamp(LOGVAR_MIN, LOGVAR_MAX))


@pytest.mark.parametrize(
    "mean, logvar",
    [
        (torch.zeros(2, 3), torch.zeros(2, 4)),
        (torch.zeros(3), torch.zeros(3)),
        (torch.zeros(2, 3, dtype=torch.long),) * 2,
    ],
)
def test_bad_shapes_raise(mean: torch.Tensor, logvar: torch.Tensor) -> None:
    with pytest.raises(ValueError):
        DiagonalGaussian(mean, logvar)


def test_mismatched_arguments_raise() -> None:
    q = DiagonalGaussian(torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError):
        q.log_prob(torch.zeros(2, 4))
    with pytest.raises(ValueError):
        q.kl(DiagonalGaussian(torch.zeros(2, 4), torch.zeros(2, 4)))
    with pytest.raises(ValueError):
        DiagonalGaussian.from_params(torch.zeros(2, 3))
