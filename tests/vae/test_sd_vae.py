"""The SD-VAE adapter (`vae.sd_vae.AutoencoderKLVAE`) on a tiny randomly initialised `diffusers.AutoencoderKL` built
from a config here (no download): the contract, a proper likelihood, a NELBO that bounds -log p(x), precision."""

from __future__ import annotations

import itertools
import math
import subprocess
import sys

import pytest
import torch

from vae.likelihoods import discretized_gaussian_log_prob
from vae.protocol import LatentVAE

pytest.importorskip("diffusers")

from vae.sd_vae import AutoencoderKLVAE, scale_check  # noqa: E402 - only with diffusers installed


def tiny_config(image_channels: int = 3, latent_channels: int = 4, levels: int = 2) -> dict:
    """An AutoencoderKL of the SD-VAE's classes with small channels: 2^(levels-1) downsampling."""
    return {"in_channels": image_channels, "out_channels": image_channels,
            "down_block_types": ["DownEncoderBlock2D"] * levels, "up_block_types": ["UpDecoderBlock2D"] * levels,
            "block_out_channels": [8, 16][:levels], "layers_per_block": 1, "latent_channels": latent_channels,
            "norm_num_groups": 4, "sample_size": 16, "_class_name": "AutoencoderKL"}


def tiny_vae(**kwargs) -> AutoencoderKLVAE:
    torch.manual_seed(0)
    return AutoencoderKLVAE(tiny_config(**kwargs))


def test_the_adapter_meets_the_contract_is_frozen_and_rebuilds_from_its_config() -> None:
    vae = tiny_vae()
    assert isinstance(vae, LatentVAE) and vae.latent_shape(16) == (4, 8, 8)
    assert not any(p.requires_grad for p in vae.parameters())
    config = vae.config()
    assert config["_target_"] == "vae.sd_vae.AutoencoderKLVAE" and "_class_name" not in config["autoencoder"]
    again = AutoencoderKLVAE(config["autoencoder"], bits=config["bits"], dtype=config["dtype"])
    again.load_state_dict(vae.state_dict())
    x = vae.quantize(torch.rand(2, 3, 16, 16) * 2 - 1)
    torch.testing.assert_close(again.encode(x).mean, vae.encode(x).mean)
    assert vae.train().autoencoder.training is False  # frozen: never in training mode
    with pytest.raises(ValueError, match="float16 overflows"):
        AutoencoderKLVAE(tiny_config(), dtype="float16")


def test_the_posterior_is_the_autoencoders_diagonal_gaussian() -> None:
    vae = tiny_vae()
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    theirs = vae.autoencoder.encode(x).latent_dist
    q = vae.encode(x)
    torch.testing.assert_close(q.mean, theirs.mean)
    torch.testing.assert_close(q.logvar, theirs.logvar)
    torch.testing.assert_close(vae.decode(q.mean).loc, vae.autoencoder.decode(q.mean).sample)


def test_the_likelihood_sums_to_one_over_the_256_values_of_every_pixel() -> None:
    vae = tiny_vae()
    vae.log_scale.copy_(torch.tensor([-4.0, -2.0, 0.5]))  # narrow (a few bins) to wide (most mass at the edges)
    p_x = vae.decode(torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)))
    values = torch.arange(256.0) / 127.5 - 1.0  # the 8-bit grid in [-1, 1]
    per_value = torch.stack([p_x.log_prob(torch.full((1, 3, 16, 16), float(v))) for v in values[:2]])
    assert per_value.shape == (2, 1)  # log p(x) per image: the sum over pixels of the elementwise terms below
    loc, log_scale = p_x.loc[..., None], p_x.log_scale[..., None]  # a last axis for the 256 values
    per_pixel = discretized_gaussian_log_prob(values.view(1, 1, 1, 1, 256), loc, log_scale, p_x.grid)
    torch.testing.assert_close(per_pixel.exp().sum(-1), torch.ones(1, 3, 16, 16), atol=1e-5, rtol=0)
    torch.testing.assert_close(per_value[:, 0], per_pixel[..., :2].flatten(0, -2).sum(0))


