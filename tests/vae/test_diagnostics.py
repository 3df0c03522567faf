"""The collapse watch: active units per latent unit, KL per unit, reconstruction against the flat picture."""

from __future__ import annotations

import math

import pytest
import torch

from vae.diagnostics import (
    ACTIVE_VARIANCE,
    MIN_EXPLAINED,
    LatentUsage,
    collapse_verdict,
    flat_images,
    psnr,
)
from vae.distributions import DiagonalGaussian

C, H, W = 4, 8, 8


def concentrated_posterior(x: torch.Tensor, positions: list[tuple[int, int, int]]) -> DiagonalGaussian:
    """An encoder whose posterior is the prior N(0, 1) everywhere except at `positions`, where its mean is the
    image's mean intensity times 3 and its variance 0.25: all of its KL sits in those few units."""
    b = x.shape[0]
    mean, logvar = torch.zeros(b, C, H, W, dtype=torch.float64), torch.zeros(b, C, H, W, dtype=torch.float64)
    signal = 3.0 * x.mean(dim=(1, 2, 3)).double()
    for c, i, j in positions:
        mean[:, c, i, j] = signal
        logvar[:, c, i, j] = math.log(0.25)
    return DiagonalGaussian(mean, logvar)


def images(n: int, seed: int) -> torch.Tensor:
    """Random images with a random brightness each (so that the mean intensity varies across them)."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 3, 16, 16, generator=g) - 0.5) * 0.5 + (torch.rand(n, 1, 1, 1, generator=g) - 0.5)


def test_active_units_count_the_few_informative_positions_a_channel_count_cannot_see() -> None:
    x = images(64, seed=0)
    positions = [(0, 1, 2), (0, 5, 5), (2, 7, 0)]
    usage = LatentUsage()
    for chunk in x.split(16):  # streaming over batches gives the full-data statistic
        q = concentrated_posterior(chunk, positions)
        usage.update(q, chunk, chunk)
    m = usage.compute()
    assert m["active_units"] == 3 and m["latent_units"] == C * H * W
    assert m["active_fraction"] == pytest.approx(3 / (C * H * W))
    # closed form: KL(N(mu, 1/4) || N(0, 1)) = (mu^2 + 1/4 - 1 - log 1/4) / 2 at the three units, 0 elsewhere
    mu = 3.0 * x.mean(dim=(1, 2, 3)).double()
    kl_active = (0.5 * (mu**2 + 0.25 - 1.0 - math.log(0.25))).mean().item()
    assert m["kl_unit_nats"] == pytest.approx(3 * kl_active / (C * H * W), rel=1e-9)
    assert m["kl_unit_max_nats"] == pytest.approx(kl_active, rel=1e-9)
    assert m["kl_channel_0_nats"] == pytest.approx(2 * kl_active / (H * W), rel=1e-9)
    assert m["kl_channel_1_nats"] == 0.0
    assert m["psnr"] == pytest.approx(10 * math.log10(4 / 1e-12)) and m["explained"] == pytest.approx(1.0)


def test_active_threshold_is_the_variance_of_the_posterior_mean_over_the_data() -> None:
    """A unit whose mean varies with variance just above 0.01 is active; just below, not (whatever its KL)."""
    n = 1000
    sign = torch.tensor([1.0, -1.0]).repeat(n // 2).double()
    usage = LatentUsage()
    mean = torch.zeros(n, 1, 1, 2, dtype=torch.float64)
    mean[:, 0, 0, 0] = sign * math.sqrt(ACTIVE_VARIANCE * 1.05)
    mean[:, 0, 0, 1] = sign * math.sqrt(ACTIVE_VARIANCE * 0.95) + 5.0  # large KL, no information
    x = torch.zeros(n, 3, 2, 2)
    usage.update(DiagonalGaussian(mean, torch.zeros_like(mean)), x, x)
    m = usage.compute()
    assert m["active_units"] == 1 and m["kl_unit_max_nats"] > 12


def test_psnr_and_the_flat_picture() -> None:
    x = torch.linspace(-1, 1, 2 * 3 * 4 * 4).reshape(2, 3, 4, 4)
    flat = flat_images(x)
    assert torch.allclose(flat[:, :, 0, 0], x.mean(dim=(2, 3)))
    assert psnr(x + 0.2, x) == pytest.approx(torch.full((2,), 10 * math.log10(4 / 0.04)), rel=1e-5)
    kl = DiagonalGaussian(torch.ones(1, 1, 1, 1), torch.zeros(1, 1, 1, 1)).kl_elements()
    assert kl.item() == pytest.approx(0.5)


def test_explained_variation_is_pooled_so_uniform_images_cannot_hide_flat_textured_ones() -> None:
    """A near-uniform image reconstructed exactly and a textured one painted flat: per image the PSNR gains average
    to a large number, but the latent explains almost none of the set's variation, which sits in the textured one."""
    g = torch.Generator().manual_seed(2)
    uniform = 0.3 + 0.001 * torch.randn(1, 3, 8, 8, generator=g)
    textured = torch.rand(1, 3, 8, 8, generator=g) * 2 - 1
    x = torch.cat([uniform, textured])
    x_hat = torch.cat([uniform, flat_images(textured)])
    usage = LatentUsage()
    usage.update(DiagonalGaussian(torch.zeros(2, 1, 1, 1), torch.zeros(2, 1, 1, 1)), x, x_hat)
    m = usage.compute()
    sse_flat = (flat_images(x) - x).pow(2).double().sum().item()  # summed in float64, as the watch sums
    sse = (x_hat - x).pow(2).double().sum().item()
    assert m["explained"] == pytest.approx(1 - sse / sse_flat, rel=1e-6) and m["explained"] < 1e-4
    assert m["psnr_gain"] == pytest.approx(10 * math.log10(sse_flat / sse), rel=1e-6)
    assert m["psnr"] - m["psnr_flat"] > 20  # what an average of per-image gains would have said
    assert collapse_verdict(m) is not None


