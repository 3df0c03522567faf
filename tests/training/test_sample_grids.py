"""`stage.images.sampler`: the training grids draw with a sampler named in config (any of `configs/sampler/`, no code
change), or, when it is null, with the one the prior declares (`NDMPrior.default_sampler`)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from latent_ndm.diffusion.samplers import DiscretePosterior, Euler, Heun, ReverseSDE
from latent_ndm.model import LatentModel
from latent_ndm.runs.build import build_ndm_prior
from latent_ndm.training.callbacks.images import NDMSampleGrids
from latent_ndm.training.ndm_stage import build_callbacks
from tests.support.tiny_runs import ndm_cfg


class CountingVAE(torch.nn.Module):
    """Stands in for the VAE: decodes latents (3, 4, 4) to 16x16 images by repetition."""

    def decode(self, z: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(mean=lambda: z.repeat_interleave(4, -1).repeat_interleave(4, -2).clamp(-1, 1))

    latent_scale = torch.tensor(1.0)


def grids(cfg, tmp_path: Path) -> NDMSampleGrids:
    return next(c for c in build_callbacks(cfg, tmp_path) if isinstance(c, NDMSampleGrids))


def test_a_grid_is_drawn_with_the_sampler_the_config_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = ndm_cfg(tmp_path, tmp_path, None, "stage.images.sampler={name: heun, steps: 2}")
    images = grids(cfg, tmp_path)
    assert images.spec == Heun(steps=2)
    torch.manual_seed(0)
    model = LatentModel(CountingVAE(), build_ndm_prior(cfg.ndm))
    calls = []
    original = Heun.draw

    def counted(self, *args, **kwargs):
        calls.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Heun, "draw", counted)
    module = SimpleNamespace(ema=SimpleNamespace(module=model), device=torch.device("cpu"))
    paths = images.write(SimpleNamespace(loggers=[]), module, "final")
    assert calls == [Heun(steps=2)] and paths["samples"].is_file()


def test_null_is_the_sampler_the_prior_declares(tmp_path: Path) -> None:
    steps = ("stage.images.steps=4", "stage.images.eta=0.5")
    for overrides, expected in ((steps, DiscretePosterior(steps=4, eta=0.5)),
                                ((*steps, "ndm/noise=neural"), ReverseSDE(steps=4)),
                                ((*steps, "ndm/objective=straight"), Euler(steps=4))):
        cfg = ndm_cfg(tmp_path, tmp_path, None, *overrides)
        images = grids(cfg, tmp_path)
        assert images.spec is None
        module = SimpleNamespace(ema=SimpleNamespace(module=SimpleNamespace(prior=build_ndm_prior(cfg.ndm))))
        assert images.sampler(module) == expected
