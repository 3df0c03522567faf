"""The noise of a training step as a function of (seed, rank, step, micro-batch) only, so that a run resumed from a
checkpoint (even after a SIGKILL) draws exactly what the uninterrupted run drew: no generator state to save."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

_MASK = 2**63 - 1


def step_seed(seed: int, rank: int, step: int, batch_idx: int) -> int:
    """A seed for the noise of one training micro-batch."""
    return int((((seed * 1_000_003 + rank) * 1_000_003 + step) * 1_009 + batch_idx) % _MASK)


@contextmanager
def seeded_step(seed: int, rank: int, step: int, batch_idx: int, device: torch.device) -> Iterator[torch.Generator]:
    """A generator for the step's explicit draws (latent samples, times, noise), and, for the draws that use the
    global RNG (dropout), the global RNG of the CPU and of `device` seeded from a different value of the same key;
    the global RNG state is restored afterwards."""
    key = step_seed(seed, rank, step, batch_idx)
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed((key * 6364136223846793005 + 1442695040888963407) % _MASK)
        yield torch.Generator(device=device).manual_seed(key)