def test_verdict_names_a_collapsed_latent_and_passes_a_healthy_one() -> None:
    x = images(32, seed=1)
    collapsed = LatentUsage()  # one unit carries the mean colour, the decoder paints flat patches
    collapsed.update(concentrated_posterior(x, [(0, 0, 0)]), x, flat_images(x))
    verdict = collapse_verdict({**collapsed.compute(), "kl_share": 0.004})
    assert verdict is not None and len(verdict.reasons) == 3
    sentence = verdict.sentence("the VAE export runs/vae/x/export")
    assert "1 of 256 latent units active" in sentence and "explain 0% of the variation" in sentence
    assert "the KL is 0.4% of the NELBO" in sentence
    assert "runs/vae/x/export" in sentence and "stage.free_bits" in sentence

    healthy = LatentUsage()
    every = [(c, i, j) for c in range(C) for i in range(H) for j in range(W)]
    healthy.update(concentrated_posterior(x, every), x, x + 0.01)
    m = healthy.compute()
    assert m["explained"] > MIN_EXPLAINED and collapse_verdict(m) is None
    assert collapse_verdict({"nelbo_bpd": 5.0}) is None  # an export from before the watch: no verdict


def test_running_sums_add_totals_and_per_unit_sums_and_reduce_in_one_call():
    from vae.running_sums import RunningSums

    sums = RunningSums()
    assert not sums and sums.reduced() == {}
    sums.add("loss", torch.tensor([1.0, 2.0]))
    sums.add("loss", torch.tensor([3.0]))
    sums.add("unit", torch.tensor([[1.0, 2.0]]).sum(0), total=False)
    sums.add("unit", torch.tensor([0.5, 0.5]), total=False)
    sums.add("count", 3.0)
    calls = []

    def reduce_sum(t):  # two processes holding the same sums
        calls.append(t.shape)
        return 2 * t

    out = sums.reduced(reduce_sum)
    assert calls == [torch.Size([4])] and out["loss"].dtype == torch.float64
    assert float(out["loss"]) == 12.0 and out["unit"].tolist() == [3.0, 5.0] and float(out["count"]) == 6.0
