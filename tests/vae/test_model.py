"""VAE: shapes, NELBO, latent scale, export round-trip and the missing-file error (tiny CPU networks)."""

from __future__ import annotations

import math

import pytest
import torch

from vae import VAE, Decoder, DiscretizedMixtureOfLogistics, Encoder, quantize
from vae.units import bits_per_dim

TINY = {"base_channels": 8, "channel_mult": (1, 2, 2, 2), "num_res_blocks": 1, "latent_channels": 3, "num_groups": 4}


def _tiny_vae(likelihood: str = "dml", checkpoint: bool = False, seed: int = 0) -> VAE:
    torch.manual_seed(seed)
    kwargs = {"num_mix": 2} if likelihood == "dml" else {}
    out = DiscretizedMixtureOfLogistics.num_params(3, 2) if likelihood == "dml" else 6
    arch = {**TINY, "resolution": 16, "attn_resolutions": (4,), "checkpoint": checkpoint}
    return VAE(Encoder(**arch), Decoder(out, **arch), likelihood=likelihood, bits=5, likelihood_kwargs=kwargs)


def _images(b: int = 2, side: int = 16, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return quantize(torch.rand(b, 3, side, side, generator=g) * 2 - 1, bits=5)


def test_default_architecture_maps_256_to_32x32_latents() -> None:
    assert Encoder(base_channels=8, num_groups=4).downsample_factor == 8
    vae = VAE(
        Encoder(base_channels=8, num_groups=4, mid_attention=False),
        Decoder(100, base_channels=8, num_groups=4, mid_attention=False),
        bits=5,
        likelihood_kwargs={"num_mix": 10},
    )
    assert vae.latent_shape(256) == (4, 32, 32)
    x = _images(1, side=64)
    with torch.no_grad():
        q = vae.encode(x)
        assert q.mean.shape == (1, 4, 8, 8) == (1, *vae.latent_shape(64))
        params = vae.decoder(q.sample())
    assert params.shape == (1, 100, 64, 64)
    with pytest.raises(ValueError):
        vae.latent_shape(100)


@pytest.mark.parametrize("likelihood", ["dml", "gaussian"])
def test_nelbo_parts_are_finite_and_add_up(likelihood: str) -> None:
    vae = _tiny_vae(likelihood)
    x = _images()
    out = vae.nelbo(x, generator=torch.Generator().manual_seed(0))
    for term in (out.rec, out.kl, out.total):
        assert term.shape == (2,) and torch.isfinite(term).all()
    torch.testing.assert_close(out.total, out.rec + out.kl)
    assert (out.kl >= 0).all() and out.num_dims == 3 * 16 * 16
    torch.testing.assert_close(out.bpd, out.total / (3 * 16 * 16 * math.log(2)))
    torch.testing.assert_close(bits_per_dim(out.total, (3, 16, 16)), out.bpd)
    half = vae.nelbo(x, beta_kl=0.5, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(half.total, out.rec + 0.5 * out.kl)
    out.total.mean().backward()
    grads = [p.grad for p in vae.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_activation_checkpointing_gives_the_same_gradients() -> None:
    x = _images()
    grads = []
    for flag in (False, True):
        vae = _tiny_vae(checkpoint=flag).train()
        vae.nelbo(x, generator=torch.Generator().manual_seed(0)).total.sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in vae.parameters()]))
    torch.testing.assert_close(grads[0], grads[1])


def test_decode_returns_a_likelihood_on_images() -> None:
    vae = _tiny_vae().eval()
    with torch.no_grad():
        likelihood = vae.decode(vae.encode(_images()).mode())
        sample = likelihood.sample(torch.Generator().manual_seed(0))
    assert likelihood.bits == 5 and likelihood.num_bins == 32
    assert sample.shape == (2, 3, 16, 16) and sample.abs().max() <= 1
    torch.testing.assert_close(quantize(sample, 5), sample)


def test_latent_scale_is_a_validated_buffer() -> None:
    vae = _tiny_vae()
    assert vae.latent_scale.item() == 1.0 and "latent_scale" in vae.state_dict()
    vae.set_latent_scale(torch.tensor(0.42))
    assert vae.latent_scale.item() == pytest.approx(0.42)
    for bad in (0.0, -1.0, float("nan"), torch.ones(2)):
        with pytest.raises(ValueError):
            vae.set_latent_scale(bad)


def test_config_round_trip_rebuilds_the_same_model() -> None:
    """`config()` holds plain constructor primitives; `from_config` + the state_dict rebuilds the same model."""
    vae = _tiny_vae().eval()
    vae.set_latent_scale(0.73)
    rebuilt = VAE.from_config(vae.config())
    rebuilt.load_state_dict(vae.state_dict())
    rebuilt.eval()
    x = _images()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.encode(x).mean, vae.encode(x).mean, rtol=0, atol=0)
    assert rebuilt.config() == vae.config() and rebuilt.latent_scale.item() == pytest.approx(0.73)


def test_quantize_snaps_to_the_bit_depth() -> None:
    vae = _tiny_vae()
    x = _images()
    torch.testing.assert_close(vae.quantize(x), quantize(x, vae.bits))
    vae.bits = 16
    assert vae.quantize(x) is x


def test_config_validation() -> None:
    arch = {**TINY, "resolution": 16}
    with pytest.raises(ValueError, match="out_channels"):
        VAE(Encoder(**arch), Decoder(7, **arch), likelihood="dml", likelihood_kwargs={"num_mix": 2})
    with pytest.raises(ValueError, match="unknown likelihood"):
        VAE(Encoder(**arch), Decoder(6, **arch), likelihood="laplace")
    with pytest.raises(ValueError, match="divisible"):
        Encoder(**{**arch, "num_groups": 3})
    custom = VAE(Encoder(**arch), Decoder(20, **arch), likelihood=DiscretizedMixtureOfLogistics.from_params)
    with pytest.raises(ValueError):
        custom.config()
    with pytest.raises(ValueError):
        VAE.from_config({"encoder": {}})
    with pytest.raises(ValueError):
        custom.encode(torch.zeros(1, 1, 16, 16))
