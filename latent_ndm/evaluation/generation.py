"""Seeded generation: prior samples decoded to images, reproducible per sample index.

Sample i starts from z_1 drawn by its own generator (seeded by (seed, i)), so the set of images does not depend on
the batch size or on how the indices are split across processes: for the ODE sampler with a fixed-step method up to
float32 rounding (CPU and GPU kernels take batch-size dependent paths, which move decoded pixels by about 1e-6, so a
PNG pixel may differ by one level of 255); adaptive steps are chosen per batch, and sde/discrete draw their step
noise per batch from (seed, first index). `rank_indices` splits N samples across processes so that each is generated
exactly once.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from latent_ndm.diffusion.samplers import Sampler
from latent_ndm.runs.load import LoadedRun

_MIX = 1_000_003


def index_seed(seed: int, index: int) -> int:
    """The seed of sample `index` (a 63-bit integer)."""
    return int((seed * _MIX + index) * 2_654_435_761 % (2**63 - 1))


def rank_indices(n: int, rank: int, world: int) -> range:
    """The contiguous block of sample indices [0, n) that process `rank` of `world` generates."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} outside a world of {world}")
    return range(n * rank // world, n * (rank + 1) // world)


def batches(indices: Sequence[int], batch_size: int) -> Iterator[Sequence[int]]:
    """Consecutive chunks of at most batch_size indices."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for start in range(0, len(indices), batch_size):
        yield indices[start:start + batch_size]


def initial_noise(indices: Sequence[int], shape: tuple[int, ...], seed: int,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """z_1 ~ N(0, I) of shape (len(indices), *shape), row i from the generator of sample indices[i]."""
    rows = [torch.randn(shape, generator=torch.Generator().manual_seed(index_seed(seed, i))) for i in indices]
    return torch.stack(rows).to(device)


@dataclass
class GeneratedBatch:
    """Decoded images in [-1, 1] (B, C, H, W), their latents, the sampler's NFE, and the wall time (s)."""

    images: torch.Tensor
    latents: torch.Tensor
    nfe: int
    seconds: float


def latent_shape(run: LoadedRun) -> tuple[int, int, int]:
    shape = run.model.latent_shape
    return tuple(shape) if shape is not None else tuple(run.model.vae.latent_shape(run.resolution))


@torch.no_grad()
def generate(run: LoadedRun, indices: Sequence[int], sampler: Sampler, seed: int = 0,
             device: torch.device | str = "cpu") -> GeneratedBatch:
    """Images of samples `indices`: z ~ prior (from the seeded z_1), decoded with the VAE decoder's mean."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    z_1 = initial_noise(indices, latent_shape(run), seed, device)
    generator = torch.Generator(device=device).manual_seed(index_seed(seed + 1, indices[0]))
    z, nfe = run.model.sample(z_1, sampler, generator)
    images = run.model.decode_mean(z).clamp(-1.0, 1.0)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return GeneratedBatch(images=images, latents=z, nfe=nfe, seconds=time.perf_counter() - start)
