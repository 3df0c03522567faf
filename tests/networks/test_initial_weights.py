"""The initial weights of a small U-Net and a small VAE under a seed, recorded before the shared blocks moved
(`Upsample` to `latent_ndm.common.blocks`): the same state-dict keys in the same order and the same values, so that a
run started with the same seed starts from the same weights."""

from __future__ import annotations

import hashlib

import pytest
import torch
from torch import nn

from latent_ndm.networks import UNet
from vae.networks import Decoder, Encoder

# (keys, sha256 of the key names in order (first 16 hex), sum of |w| over every tensor in float64)
RECORDED = {
    "unet": (166, "d68fcd58b4ae3a93", 9400.476516919045),
    "encoder": (58, "91b78b01d96318b9", 1336.6623137674133),
    "decoder": (82, "a246a5c352c14545", 2037.1337017964863),
}


def _networks() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    unet = UNet(in_channels=4, base_channels=16, channel_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(8,),
                resolution=16, num_groups=4)
    torch.manual_seed(1)
    sizes = {"base_channels": 8, "channel_mult": [1, 2, 2], "num_res_blocks": 1, "latent_channels": 3,
             "num_groups": 4, "resolution": 16}
    encoder = Encoder(in_channels=3, **sizes)
    decoder = Decoder(out_channels=20, **sizes)
    return {"unet": unet, "encoder": encoder, "decoder": decoder}


@pytest.mark.parametrize("name", list(RECORDED))
def test_a_seed_gives_the_recorded_initial_weights(name: str) -> None:
    state = _networks()[name].state_dict()
    digest = hashlib.sha256("\n".join(state).encode()).hexdigest()[:16]
    total = sum(v.double().abs().sum().item() for v in state.values())
    count, keys, recorded = RECORDED[name]
    assert (len(state), digest) == (count, keys)
    assert total == pytest.approx(recorded, rel=1e-12, abs=0.0)
