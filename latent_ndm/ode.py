"""A thin layer over torchdiffeq: integrate dz/dt = func(t, z) between two times, counting evaluations."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torchdiffeq import odeint

ADAPTIVE = ("dopri5", "dopri8", "bosh3", "adaptive_heun", "fehlberg2")
FIXED = ("euler", "midpoint", "rk4", "heun3", "explicit_adams", "implicit_adams")


@dataclass(frozen=True)
class ODESolution:
    """The state at the end time and the number of function evaluations (NFE)."""

    state: torch.Tensor | tuple[torch.Tensor, ...]
    nfe: int


class CountingFunc(torch.nn.Module):
    """Wraps func(t, state) and counts its calls."""

    def __init__(self, func: Callable) -> None:
        super().__init__()
        self.func = func
        self.nfe = 0

    def forward(self, t: torch.Tensor, state):  # noqa: ANN001 - torchdiffeq passes tensors or tuples
        self.nfe += 1
        return self.func(t, state)


def integrate(func: Callable, state: torch.Tensor | tuple[torch.Tensor, ...], t_start: float, t_end: float,
              method: str = "dopri5", rtol: float = 1e-5, atol: float = 1e-5, steps: int | None = None
              ) -> ODESolution:
    """Integrate from t_start to t_end (either direction). Adaptive methods use rtol/atol; fixed-step ones
    take `steps` equal steps (required for them)."""
    if method not in ADAPTIVE + FIXED:
        raise ValueError(f"unknown ODE method {method!r}; choose one of {ADAPTIVE + FIXED}")
    first = state[0] if isinstance(state, tuple) else state
    if method in FIXED:
        if steps is None or steps < 1:
            raise ValueError(f"fixed-step method {method!r} needs steps >= 1, got {steps}")
        # fixed-grid solvers step exactly on the times given
        times = torch.linspace(t_start, t_end, steps + 1, dtype=first.dtype, device=first.device)
        options = None
    else:
        times = torch.tensor([t_start, t_end], dtype=first.dtype, device=first.device)
        # never evaluate the field outside [t_start, t_end] (e.g. t < 0): land the last step exactly on t_end,
        # and give the first step instead of torchdiffeq's heuristic, which probes t_start + h0 for a large h0
        options = {"step_t": times[1:].clone(), "first_step": abs(t_end - t_start) * 1e-3}
    counting = CountingFunc(func)
    out = odeint(counting, state, times, method=method, rtol=rtol, atol=atol, options=options)
    end = tuple(o[-1] for o in out) if isinstance(out, tuple) else out[-1]
    return ODESolution(state=end, nfe=counting.nfe)
