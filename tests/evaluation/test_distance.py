"""The energy distance (latent_ndm/distance.py) against its closed form, and its grouped standard error."""

import math

import pytest
import torch

from latent_ndm.distance import energy_distance, grouped_energy_distance


def normal_shift_ed(mu: float) -> float:
    """ED between N(0, 1) and N(mu, 1): 2 E|X - Y| - E|X - X'| - E|Y - Y'| with X - Y ~ N(-mu, 2), X - X' ~ N(0, 2)."""
    return 2 * (2 / math.sqrt(math.pi) * math.exp(-mu**2 / 4) + mu * math.erf(mu / 2)) - 4 / math.sqrt(math.pi)


def test_energy_distance_matches_its_closed_form():
    """0.5418 at mu = 1; 0 for two samples of one distribution (the U-statistic is unbiased)."""
    g = torch.Generator().manual_seed(0)
    mu, shifted, same = 1.0, [], []
    for _ in range(10):  # one estimate at n = 2000 has an SE of about 0.03; the mean of ten, about 0.01
        x, y, y0 = (torch.randn(2000, 1, generator=g, dtype=torch.float64) for _ in range(3))
        shifted.append(energy_distance(x, y + mu))
        same.append(energy_distance(x, y0))
    assert abs(sum(shifted) / 10 - normal_shift_ed(mu)) < 0.03
    assert abs(sum(same) / 10) < 0.005


def test_energy_distance_flattens_images_and_sees_a_shift_along_any_axis():
    """Images (n, C, H, W) are compared as flat vectors: a mean shift of mu along one pixel direction is the 1D case."""
    g = torch.Generator().manual_seed(1)
    x, y = (torch.randn(3000, 2, 3, 3, generator=g, dtype=torch.float64) for _ in range(2))
    direction = torch.zeros(2, 3, 3, dtype=torch.float64)
    direction[1, 2, 0] = 1.0
    mu = 2.0
    # in D dimensions with a shift along one axis the closed form is not the 1D one; compare with an independent
    # Monte Carlo of the definition instead, from far more pairs than the estimator uses
    xs, ys = x.flatten(1), (y + mu * direction).flatten(1)
    perm = torch.randperm(3000, generator=g)
    brute = 2 * (xs - ys).norm(dim=1).mean() - (xs - xs[perm]).norm(dim=1).mean() - (ys - ys[perm]).norm(dim=1).mean()
    assert energy_distance(x, y + mu * direction) == pytest.approx(brute.item(), abs=0.06)
    assert energy_distance(x, y + mu * direction) > 0.5


def test_grouped_energy_distance_is_unbiased_and_its_se_covers_the_truth():
    """Mean over 4 groups near the closed form; the reported SE matches the spread of repeated estimates."""
    g = torch.Generator().manual_seed(2)
    mu, means, ses = 1.0, [], []
    for _ in range(20):
        x, y = (torch.randn(1200, 1, generator=g, dtype=torch.float64) for _ in range(2))
        est = grouped_energy_distance(x, y + mu, groups=4)
        assert len(est.groups) == 4 and est.se is not None
        means.append(est.mean)
        ses.append(est.se)
    mean = sum(means) / len(means)
    spread = math.sqrt(sum((m - mean) ** 2 for m in means) / (len(means) - 1))
    assert abs(mean - normal_shift_ed(mu)) < 3 * spread / math.sqrt(len(means))
    assert 0.5 < (sum(ses) / len(ses)) / spread < 2.0  # the SE estimates the estimator's own spread


def test_grouped_energy_distance_refuses_too_few_samples():
    x = torch.zeros(6, 2)
    with pytest.raises(ValueError, match="fewer than 2 per group"):
        grouped_energy_distance(x, x, groups=4)
    assert grouped_energy_distance(torch.randn(8, 2), torch.randn(8, 2), groups=1).se is None
