"""Exact log-likelihood of the probability-flow ODE (MATH.md section 6).

log p(z_eps) = log p_1(z_1) + integral_{t_eps}^{1} div_z v(z_t, t) dt, integrating the state (z, delta) forward
from t_eps to 1. The divergence is exact (one backward pass per dimension, for small D) or Hutchinson's
estimate u^T (dv/dz) u with a probe u drawn once per solve (Rademacher or Gaussian).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from latent_ndm.checks import check_batch
from latent_ndm.ode import integrate

Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class LikelihoodOutput:
    """Per-example log p(z_eps) and log p_1(z_1) in nats (B,), z_1 itself, and the solver's NFE."""

    logp: torch.Tensor
    prior_logp: torch.Tensor
    z_1: torch.Tensor
    nfe: int


def standard_normal_logp(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) summed over the non-batch dimensions."""
    D = z[0].numel()
    return -0.5 * (D * math.log(2 * math.pi) + z.reshape(z.shape[0], -1).pow(2).sum(1))


def exact_divergence(v: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """tr(dv/dz) per example, one backward pass per dimension (for small D)."""
    v_flat = v.reshape(v.shape[0], -1)
    div = torch.zeros(v.shape[0], dtype=v.dtype, device=v.device)
    for d in range(v_flat.shape[1]):
        (grad,) = torch.autograd.grad(v_flat[:, d].sum(), z, retain_graph=True)
        div = div + grad.reshape(grad.shape[0], -1)[:, d]
    return div


def hutchinson_divergence(v: torch.Tensor, z: torch.Tensor, probe: torch.Tensor) -> torch.Tensor:
    """u^T (dv/dz) u per example (an unbiased estimate of the trace when E[u u^T] = I)."""
    (grad,) = torch.autograd.grad((v * probe).sum(), z)
    return (grad * probe).reshape(z.shape[0], -1).sum(1)


def draw_probe(z: torch.Tensor, kind: Literal["rademacher", "gaussian"],
               generator: torch.Generator | None = None) -> torch.Tensor:
    """A probe u with E[u u^T] = I, of the shape of z."""
    if kind == "gaussian":
        return torch.randn(z.shape, dtype=z.dtype, device=z.device, generator=generator)
    if kind == "rademacher":
        bits = torch.randint(0, 2, z.shape, device=z.device, generator=generator)
        return bits.to(z.dtype) * 2 - 1
    raise ValueError(f"probe must be 'rademacher' or 'gaussian', got {kind!r}")


def ode_log_likelihood(velocity: Velocity, z_eps: torch.Tensor, t_eps: float = 1e-5, method: str = "dopri5",
                       rtol: float = 1e-5, atol: float = 1e-5, steps: int | None = None,
                       exact: bool = False, probe: Literal["rademacher", "gaussian"] = "rademacher",
                       generator: torch.Generator | None = None,
                       prior_logp: Callable[[torch.Tensor], torch.Tensor] = standard_normal_logp) -> LikelihoodOutput:
    """log p(z_eps) under the ODE dz/dt = velocity(z, t) (t of shape (B,)) with z_1 ~ prior_logp.

    The probe is drawn once per solve, so the integrand is a smooth function of t for the adaptive solver.
    """
    check_batch(z_eps, "z_eps")
    if not 0.0 < t_eps < 1.0:
        raise ValueError(f"t_eps must lie in (0, 1), got {t_eps}")
    u = None if exact else draw_probe(z_eps, probe, generator)

    def func(t: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        z = state[0]
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            v = velocity(z, t.expand(z.shape[0]))
            div = exact_divergence(v, z) if u is None else hutchinson_divergence(v, z, u)
        return v.detach(), div.detach()

    delta0 = torch.zeros(z_eps.shape[0], dtype=z_eps.dtype, device=z_eps.device)
    sol = integrate(func, (z_eps, delta0), t_eps, 1.0, method=method, rtol=rtol, atol=atol, steps=steps)
    z_1, delta = sol.state
    prior = prior_logp(z_1)
    return LikelihoodOutput(logp=prior + delta, prior_logp=prior, z_1=z_1, nfe=sol.nfe)
