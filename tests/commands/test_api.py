"""The Python API (`latent_ndm.load`): one call loads a run; sampling, encoding, decoding and the bounds agree with the
command-line tools."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import latent_ndm
from data_tools.shard_index import split_pattern
from latent_ndm.data.module import ShardDataModule
from latent_ndm.evaluation.runner import evaluate
from latent_ndm.runs.config import compose_config
from latent_ndm.training.run import train
from tests.support.tiny_runs import ndm_cfg


@pytest.fixture(scope="module")
def ndm_run(tmp_path_factory: pytest.TempPathFactory, tiny_data: Path, tiny_vae_run: Path) -> Path:
    run = tmp_path_factory.mktemp("api") / "ndm"
    train(ndm_cfg(run, tiny_data, tiny_vae_run / "export", "trainer.max_steps=2", "trainer.val_check_interval=2"))
    return run


def val_images(data: Path) -> torch.Tensor:
    module = ShardDataModule(None, test_shards=split_pattern(data, "val"), batch_size=12)
    module.setup("test")
    return torch.cat(list(module.test_dataloader()))


def test_load_sample_encode_decode(ndm_run: Path, tiny_vae_run: Path) -> None:
    model = latent_ndm.load(ndm_run)
    assert model.kind == "ndm" and not model.latent.training
    a = model.sample(3, sampler="discrete", steps=4, eta=0.0, seed=1)  # deterministic: the same for any batching
    b = model.sample(3, sampler="discrete", steps=4, eta=0.0, seed=1, batch_size=2)
    assert a.shape == (3, 3, 16, 16) and a.abs().max() <= 1 and torch.allclose(a, b, atol=1e-5)
    q = model.encode(a)
    assert q.mean.shape == (3, 3, 4, 4)
    recon = model.decode(q.mean)
    assert recon.shape == a.shape and torch.isfinite(recon).all()
    vae = latent_ndm.load(tiny_vae_run / "export")
    assert vae.kind == "vae" and vae.sample(2).shape == (2, 3, 16, 16)


@pytest.mark.parametrize("kind", ["vae", "ndm"])
def test_the_nelbo_is_the_evaluators(kind: str, ndm_run: Path, tiny_vae_run: Path, tiny_data: Path) -> None:
    run = ndm_run if kind == "ndm" else tiny_vae_run
    images = val_images(tiny_data)
    ours = latent_ndm.load(run).nelbo(images, seed=0)
    cfg = compose_config("evaluate", [f"ckpt={run}", "metrics=[nelbo]", "batch_size=12", "progress=false",
                                      "accelerator=cpu"])
    theirs = evaluate(cfg).results["nelbo"]
    assert ours["nelbo"].mean().item() == pytest.approx(theirs["nelbo_bpd"], rel=1e-6)
    assert ours["rec"].mean().item() == pytest.approx(theirs["rec_bpd"], rel=1e-6)


def test_the_ode_bound(ndm_run: Path, tiny_data: Path) -> None:
    model = latent_ndm.load(ndm_run)
    out = model.nll(val_images(tiny_data)[:2], rtol=1e-3, atol=1e-3)
    assert out["nll"].shape == (2,) and torch.isfinite(out["nll"]).all()
    assert torch.allclose(out["nll"], out["rec"] + out["neg_entropy"] + out["cross_entropy"], atol=1e-5)
