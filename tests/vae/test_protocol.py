"""The VAE contract is written once, as `vae.protocol.LatentVAE`: the members a refusal names are the protocol's."""

from __future__ import annotations

import typing

from torch import nn

from vae.protocol import MEMBERS, LatentVAE, missing_members


class AlmostAVAE(nn.Module):
    """Every member of the contract but `decode`."""

    bits, image_channels = 8, 3

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("latent_scale", None)

    def quantize(self, x): ...
    def encode(self, x): ...
    def latent_shape(self, resolution): ...
    def set_latent_scale(self, value): ...
    def config(self): ...


def test_the_members_are_the_protocols_own_in_its_order() -> None:
    assert set(MEMBERS) == typing._get_protocol_attrs(LatentVAE)  # what isinstance(x, LatentVAE) checks
    assert MEMBERS[:3] == ("bits", "image_channels", "latent_scale") and MEMBERS[-1] == "config"


def test_a_module_that_lacks_a_member_is_not_a_vae_and_the_member_is_named() -> None:
    vae = AlmostAVAE()
    assert not isinstance(vae, LatentVAE) and missing_members(vae) == ["decode"]
    assert missing_members(object()) == list(MEMBERS)
