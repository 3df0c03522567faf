"""Bring your own VAE (docs/BYO_VAE.md): the contract, the worked example (torch's pixel (un)shuffle wrapped in
`vae/pixel_shuffle.py`), its export, a prior trained on it by stage=ndm, and the allow-list on the way back in."""

import itertools
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from latent_ndm.export_vae import export
from latent_ndm.runs.config import compose_config
from latent_ndm.runs.export import load_vae, read_run_record
from latent_ndm.runs.targets import TRUST_ENV
from latent_ndm.sample import run as sample_run
from latent_ndm.training.run import train
from tests.support.tiny_runs import command, ndm_cfg
from vae import VAE
from vae.pixel_shuffle import PixelShuffleVAE
from vae.protocol import LatentVAE


def test_the_example_meets_the_contract_and_its_likelihood_is_proper():
    vae = PixelShuffleVAE(factor=2, image_channels=1, bits=1, noise_std=0.3)
    assert isinstance(vae, LatentVAE)
    images = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=4))).view(16, 1, 2, 2)  # every 1-bit image
    z = torch.randn(1, 4, 1, 1, generator=torch.Generator().manual_seed(0)).expand(16, 4, 1, 1)
    total = vae.decode(z).log_prob(images).exp().sum()
    assert total.item() == pytest.approx(1.0, abs=1e-6)  # a pmf over the 1-bit grid: the NELBO is a bound
    x = vae.quantize(torch.rand(3, 1, 8, 8) * 2 - 1)
    q = vae.encode(x)
    assert q.mean.shape == (3, 4, 4, 4) == (3, *vae.latent_shape(8))
    assert torch.equal(vae.decode(q.mean).mean(), x)  # shuffle(unshuffle(x)) = x


def test_an_export_trains_a_prior_and_samples(tmp_path: Path, tiny_data: Path) -> None:
    out = tmp_path / "pixels"
    record = export(compose_config("export_vae", ["data=shards", f"data.root={tiny_data}", f"out={out}", "limit=8",
                                                  "device=cpu"]))
    assert record["count"] == 8 and record["latent_scale"] > 0
    assert yaml.safe_load((out / "vae_config.yaml").read_text())["_target_"] == "vae.pixel_shuffle.PixelShuffleVAE"
    vae = load_vae(out)
    assert isinstance(vae, PixelShuffleVAE) and vae.latent_scale.item() == pytest.approx(record["latent_scale"])
    assert read_run_record(out)["nelbo_bpd"] == pytest.approx(record["nelbo_bpd"])
    run = ndm_cfg(tmp_path / "prior", tiny_data, out, "ndm.latent.channels=null", "ndm.latent.resolution=null",
                  "trainer.max_steps=2", "trainer.val_check_interval=2")
    result = train(run)
    assert result.module.model.vae.latent_shape(16) == (12, 8, 8)
    assert command("sample", sample_run, [f"ckpt={tmp_path / 'prior'}", "num=2", "sampler=euler", "sampler.steps=2",
                                          "progress=false", f"out={tmp_path / 'samples'}"]) == 0
    assert (tmp_path / "samples" / "grid.png").is_file()


def test_the_toolkits_own_vae_meets_the_contract(tiny_vae_run: Path) -> None:
    vae = load_vae(tiny_vae_run / "export")
    assert isinstance(vae, VAE) and isinstance(vae, LatentVAE)


class NotAVAE(nn.Module):
    def __init__(self, width: int = 1) -> None:
        super().__init__()
        self.width = width


def test_an_export_builds_only_allowed_classes_that_meet_the_contract(tmp_path: Path, tiny_data: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "pixels"
    export(compose_config("export_vae", ["data=shards", f"data.root={tiny_data}", f"out={out}", "limit=4",
                                         "device=cpu"]))
    config = out / "vae_config.yaml"
    config.write_text(yaml.safe_dump({"_target_": f"{__name__}.NotAVAE", "width": 2}))
    with pytest.raises(ValueError, match=rf"asks to build '{__name__}.NotAVAE'.*LATENT_NDM_TRUSTED_TARGETS"):
        load_vae(out)
    monkeypatch.setenv(TRUST_ENV, f"{__name__}.NotAVAE")
    with pytest.raises(ValueError, match=r"is not a VAE this toolkit can use: it lacks bits, image_channels"):
        load_vae(out)
