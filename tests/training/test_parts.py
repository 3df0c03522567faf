"""Pieces of the training stage against their definitions: KL warm-up, LR schedule, EMA, metrics, offline LPIPS."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torchvision

from latent_ndm.errors import TrainingError
from latent_ndm.runs.hardware import select_precision
from latent_ndm.training.ema import EMA
from latent_ndm.training.lpips_loader import BACKBONE_FILES, LPIPSWeightsMissing, load_lpips
from latent_ndm.training.schedules import KLWarmup, warmup_cosine
from latent_ndm.training.vae_loss import ValidationMetrics, kl_per_channel, psnr
from vae import DiagonalGaussian


def test_kl_warmup_holds_rises_linearly_and_saturates() -> None:
    beta = KLWarmup(warmup_steps=100, hold_steps=10, beta_min=1e-4, beta_max=1.0)
    assert beta(0) == beta(10) == 1e-4
    assert beta(60) == pytest.approx(1e-4 + (1 - 1e-4) * 0.5)
    assert beta(110) == beta(10_000) == 1.0
    assert KLWarmup(warmup_steps=0)(0) == 1.0
    with pytest.raises(ValueError):
        KLWarmup(warmup_steps=-1)


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
    q = DiagonalGaussian(torch.randn(4, 3, 2, 2), torch.randn(4, 3, 2, 2))
    torch.testing.assert_close(kl_per_channel(q).sum(1), q.kl())
    x = torch.rand(2, 3, 4, 4) * 2 - 1
    assert psnr(x + 0.2, x) == pytest.approx(torch.full((2,), 10 * math.log10(4 / 0.04)), rel=1e-5)
    metrics = ValidationMetrics(active_threshold=0.5)
    metrics.num_dims = 12
    metrics.sums = {"count": torch.tensor(2.0), "rec": torch.tensor(10.0), "kl": torch.tensor(4.0),
                    "kl_channel": torch.tensor([3.0, 1.0]), "psnr": torch.tensor(40.0),
                    "z_count": torch.tensor(4.0), "z_sum": torch.tensor(0.0), "z_sq": torch.tensor(16.0)}
    out = metrics.compute()
    assert out["nelbo_bpd"] == pytest.approx(7.0 / (12 * math.log(2)))
    assert out["active_channels"] == 1 and out["kl_channel_0"] == 1.5 and out["latent_scale"] == 2.0


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
