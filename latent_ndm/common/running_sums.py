"""Named float64 running sums over a pass through a data set, summed across processes in one collective.

The one accumulator behind every metric that averages per-example values over a validation or evaluation pass (the
VAE's and the NDM's validation metrics, the collapse watch, the evaluation's bound terms): `add` keeps a float64 sum
per name (a scalar or a per-unit tensor), `reduced(reduce_sum)` packs every sum into one vector, lets `reduce_sum` sum
it across processes (the identity on one), and unpacks it by name.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

ReduceSum = Callable[[torch.Tensor], torch.Tensor]


def _identity(t: torch.Tensor) -> torch.Tensor:
    return t


class RunningSums:
    """`sums[name]`: the float64 sum of every value added under that name."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}

    def add(self, name: str, value: torch.Tensor | float, total: bool = True) -> None:
        """Add `value` (detached, in float64) under `name`: its total (`total`), or element-wise (a per-unit sum of
        the shape of `value`)."""
        value = torch.as_tensor(value).detach().double()
        value = value.sum() if total else value
        self.sums[name] = self.sums[name] + value if name in self.sums else value

    def __bool__(self) -> bool:
        return bool(self.sums)

    def reduced(self, reduce_sum: ReduceSum = _identity) -> dict[str, torch.Tensor]:
        """Every sum by name, summed across processes by `reduce_sum` in one call (on one packed vector)."""
        names = sorted(self.sums)
        if not names:
            return {}
        device = self.sums[names[0]].device
        packed = reduce_sum(torch.cat([self.sums[n].reshape(-1).to(device) for n in names]))
        out, start = {}, 0
        for n in names:
            size = self.sums[n].numel()
            out[n] = packed[start:start + size].reshape(self.sums[n].shape)
            start += size
        return out
