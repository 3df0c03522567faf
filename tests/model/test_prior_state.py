"""An `NDMPrior` holds its forward process as one module (`process.transform.*`, `process.noise.*`); states written
before (`transform.*`, `noise.*`: Lightning checkpoints' `model.prior.transform.*`, exports) still load."""

from __future__ import annotations

import torch

from latent_ndm.runs.build import build_ndm_prior
from latent_ndm.runs.config import compose_config


def nfdm_config():
    return compose_config("train", ["stage=ndm", "ndm/denoiser=tiny", "ndm/noise=neural", "ndm.latent.channels=3",
                                    "ndm.latent.resolution=4", "ndm.denoiser.channel_mult=[1]"]).ndm


def old_spelling(state: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    return {prefix + k.removeprefix("process."): v for k, v in state.items()}


def test_a_state_with_the_old_keys_loads_into_the_prior_and_through_build() -> None:
    torch.manual_seed(0)
    source = build_ndm_prior(nfdm_config())
    with torch.no_grad():
        for p in source.parameters():
            p.add_(torch.randn_like(p))
    state = source.state_dict()
    assert any(k.startswith("process.noise.") for k in state) and not any(k.startswith("transform.") for k in state)
    for loaded in (build_ndm_prior(nfdm_config(), state=old_spelling(state)),
                   build_ndm_prior(nfdm_config(), state=state)):
        assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in state.items())
    target = build_ndm_prior(nfdm_config())
    outer = torch.nn.ModuleDict({"prior": target})  # a Lightning checkpoint's `model.prior.transform.*`
    outer.load_state_dict(old_spelling(state, "prior."), strict=True)
    assert all(torch.equal(v, target.state_dict()[k]) for k, v in state.items())
