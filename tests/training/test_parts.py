"""Pieces of the training stage against their definitions: KL warm-up, LR schedule, EMA, metrics, offline LPIPS."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torchvision
from hydra.utils import instantiate

from latent_ndm.errors import TrainingError
from latent_ndm.optim.ema import EMA
from latent_ndm.optim.lr import warmup_cosine
from latent_ndm.runs.config import compose_config
from latent_ndm.runs.hardware import select_precision
from latent_ndm.training.lpips_loader import BACKBONE_FILES, LPIPSWeightsMissing, load_lpips
from latent_ndm.training.schedules import KLWarmup
from latent_ndm.training.vae_loss import ValidationMetrics, balanced_kl, vae_loss
from vae.diagnostics import flat_images, psnr


def test_kl_warmup_holds_rises_linearly_and_saturates() -> None:
    beta = KLWarmup(warmup_steps=100, hold_steps=10, beta_min=1e-4, beta_max=1.0)
    assert beta(0) == beta(10) == 1e-4
    assert beta(60) == pytest.approx(1e-4 + (1 - 1e-4) * 0.5)
    assert beta(110) == beta(10_000) == 1.0
    assert KLWarmup(warmup_steps=0)(0) == 1.0
    with pytest.raises(ValueError):
        KLWarmup(warmup_steps=-1)


def test_kl_warmup_in_shares_of_the_run_scales_with_it_and_restarts() -> None:
    """LSGM's portions: the same shares give a warm-up twice as long in a run twice as long."""
    short = KLWarmup.from_portions(1500, anneal_portion=0.4, const_portion=0.1)
    long = KLWarmup.from_portions(3000, anneal_portion=0.4, const_portion=0.1)
    assert (short.hold_steps, short.warmup_steps, short.end_step) == (150, 600, 750)
    assert (long.hold_steps, long.warmup_steps, long.end_step) == (300, 1200, 1500)
    assert short(450) == long(900) == pytest.approx(1e-4 + (1 - 1e-4) * 0.5)
    assert KLWarmup.from_portions(10, 0.0)(0) == 1.0  # no warm-up
    for bad in ((0, 0.4, 0.0), (100, -0.1, 0.0), (100, 0.5, 1.0), (100, 0.5, -0.1), (100, math.inf, 0.0)):
        with pytest.raises(ValueError, match="shares of the run"):
            KLWarmup.from_portions(*bad)
    again = short.restarted(at_step=900, steps=300)  # stage.on_collapse=extend
    assert again(900) == 1e-4 and again(1050) == pytest.approx(1e-4 + (1 - 1e-4) * 0.5) and again(1200) == 1.0
    assert again.end_step == 1200


def lsgm_kl_coeff(step: float, total_step: float, constant_step: float, min_kl: float, max_kl: float) -> float:
    """LSGM's `util.utils.kl_coeff`, written out: clamp(min + (max - min) (step - constant_step) / total_step)."""
    return max(min(min_kl + (max_kl - min_kl) * (step - constant_step) / total_step, max_kl), min_kl)


def test_kl_warmup_takes_lsgm_portions_that_add_up_to_more_than_the_run() -> None:
    """The CelebA-HQ-256 recipe's shares (anneal 1.0, const 1e-4, LSGM's own): accepted, and beta is LSGM's
    kl_coeff at every step (the hold rounded to whole steps), so it ends the run just short of beta_max."""
    n, beta_min = 84_400, 1e-4
    beta = KLWarmup.from_portions(n, anneal_portion=1.0, const_portion=1e-4, beta_min=beta_min)
    assert (beta.hold_steps, beta.warmup_steps, beta.end_step) == (8, n, n + 8)
    for step in (0, 8, 9, 1000, 42_208, n - 1, n):
        assert beta(step) == pytest.approx(lsgm_kl_coeff(step, n, 8, beta_min, 1.0), rel=1e-12)
    assert beta(n) == pytest.approx(1.0 - (1.0 - beta_min) * 8 / n) and beta(n) < 1.0 == beta(n + 8)
    wide = KLWarmup.from_portions(100, anneal_portion=0.8, const_portion=0.3)  # 30 + 80 steps in a 100-step run
    assert wide(100) == pytest.approx(beta_min + (1 - beta_min) * 70 / 80) and wide.end_step == 110
    default = KLWarmup.from_portions(1500, anneal_portion=1.0)  # the demo's: the whole run, no hold, as before
    assert [default(s) for s in (0, 750, 1500)] == [beta_min, beta_min + (1 - beta_min) * 0.5, 1.0]


