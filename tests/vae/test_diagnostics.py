"""The collapse watch: the units the decoder uses, varying units, KL per unit, reconstruction against the flat
picture."""

from __future__ import annotations

import math

import pytest
import torch

from vae.diagnostics import (
    ACTIVE_VARIANCE,
    GREY_LEVEL,
    MIN_EXPLAINED,
    LatentUsage,
    checked_units,
    collapse_verdict,
    flat_images,
    psnr,
    unit_use,
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


def test_varying_units_count_the_few_informative_positions_a_channel_count_cannot_see() -> None:
    x = images(64, seed=0)
    positions = [(0, 1, 2), (0, 5, 5), (2, 7, 0)]
    usage = LatentUsage()
    for chunk in x.split(16):  # streaming over batches gives the full-data statistic
        q = concentrated_posterior(chunk, positions)
        usage.update(q, chunk, chunk)
    m = usage.compute()
    assert m["varying_units"] == 3 and m["latent_units"] == C * H * W
    assert m["varying_fraction"] == pytest.approx(3 / (C * H * W))
    assert "active_units" not in m  # no decoder given: which units it uses is not measured
    # closed form: KL(N(mu, 1/4) || N(0, 1)) = (mu^2 + 1/4 - 1 - log 1/4) / 2 at the three units, 0 elsewhere
    mu = 3.0 * x.mean(dim=(1, 2, 3)).double()
    kl_active = (0.5 * (mu**2 + 0.25 - 1.0 - math.log(0.25))).mean().item()
    assert m["kl_unit_nats"] == pytest.approx(3 * kl_active / (C * H * W), rel=1e-9)
    assert m["kl_unit_max_nats"] == pytest.approx(kl_active, rel=1e-9)
    assert m["kl_channel_0_nats"] == pytest.approx(2 * kl_active / (H * W), rel=1e-9)
    assert m["kl_channel_1_nats"] == 0.0
    assert m["psnr"] == pytest.approx(10 * math.log10(4 / 1e-12)) and m["explained"] == pytest.approx(1.0)


def test_varying_threshold_is_the_variance_of_the_posterior_mean_over_the_data() -> None:
    """A unit whose mean varies with variance just above 0.01 varies; just below, not (whatever its KL)."""
    n = 1000
    sign = torch.tensor([1.0, -1.0]).repeat(n // 2).double()
    usage = LatentUsage()
    mean = torch.zeros(n, 1, 1, 2, dtype=torch.float64)
    mean[:, 0, 0, 0] = sign * math.sqrt(ACTIVE_VARIANCE * 1.05)
    mean[:, 0, 0, 1] = sign * math.sqrt(ACTIVE_VARIANCE * 0.95) + 5.0  # large KL, no information
    x = torch.zeros(n, 3, 2, 2)
    usage.update(DiagonalGaussian(mean, torch.zeros_like(mean)), x, x)
    m = usage.compute()
    assert m["varying_units"] == 1 and m["kl_unit_max_nats"] > 12


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
    collapsed = LatentUsage(use_images=32, use_units=256)  # one unit carries the mean, the decoder paints it flat
    paint = lambda z: (z[:, :1, :1, :1] / 3).expand(-1, 3, 16, 16)  # noqa: E731
    collapsed.update(concentrated_posterior(x, [(0, 0, 0)]), x, flat_images(x), decode=paint)
    verdict = collapse_verdict({**collapsed.compute(), "kl_share": 0.004})
    assert verdict is not None and len(verdict.reasons) == 3
    sentence = verdict.sentence("the VAE export runs/vae/x/export")
    assert "the decoder uses 1 of 256 latent units" in sentence and "explain 0% of the variation" in sentence
    assert "the KL is 0.4% of the NELBO" in sentence
    assert "runs/vae/x/export" in sentence and "stage.free_bits" in sentence

    healthy = LatentUsage()
    every = [(c, i, j) for c in range(C) for i in range(H) for j in range(W)]
    healthy.update(concentrated_posterior(x, every), x, x + 0.01)
    m = healthy.compute()
    assert m["explained"] > MIN_EXPLAINED and collapse_verdict(m) is None
    assert collapse_verdict({"nelbo_bpd": 5.0}) is None  # an export from before the watch: no verdict


def test_running_sums_add_totals_and_per_unit_sums_and_reduce_in_one_call():
    from latent_ndm.common.running_sums import RunningSums

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


def linear_decoder(columns: torch.Tensor):  # noqa: ANN201
    """decode(z) = the images sum_u z_u columns[u]: (N, C, H, W) -> (N, 3, 16, 16), exactly linear."""
    return lambda z: torch.einsum("nu,uchw->nchw", z.flatten(1).double(), columns)


def test_unit_use_is_the_exact_change_of_the_reconstruction_and_counts_only_units_the_decoder_uses() -> None:
    """Closed form for a linear decoder: zeroing unit u changes x_hat by mu_u * column_u, so its use is
    sum_x mu_u(x)^2 ||column_u||^2. Units the decoder ignores (zero column) or the encoder leaves at the prior mean
    are unused, though their posterior means may vary; a column just above / below one grey level over the unit's
    patch (3 x 2 x 2 values of a 16x16 image per 8x8 position) is just active / not."""
    g = torch.Generator().manual_seed(0)
    n, units = 6, C * H * W
    mu = torch.randn(n, C, H, W, generator=g, dtype=torch.float64)
    mu[:, 1] = 0.0  # channel 1: the encoder always says the prior mean
    columns = torch.randn(units, 3, 16, 16, generator=g, dtype=torch.float64)
    columns[2 * H * W:3 * H * W] = 0.0  # channel 2: the decoder ignores it
    patch = 3 * 16 * 16 / (H * W)
    mu[:, 3, 0, 0] = torch.tensor([1.0, -1.0] * 3, dtype=torch.float64)
    mu[:, 3, 0, 1] = torch.tensor([1.0, -1.0] * 3, dtype=torch.float64)
    u_above, u_below = 3 * H * W, 3 * H * W + 1
    columns[u_above] *= 1.01 * math.sqrt(patch) * GREY_LEVEL / columns[u_above].norm()
    columns[u_below] *= 0.99 * math.sqrt(patch) * GREY_LEVEL / columns[u_below].norm()
    decode = linear_decoder(columns)
    use = unit_use(decode, mu, torch.arange(units))
    expected = (mu.flatten(1) ** 2).sum(0) * columns.flatten(1).pow(2).sum(1)
    assert torch.allclose(use, expected, rtol=1e-10, atol=1e-12)

    usage = LatentUsage(use_images=n, use_units=units)
    x = torch.rand(n, 3, 16, 16, generator=g) * 2 - 1
    q = DiagonalGaussian(mu, torch.zeros_like(mu))
    usage.update(q, x, decode(mu).float(), decode=decode)
    m = usage.compute()
    assert m["use_threshold"] == pytest.approx(patch * GREY_LEVEL**2)
    in_use = (expected / n >= patch * GREY_LEVEL**2)
    assert not in_use[H * W:3 * H * W].any() and in_use[u_above] and not in_use[u_below]
    assert m["active_units"] == in_use.sum().item() == 2 * H * W - 1 and m["units_checked"] == units
    assert m["varying_units"] > m["active_units"]  # channel 2 varies, unused


def test_a_latent_that_varies_but_that_the_decoder_ignores_is_collapsed_and_says_so_without_contradiction() -> None:
    """The reviewer's case: every posterior mean moves with the input (all units "vary"), the decoder paints each
    image its mean colour and ignores z: no unit is active, the verdict is "collapsed", and the sentence says that
    the decoder uses 0 units, never "all units active"."""
    x = images(16, seed=3)
    q = DiagonalGaussian(0.5 * torch.randn(16, C, H, W, generator=torch.Generator().manual_seed(4)),
                         torch.zeros(16, C, H, W))
    usage = LatentUsage(use_images=8)
    flat = flat_images(x)
    for part in range(2):  # only the first 8 images are ablated; the rest of the set adds to the other sums
        chunk = slice(8 * part, 8 * part + 8)
        usage.update(DiagonalGaussian(q.mean[chunk], q.logvar[chunk]), x[chunk], flat[chunk],
                     decode=lambda z: torch.zeros(z.shape[0], 3, 16, 16))
    m = usage.compute()
    assert m["varying_units"] == C * H * W and m["active_units"] == 0 and m["units_checked"] == 128  # a sample
    sentence = collapse_verdict(m).sentence()
    assert "the decoder uses 0 of 128 latent units checked (of 256)" in sentence and "active" not in sentence


def test_large_latents_are_checked_on_a_fixed_seeded_sample_of_units() -> None:
    first, again = checked_units(8 * 32 * 32, 128), checked_units(8 * 32 * 32, 128)
    assert torch.equal(first, again) and len(first.unique()) == 128 and first.max() < 8 * 32 * 32
    assert torch.equal(checked_units(100, 128), torch.arange(100))
    columns = torch.randn(8 * 4 * 4, 3, 16, 16, dtype=torch.float64)
    mu = torch.randn(2, 8, 4, 4, dtype=torch.float64)
    some = checked_units(128, 16)
    assert torch.allclose(unit_use(linear_decoder(columns), mu, some),
                          unit_use(linear_decoder(columns), mu, torch.arange(128))[some])
