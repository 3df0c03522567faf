"""`LatentModel`, the LSGM-style latent NELBO: F = identity is the VAE terms plus the LSGM cross-entropy, computed
independently; the N(0, I) prior gives the VAE's own bound; gradients reach every part."""

import math

import torch

from latent_ndm.diffusion.forward_process import ForwardProcess
from latent_ndm.diffusion.objectives import ContinuousNDMObjective
from latent_ndm.diffusion.parameterisation import DataPrediction, Denoiser, EpsilonPrediction, MixingPrediction
from latent_ndm.diffusion.schedule import VPSchedule
from latent_ndm.diffusion.time_sampling import LikelihoodISTime
from latent_ndm.diffusion.transforms import IdentityTransform
from latent_ndm.model import LatentModel, NDMPrior, StandardNormalPrior
from vae.likelihoods import DiscretizedMixtureOfLogistics, quantize
from vae.model import VAE
from vae.networks import Decoder, Encoder

sch = VPSchedule()
ARCH = {"base_channels": 8, "channel_mult": (1, 2), "num_res_blocks": 1, "latent_channels": 2, "num_groups": 4,
        "resolution": 8}


class ConvEps(torch.nn.Module):
    """A small time-conditioned conv net standing in for the U-Net."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(channels + 1, channels, 3, padding=1)

    def forward(self, z, t):
        return self.conv(torch.cat([z, t[:, None, None, None].expand(-1, 1, *z.shape[2:])], 1))


def tiny_vae() -> VAE:
    torch.manual_seed(0)
    out = DiscretizedMixtureOfLogistics.num_params(3, 2)
    vae = VAE(Encoder(**ARCH), Decoder(out, **ARCH), likelihood="dml", bits=5, likelihood_kwargs={"num_mix": 2})
    vae.set_latent_scale(0.7)
    return vae


def latent_nelbo(vae, objective, denoiser, transform, x, generator=None):
    """The NELBO of a latent NDM with this VAE, objective, denoiser and transform (latents 2x4x4)."""
    prior = NDMPrior(denoiser, ForwardProcess(sch, transform), objective, (2, 4, 4), t_eps=1e-2)
    return LatentModel(vae, prior).nelbo(x, generator)


def test_identity_latent_nelbo_is_vae_terms_plus_lsgm_cross_entropy():
    vae, net = tiny_vae(), ConvEps(2)
    x = torch.rand(4, 3, 8, 8) * 2 - 1
    sampler = LikelihoodISTime(sch, t_eps=1e-2)
    out = latent_nelbo(vae, ContinuousNDMObjective(sch, sampler), Denoiser(net, sch, EpsilonPrediction()),
                       IdentityTransform(), x, generator=torch.Generator().manual_seed(3))

    g = torch.Generator().manual_seed(3)  # replay the draws: z ~ q, then t, then eps
    xq = quantize(x, 5)
    q = vae.encode(xq)
    z = q.mean + q.std * torch.randn(q.mean.shape, generator=g)
    rec = -vae.decode(z).log_prob(xq)
    neg_entropy = (-0.5 * (1 + math.log(2 * math.pi) + q.logvar)).flatten(1).sum(1)
    s = 0.7
    zn = z / s
    ts = sampler.sample(4, generator=g)
    eps = torch.randn(zn.shape, generator=g)
    sc, s0, s1 = sch(ts.t), sch(torch.full((4,), 1e-2)), sch(torch.ones(4))
    b = lambda v: v[:, None, None, None]  # noqa: E731
    z_t = b(sc.alpha) * zn + b(sc.sigma) * eps
    diff = ts.weight * sc.g2 / (2 * sc.sigma2) * ((eps - net(z_t, ts.t)) ** 2).flatten(1).sum(1)
    D = zn[0].numel()
    rec_ndm = 0.5 * D * (1 + torch.log(2 * math.pi * s0.sigma2 / s0.alpha**2))
    prior = 0.5 * (D * (s1.sigma2 - 1 - torch.log(s1.sigma2)) + s1.alpha**2 * (zn**2).flatten(1).sum(1))
    ce = diff + rec_ndm + prior + D * math.log(s)

    assert torch.allclose(out.rec, rec, rtol=1e-5)
    assert torch.allclose(out.neg_entropy, neg_entropy, rtol=1e-5)
    assert torch.allclose(out.cross_entropy, ce, rtol=1e-5)
    assert torch.allclose(out.total, rec + neg_entropy + ce, rtol=1e-5)
    # the VAE's own KL = negative entropy + the cross-entropy with N(0, I), in closed form
    ce_normal = (0.5 * (math.log(2 * math.pi) + q.mean**2 + q.logvar.exp())).flatten(1).sum(1)
    assert torch.allclose(q.kl(), neg_entropy + ce_normal, rtol=1e-5, atol=1e-4)


def test_latent_nelbo_backpropagates_to_every_part():
    vae, net = tiny_vae(), ConvEps(2)
    den = Denoiser(net, sch, MixingPrediction(DataPrediction(), channels=2))
    out = latent_nelbo(vae, ContinuousNDMObjective(sch, LikelihoodISTime(sch, 1e-2)), den, IdentityTransform(),
                       torch.rand(2, 3, 8, 8) * 2 - 1)
    out.total.mean().backward()
    for module in (vae.encoder, vae.decoder, net, den.parameterisation):
        grads = [p.grad for p in module.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_mixing_limits():
    z = torch.randn(3, 2, 4, 4)
    t = torch.tensor([0.1, 0.5, 0.9])
    s = sch(t)
    out = torch.randn_like(z)
    x_hat_N = s.alpha[:, None, None, None] * z  # alpha^2 + sigma^2 = 1 on VP
    mix = MixingPrediction(DataPrediction(), channels=2, init_logit=-30.0)
    assert torch.allclose(mix(out, z, s), x_hat_N, atol=1e-6)
    mix.logit.data.fill_(30.0)
    assert torch.allclose(mix(out, z, s), out, atol=1e-6)
    mix.logit.data.fill_(0.0)
    assert torch.allclose(mix(out, z, s), 0.5 * (x_hat_N + out), atol=1e-6)


def test_standard_normal_prior_gives_the_vaes_own_nelbo():
    """With p(z) = N(0, I) (no normalisation, whatever the stored scale) the NELBO is the VAE stage's rec + KL."""
    vae = tiny_vae()
    x = torch.rand(4, 3, 8, 8) * 2 - 1
    out = LatentModel(vae, StandardNormalPrior()).nelbo(x, torch.Generator().manual_seed(1))
    ref = vae.nelbo(x, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(out.rec, ref.rec)
    torch.testing.assert_close(out.neg_entropy + out.cross_entropy, ref.kl, rtol=1e-5, atol=1e-4)


def test_normalisation_and_its_log_det():
    """u = z / s for an NDM prior, z itself for N(0, I); -log p(z) = -log p(u) + D log s."""
    vae = tiny_vae()
    prior = NDMPrior(ConvEps(2), ForwardProcess(sch, IdentityTransform()), None, (2, 4, 4), t_eps=1e-2)
    ndm, normal = LatentModel(vae, prior), LatentModel(vae)
    z = torch.randn(3, 2, 4, 4)
    torch.testing.assert_close(ndm.normalise(z), z / 0.7)
    torch.testing.assert_close(ndm.denormalise(ndm.normalise(z)), z)
    assert normal.normalise(z) is z
    bound = StandardNormalPrior().nll_bound(z / 0.7)
    torch.testing.assert_close(ndm._in_z(bound, z).nll, bound.nll + 32 * math.log(0.7))


def test_posterior_of_images_and_of_stored_latents():
    vae = tiny_vae()
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    model = LatentModel(vae)
    q = model.posterior(x)
    ref = vae.encode(quantize(x, 5))
    torch.testing.assert_close(q.mean, ref.mean)
    stored = model.posterior({"mean": ref.mean, "logvar": ref.logvar})
    torch.testing.assert_close(stored.mean, ref.mean)
    torch.testing.assert_close(stored.logvar, ref.logvar)