def test_the_nelbo_bounds_minus_log_p_for_every_one_bit_image() -> None:
    """1-bit 1x2x2 images (16 of them) and a 1x1x1 latent: p(x) = E_{z ~ N(0,1)} p(x | z) on a fine grid of z.
    The pmf sums to 1 over the 16 images, and the NELBO (its reconstruction term on the same grid) is >= -log p(x)."""
    torch.manual_seed(1)
    config = tiny_config(image_channels=1, latent_channels=1, levels=2)
    vae = AutoencoderKLVAE({**config, "block_out_channels": [4, 4], "norm_num_groups": 2, "sample_size": 2}, bits=1)
    vae.log_scale.fill_(math.log(0.5))
    images = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=4))).view(16, 1, 2, 2)
    z = torch.linspace(-8, 8, 2001)  # the trapezoid rule in z: exact to far below the tolerances here
    log_w = -0.5 * z**2 - 0.5 * math.log(2 * math.pi) + math.log(z[1] - z[0])
    log_lik = torch.stack([vae.decode(z.view(-1, 1, 1, 1)).log_prob(x.expand(len(z), 1, 2, 2)) for x in images])
    log_p = torch.logsumexp(log_lik + log_w, dim=1)  # (16,)
    assert torch.logsumexp(log_p, 0).item() == pytest.approx(0.0, abs=1e-4)  # a proper pmf over the 16 images
    q = vae.encode(images)
    for i in range(len(images)):
        mean, std = q.mean[i].flatten(), (0.5 * q.logvar[i]).exp().flatten()
        log_q = -0.5 * ((z - mean) / std) ** 2 - 0.5 * math.log(2 * math.pi) - torch.log(std)
        weights = torch.softmax(log_q + math.log(z[1] - z[0]), 0)  # q(z | x) on the grid
        rec = -(weights * log_lik[i]).sum()
        nelbo = rec + q.kl()[i]
        assert nelbo.item() >= -log_p[i].item() - 1e-4


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_outputs_are_finite_on_extreme_inputs(dtype: str) -> None:
    vae = AutoencoderKLVAE(tiny_config(), dtype=dtype)
    x = torch.stack([torch.full((3, 16, 16), -1.0), torch.full((3, 16, 16), 1.0),
                     torch.randint(0, 2, (3, 16, 16)).float() * 2 - 1])  # flat black, flat white, +-1 noise
    q = vae.encode(x)
    assert q.mean.dtype == torch.float32 and torch.isfinite(q.mean).all() and torch.isfinite(q.logvar).all()
    for z in (q.sample(torch.Generator().manual_seed(0)), torch.full((3, 4, 8, 8), 1e4),
              torch.full((3, 4, 8, 8), -1e4)):
        p_x = vae.decode(z)
        assert p_x.loc.dtype == torch.float32 and torch.isfinite(p_x.log_prob(x)).all()
        assert torch.isfinite(p_x.mean()).all()


def test_the_fitted_scale_is_the_rms_reconstruction_error_per_channel() -> None:
    vae = tiny_vae()
    x = vae.quantize(torch.rand(4, 3, 16, 16) * 2 - 1)
    log_scale = vae.fit_likelihood([x[:2], x[2:]], generator=torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(0)  # the same draws, batch after batch
    errors = torch.cat([part - vae.decoder_mean(vae.encode(part).sample(generator)) for part in (x[:2], x[2:])])
    expected = 0.5 * torch.log(errors.pow(2).mean(dim=(0, 2, 3)))
    assert log_scale.shape == (3,) and torch.equal(vae.log_scale, log_scale)
    torch.testing.assert_close(log_scale, expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="at least one training image"):
        vae.fit_likelihood([])


def test_the_latent_scale_check_warns_beyond_20_percent() -> None:
    line, far = scale_check(1 / 0.18, 0.18215)
    assert not far and "measured 1/std = 0.18000" in line and "0.18215" in line
    assert scale_check(1 / 0.25, 0.18215)[1] and scale_check(1 / 0.14, 0.18215)[1]


def test_import_vae_does_not_import_diffusers() -> None:
    code = "import sys, vae, vae.sd_vae; assert 'diffusers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
