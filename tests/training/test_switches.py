"""The GPU efficiency switches give the plain path's training loss and gradients, on CPU, within a stated tolerance:
activation checkpointing and channels-last exactly up to float32 rounding (1e-5), torch.compile up to kernel
fusion (1e-4), bf16-mixed up to bfloat16's 8-bit mantissa (5% of the loss, gradients' cosine > 0.99), the fused Adam
step to 1e-6; and `stage.speed` reaches the built module (the training copy compiled, the EMA's not)."""

import copy
from pathlib import Path

import pytest
import torch

from latent_ndm.runs.build import build_ndm_prior
from latent_ndm.training.builders import build_datamodule
from latent_ndm.training.ndm_stage import build_model
from latent_ndm.training.speed import apply_speed_switches, compiled_networks
from tests.support.tiny_runs import ndm_cfg


def prior_of(tmp_path: Path, tiny_data: Path, tiny_vae_run: Path, *overrides: str):
    cfg = ndm_cfg(tmp_path, tiny_data, tiny_vae_run / "export", "ndm.denoiser.channel_mult=[1,2]",
                  "ndm.latent.resolution=8", *overrides)
    torch.manual_seed(0)
    return build_ndm_prior(cfg.ndm, t_eps=cfg.ndm.t_eps)


U = torch.randn(8, 3, 8, 8, generator=torch.Generator().manual_seed(1))


def loss_and_grads(prior, autocast: bool = False, u: torch.Tensor = U) -> tuple[torch.Tensor, list[torch.Tensor]]:
    prior.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = prior.nll_bound(u, torch.Generator().manual_seed(2)).nll.mean()
    loss.backward()
    return loss.detach().float(), [p.grad.detach().clone() for p in prior.parameters() if p.grad is not None]


def close(a: list[torch.Tensor], b: list[torch.Tensor], tol: float) -> bool:
    return len(a) == len(b) and all(torch.allclose(x, y, rtol=tol, atol=tol * max(1.0, y.abs().max().item()))
                                    for x, y in zip(a, b, strict=True))


@pytest.fixture(scope="module")
def plain(tmp_path_factory, tiny_data: Path, tiny_vae_run: Path):
    prior = prior_of(tmp_path_factory.mktemp("plain"), tiny_data, tiny_vae_run)
    return prior, *loss_and_grads(prior)


def test_activation_checkpointing_gives_the_same_loss_and_gradients(plain, tmp_path, tiny_data, tiny_vae_run):
    _, loss, grads = plain
    prior = prior_of(tmp_path, tiny_data, tiny_vae_run, "ndm.denoiser.checkpointing=true")
    got, got_grads = loss_and_grads(prior)
    assert torch.allclose(got, loss, rtol=1e-5) and close(got_grads, grads, 1e-5)


def test_channels_last_gives_the_same_loss_and_gradients(plain):
    prior, loss, grads = plain
    other = copy.deepcopy(prior)
    apply_speed_switches(other, {"channels_last": True})
    convs = [p for p in other.parameters() if p.dim() == 4 and p.shape[2] * p.shape[3] > 1]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous() for p in convs)
    got, got_grads = loss_and_grads(other)
    assert torch.allclose(got, loss, rtol=1e-5) and close(got_grads, grads, 1e-5)


def test_bf16_mixed_stays_within_bfloat16_precision(plain):
    prior, loss, grads = plain
    got, got_grads = loss_and_grads(copy.deepcopy(prior), autocast=True)
    assert abs(got - loss) <= 0.05 * abs(loss)
    flat, ref = torch.cat([g.flatten() for g in got_grads]), torch.cat([g.flatten() for g in grads])
    assert torch.nn.functional.cosine_similarity(flat.float(), ref, dim=0) > 0.99


def test_compile_gives_the_same_loss_and_gradients(tmp_path, tiny_data, tiny_vae_run):
    """On the smallest U-Net (one resolution, 3x4x4 latents): inductor's CPU compile of a bigger one costs minutes."""
    cfg = ndm_cfg(tmp_path, tiny_data, tiny_vae_run / "export")
    torch.manual_seed(0)
    prior = build_ndm_prior(cfg.ndm, t_eps=cfg.ndm.t_eps)
    loss, grads = loss_and_grads(prior, u=U[:, :, :4, :4])
    other = copy.deepcopy(prior)
    apply_speed_switches(other, {"compile": True})
    nets = compiled_networks(other.denoiser, other.transform)
    assert [n._compiled_call_impl is not None for n in nets] == [True, True]  # the denoiser's, the separable F's
    got, got_grads = loss_and_grads(other, u=U[:, :, :4, :4])
    assert torch.allclose(got, loss, rtol=1e-4) and close(got_grads, grads, 1e-4)


def test_the_fused_adam_step_is_the_plain_step(plain):
    """eps = 1e-3: the zero-initialised F has gradients near Adam's default eps (1e-8) in its first steps, where the
    fused kernel's order of operations rounds differently (3e-4 apart after two steps, measured); away from that
    regime the two steps agree to float32 rounding."""
    prior, _, _ = plain
    steps = {}
    for fused in (False, None, True):
        p = copy.deepcopy(prior)
        opt = torch.optim.Adam(p.parameters(), lr=1e-3, eps=1e-3, fused=fused)
        for _ in range(2):
            loss_and_grads(p)
            opt.step()
        steps[fused] = [q.detach() for q in p.parameters()]
    diff = [max((a - b).abs().max().item() for a, b in zip(steps[k], steps[False], strict=True)) for k in (None, True)]
    assert close(steps[True], steps[False], 1e-6), diff


def test_stage_speed_reaches_the_training_copy_only(tmp_path, tiny_data, tiny_vae_run):
    cfg = ndm_cfg(tmp_path, tiny_data, tiny_vae_run / "export", "stage.speed.compile=true",
                  "stage.speed.channels_last=true", "optim.optimizer.fused=true")
    module = build_model(cfg, build_datamodule(cfg.data))
    assert module.model.prior.denoiser.net._compiled_call_impl is not None
    assert module.ema.module.prior.denoiser.net._compiled_call_impl is None