def test_warmup_cosine_schedule() -> None:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(()))], lr=1.0)
    sched = warmup_cosine(opt, warmup_steps=4, total_steps=14, min_lr_ratio=0.1)
    lrs = []
    for _ in range(16):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lrs[9] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lrs[14] == lrs[15] == pytest.approx(0.1)


def test_ema_follows_the_update_rule_with_warmup() -> None:
    model = torch.nn.Linear(3, 2)
    ema = EMA(model, decay=0.9, warmup=True)
    assert not any(p.requires_grad for p in ema.module.parameters())
    before = ema.module.weight.clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    d = ema.current_decay()
    assert d == pytest.approx(1 / 10)
    ema.update(model)
    torch.testing.assert_close(ema.module.weight, d * before + (1 - d) * model.weight)
    assert int(ema.num_updates) == 1 and "num_updates" in ema.state_dict()
    assert EMA(model, decay=0.9, warmup=False).current_decay() == 0.9


def test_validation_metrics_match_their_definitions() -> None:
    metrics = ValidationMetrics()
    metrics.num_dims = 12
    metrics.sums = {"count": torch.tensor(2.0), "rec": torch.tensor(10.0), "kl": torch.tensor(4.0),
                    "z_count": torch.tensor(4.0), "z_sum": torch.tensor(0.0), "z_sq": torch.tensor(16.0)}
    out = metrics.compute()
    assert out["nelbo_bpd"] == pytest.approx(7.0 / (12 * math.log(2)))
    assert out["kl_share"] == pytest.approx(4 / 14) and out["latent_scale"] == 2.0


def test_validation_metrics_carry_the_collapse_watch_of_a_real_vae() -> None:
    """A tiny VAE through `update`: the per-unit watch counts units of (C, H, W) and its PSNR is the decoder mean's."""
    torch.manual_seed(0)
    vae = instantiate(compose_config("train", ["vae=tiny", "data.resolution=16"]).vae, _convert_="all").eval()
    x = torch.rand(6, 3, 16, 16) * 2 - 1
    metrics = ValidationMetrics()
    metrics.update(vae, x, generator=torch.Generator().manual_seed(0))
    out = metrics.compute()
    c, h, w = vae.latent_shape(16)
    assert out["latent_units"] == c * h * w and 0 <= out["active_units"] <= c * h * w
    x_q = vae.quantize(x)
    x_hat = vae.decode(vae.encode(x_q).mode()).mean()
    assert out["psnr"] == pytest.approx(psnr(x_hat, x_q).mean().item(), rel=1e-5)
    assert out["psnr_flat"] == pytest.approx(psnr(flat_images(x_q), x_q).mean().item(), rel=1e-5)
    sse, sse_flat = (x_hat - x_q).pow(2).sum().item(), (flat_images(x_q) - x_q).pow(2).sum().item()
    assert out["explained"] == pytest.approx(1 - sse / sse_flat, rel=1e-5)
    assert out["psnr_gain"] == pytest.approx(10 * math.log10(sse_flat / sse), rel=1e-5)
    assert out["kl_bpd"] == pytest.approx(out["kl_unit_nats"] * c * h * w / (3 * 16 * 16 * math.log(2)), rel=1e-5)


