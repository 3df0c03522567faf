"""The GPU efficiency switches of `stage=ndm` that are not Lightning's or the optimizer's own (`stage.speed`): each is
tested on CPU to give the plain path's loss and gradients within a stated tolerance (tests/training/test_switches.py),
beside bf16-mixed (`trainer.precision`), activation checkpointing (`ndm.denoiser.checkpointing`) and the fused
optimizer (`optim.optimizer.fused`).

- `compile`: `torch.compile` of the denoiser's network and of a separable F's network, in place (`nn.Module.compile`:
  the weights and their names are unchanged). A neural F (`ndm/transform=neural`) and the NFDM noise scale are left
  eager: their time derivative is a `torch.func.jvp` through the network. Only the training copy is compiled; the EMA
  copy that validation and the exports use runs eager.
- `channels_last`: the U-Nets' weights in the NHWC memory format (convolutions on tensor cores under bf16).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from latent_ndm.model import NDMPrior


def compiled_networks(denoiser: nn.Module, transform: nn.Module) -> list[nn.Module]:
    """The networks `compile` compiles: the denoiser's, and a separable F's (one plain pass, no jvp)."""
    nets = [denoiser.net]
    if transform.kind == "separable":
        nets.append(transform.net)
    return nets


def apply_speed_switches(prior: NDMPrior, speed: Any, ema_prior: NDMPrior | None = None) -> None:
    """`speed.compile` on `prior` (the training copy); `speed.channels_last` on it and on `ema_prior`."""
    if speed is None:
        return
    if speed.get("channels_last", False):
        for p in (prior, ema_prior):
            if p is not None:
                p.to(memory_format=torch.channels_last)
    if speed.get("compile", False):
        for net in compiled_networks(prior.denoiser, prior.transform):
            net.compile()
