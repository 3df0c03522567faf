"""A thin layer over torchdiffeq: integrate dz/dt = func(t, z) between two times, counting evaluations."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torchdiffeq import odeint

ADAPTIVE = ("dopri5", "dopri8", "bosh3", "adaptive_heun", "fehlberg2")
FIXED = ("euler", "midpoint", "heun2", "rk4", "heun3", "explicit_adams", "implicit_adams")


@dataclass(frozen=True)
class ODESolution:
    """The state (at the end time, or along a time grid) and the number of function evaluations (NFE)."""

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
    first = state[0] if isinstance(state, tuple) else state
    if method in FIXED:
        if steps is None or steps < 1:
            raise ValueError(f"fixed-step method {method!r} needs steps >= 1, got {steps}")
        times = torch.linspace(t_start, t_end, steps + 1, dtype=first.dtype, device=first.device)
    else:
        times = torch.tensor([t_start, t_end], dtype=first.dtype, device=first.device)
    path = solve(func, state, times, method=method, rtol=rtol, atol=atol)
    end = tuple(o[-1] for o in path.state) if isinstance(path.state, tuple) else path.state[-1]
    return ODESolution(state=end, nfe=path.nfe)


def solve(func: Callable, state: torch.Tensor | tuple[torch.Tensor, ...], times: torch.Tensor,
          method: str = "dopri5", rtol: float = 1e-5, atol: float = 1e-5) -> ODESolution:
    """The states at every time of the monotone grid `times` (shape (N, ...) per state tensor) and the NFE.

    Fixed-step methods step exactly on the grid; adaptive ones never evaluate the field outside
    [times[0], times[-1]] (e.g. at t < 0): the last step lands exactly on times[-1], and the first step is chosen
    here, because torchdiffeq's own heuristic probes times[0] + h0 for an unbounded h0."""
    if method not in ADAPTIVE + FIXED:
        raise ValueError(f"unknown ODE method {method!r}; choose one of {ADAPTIVE + FIXED}")
    counting = CountingFunc(func)
    options = None
    if method in ADAPTIVE:
        t_start, t_end = times[0].item(), times[-1].item()
        first = initial_step(counting, state, t_start, t_end, rtol, atol, order=5)
        options = {"step_t": times[-1:].clone(), "first_step": first}
    out = odeint(counting, state, times, method=method, rtol=rtol, atol=atol, options=options)
    return ODESolution(state=out, nfe=counting.nfe)


def _rms(state: torch.Tensor | tuple[torch.Tensor, ...]) -> float:
    parts = state if isinstance(state, tuple) else (state,)
    return max(p.pow(2).mean().sqrt().item() for p in parts)


def _apply(op: Callable, *states):  # noqa: ANN202 - elementwise over a tensor or a tuple of tensors
    if isinstance(states[0], tuple):
        return tuple(op(*parts) for parts in zip(*states, strict=True))
    return op(*states)


def initial_step(func: Callable, state: torch.Tensor | tuple[torch.Tensor, ...], t_start: float, t_end: float,
                 rtol: float, atol: float, order: int) -> float:
    """Hairer, Norsett & Wanner's starting step (Solving ODEs I, II.4), bounded by the interval so that the
    probe evaluation stays inside it. Costs two evaluations of func."""
    span = abs(t_end - t_start)
    direction = 1.0 if t_end >= t_start else -1.0
    first = state[0] if isinstance(state, tuple) else state
    t0 = torch.tensor(t_start, dtype=first.dtype, device=first.device)
    f0 = func(t0, state)
    scale = _apply(lambda y: atol + rtol * y.abs(), state)
    d0 = _rms(_apply(lambda y, s: y / s, state, scale))
    d1 = _rms(_apply(lambda f, s: f / s, f0, scale))
    h0 = 1e-6 * span if d0 < 1e-5 or d1 < 1e-5 else min(0.01 * d0 / d1, span)
    y1 = _apply(lambda y, f: y + direction * h0 * f, state, f0)
    f1 = func(t0 + direction * h0, y1)
    d2 = _rms(_apply(lambda a, b, s: (a - b) / s, f1, f0, scale)) / h0
    h1 = max(1e-6 * span, h0 * 1e-3) if max(d1, d2) <= 1e-15 else (0.01 / max(d1, d2)) ** (1.0 / (order + 1))
    return min(100 * h0, h1, span)