def test_free_bits_leave_units_below_lambda_alone_and_never_change_the_reported_bound() -> None:
    torch.manual_seed(0)
    vae = instantiate(compose_config("train", ["vae=tiny", "data.resolution=16"]).vae, _convert_="all")
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    plain = vae_loss(vae, x, generator=torch.Generator().manual_seed(1))
    free = vae_loss(vae, x, generator=torch.Generator().manual_seed(1), free_bits=0.5)
    q = vae.encode(vae.quantize(x))
    kl_train = q.kl_elements().mean(0).clamp_min(0.5).sum()  # sum_u max(lambda, E_batch KL_u)
    assert torch.equal(plain.kl, free.kl) and torch.equal(plain.rec, free.rec)  # the reported terms
    torch.testing.assert_close(free.loss, (free.rec + kl_train) / plain.num_dims)
    huge = vae_loss(vae, x, generator=torch.Generator().manual_seed(1), free_bits=1e6)  # every unit below lambda:
    grads = torch.autograd.grad(huge.loss, list(vae.parameters()), allow_unused=True)
    rec_only = vae_loss(vae, x, beta_kl=0.0, generator=torch.Generator().manual_seed(1)).loss
    expected = torch.autograd.grad(rec_only, list(vae.parameters()), allow_unused=True)
    for g, e in zip(grads, expected, strict=True):  # the KL sends no gradient, the reconstruction all of it
        assert (g is None and e is None) or torch.allclose(g, e, atol=1e-7)
    with pytest.raises(ValueError, match="free_bits"):
        vae_loss(vae, x, free_bits=-1.0)


def test_kl_balance_weights_channels_by_their_share_and_only_during_warm_up() -> None:
    kl_c = torch.tensor([9.99, 0.0, 1.99, 0.0], requires_grad=True)  # + floor 0.01: 10, 0.01, 2, 0.01
    total = balanced_kl(kl_c)
    weights = torch.tensor([10.0, 0.01, 2.0, 0.01]) * (4 / 12.02)
    assert weights.mean().item() == pytest.approx(1.0)
    assert total.item() == pytest.approx((weights * kl_c.detach()).sum().item(), rel=1e-6)
    (grad,) = torch.autograd.grad(total, kl_c)  # the weights are constants: the gradient is w_c
    torch.testing.assert_close(grad, weights)
    torch.manual_seed(0)
    vae = instantiate(compose_config("train", ["vae=tiny", "data.resolution=16"]).vae, _convert_="all")
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    for beta in (0.5, 1.0):
        plain, balanced = (vae_loss(vae, x, beta, generator=torch.Generator().manual_seed(1), kl_balance=b)
                           for b in (False, True))
        kl_channels = vae.encode(vae.quantize(x)).kl_elements().mean(0).flatten(1).sum(1)
        want = plain.rec + beta * (balanced_kl(kl_channels) if beta < 1 else plain.kl)
        torch.testing.assert_close(balanced.loss, want / plain.num_dims)
        assert torch.equal(plain.kl, balanced.kl)  # the reported KL never changes


def test_precision_is_fp32_on_cpu() -> None:
    assert select_precision("auto", "cpu") == "32-true"
    assert select_precision("bf16-mixed", "gpu") == "bf16-mixed"


def test_offline_lpips_from_a_local_stand_in_or_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(LPIPSWeightsMissing, match=r"alexnet-owt-7be5be79\.pth, which are not at .*nowhere") as e:
        load_lpips("alex", backbone_path=tmp_path / "nowhere" / BACKBONE_FILES["alex"])
    assert isinstance(e.value, TrainingError) and "\n" not in str(e.value)
    torch.manual_seed(0)
    state = torchvision.models.alexnet().state_dict()  # random weights standing in for the ImageNet file
    torch.save(state, tmp_path / BACKBONE_FILES["alex"])
    lpips = load_lpips("alex", backbone_path=tmp_path)
    torch.testing.assert_close(lpips.model.net.slice1[0].weight, state["features.0.weight"])
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    d = lpips(x, x.flip(-1))
    assert d.shape == (3,) and torch.isfinite(d).all() and (lpips(x, x) == 0).all()
    assert not any(p.requires_grad for p in lpips.parameters())
