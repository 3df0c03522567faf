"""The composed configs of runs: F_phi's network size relative to the denoiser's (`ndm.F_size`)."""

from __future__ import annotations

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from latent_ndm.runs.config import compose_config, scaled_channels

LATENT = ["ndm.latent.channels=4", "ndm.latent.resolution=16"]


def net_sizes(overrides: list[str]) -> tuple[dict, dict]:
    n = compose_config("train", ["stage=ndm", *LATENT, *overrides]).ndm
    return OmegaConf.to_container(n.denoiser, resolve=True), OmegaConf.to_container(n.transform.net, resolve=True)


def test_scaled_channels_rounds_to_a_multiple_of_the_groups_and_never_below_one_group() -> None:
    assert scaled_channels(32, 1.0, 8) == 32
    assert scaled_channels(32, 0.5, 8) == 16
    assert scaled_channels(32, 0.25, 8) == 8
    assert scaled_channels(32, 0.1, 8) == 8          # at least one group
    assert scaled_channels(256, 0.7, 32) == 192      # 179.2 -> the nearest multiple of 32
    assert scaled_channels(64, 1.5, 32) == 96
    with pytest.raises(ValueError, match="width"):
        scaled_channels(32, 0.0, 8)


@pytest.mark.parametrize("transform", ["separable", "neural"])
def test_F_is_a_quarter_of_the_denoiser_by_default_and_scales_with_width_and_depth(transform: str) -> None:
    den, F = net_sizes([f"ndm/transform={transform}"])
    assert (F["base_channels"], F["num_res_blocks"]) == (8, den["num_res_blocks"]) and den["base_channels"] == 32
    den, F = net_sizes([f"ndm/transform={transform}", "ndm.F_size.width=1"])
    assert (F["base_channels"], F["num_res_blocks"]) == (den["base_channels"], den["num_res_blocks"]) == (32, 1)
    den, F = net_sizes([f"ndm/transform={transform}", "ndm.F_size.width=0.5", "ndm.F_size.depth=2"])
    assert (F["base_channels"], F["num_res_blocks"], den["base_channels"], den["num_res_blocks"]) == (16, 2, 32, 1)
    den, F = net_sizes([f"ndm/transform={transform}", "ndm/denoiser=celebahq256", "ndm.F_size.width=0.5"])
    assert (F["base_channels"], F["num_res_blocks"]) == (128, den["num_res_blocks"])


def test_a_smaller_F_has_fewer_parameters_and_the_identity_ignores_the_size() -> None:
    def params(overrides: list[str]) -> int:
        n = compose_config("train", ["stage=ndm", *LATENT, *overrides]).ndm
        return sum(p.numel() for p in instantiate(n.transform, _convert_="all").parameters())

    full, half = params(["ndm.F_size.width=1"]), params(["ndm.F_size.width=0.5"])
    assert 0 < half < full / 3                      # channels halved: about a quarter of the weights
    assert params(["ndm/transform=identity", "ndm.F_size.width=0.5"]) == 0


def test_the_paper_recipe_keeps_an_F_of_the_denoisers_size() -> None:
    n = compose_config("train", ["experiment=celebahq256_ndm"]).ndm
    assert n.transform.net.base_channels == n.denoiser.base_channels == 256
