"""Bits per dimension (vae.units)."""

import math

import pytest
import torch

from vae.units import bits_per_dim, bpd_to_nats, nats_to_bpd


def test_units():
    assert nats_to_bpd(bpd_to_nats(0.65, 3 * 256 * 256), 3 * 256 * 256) == pytest.approx(0.65)
    with pytest.raises(ValueError):
        nats_to_bpd(1.0, 0)


def test_bits_per_dim_counts_every_pixel():
    nats = torch.tensor([3 * 16 * 16 * math.log(2.0)])
    torch.testing.assert_close(bits_per_dim(nats, (3, 16, 16)), torch.tensor([1.0]))
