"""One calling convention for every training objective of the NDM prior.

    objective(denoiser, process, x, generator) -> ObjectiveResult

`denoiser` is x_hat_theta, `process` the `ForwardProcess` (schedule, F, noise), x a batch (B, ...). The result holds
per-example terms (each of shape (B,)) and their `total`, the quantity minimised, and says whether `total` bounds
-log p(x) (`is_bound`). `objective.at(t_eps)` is the same objective cut at another t_eps; `default_sampler` names the
sampler that suits a model trained with it (the training grids draw with it unless `stage.images.sampler` names one).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Protocol

import torch
from torch import nn

from latent_ndm.diffusion.forward_process import ForwardProcess


class ObjectiveResult:
    """Per-example terms of an objective, each of shape (B,), as dataclass fields, one of them `total`; `is_bound`:
    whether `total` is an upper bound on -log p(x) in nats (else a regression, judged by its samples); `name`: what
    `total` is called where it is reported (validation's metric of a regression)."""

    is_bound: ClassVar[bool] = True
    name: ClassVar[str] = "total"
    total: torch.Tensor

    @property
    def terms(self) -> dict[str, torch.Tensor]:
        """The terms by name, `total` excluded, in the order of the fields."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "total"}  # type: ignore[arg-type]


@dataclass(frozen=True)
class NDMLoss(ObjectiveResult):
    """Per-example NELBO terms in nats, each of shape (B,): total = rec + diff + prior."""

    name: ClassVar[str] = "nelbo"
    rec: torch.Tensor
    diff: torch.Tensor
    prior: torch.Tensor
    total: torch.Tensor


class Objective(Protocol):
    """What the prior, the training loss and the toy call (see the module doc); `result` is the class of what it
    returns."""

    is_bound: ClassVar[bool]
    result: ClassVar[type[ObjectiveResult]]
    t_eps: float

    def __call__(self, denoiser: nn.Module, process: ForwardProcess, x: torch.Tensor,
                 generator: torch.Generator | None = None) -> ObjectiveResult: ...

    def at(self, t_eps: float) -> Objective: ...

    def default_sampler(self, process: ForwardProcess, steps: int, eta: float = 1.0) -> Mapping[str, Any]: ...


def bound_sampler(process: ForwardProcess, steps: int, eta: float = 1.0) -> Mapping[str, Any]:
    """The default sampler of a model trained on a bound: its forward process's (`ForwardProcess.default_sampler`)."""
    return process.default_sampler(steps, eta)
