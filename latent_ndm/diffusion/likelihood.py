"""Exact log-likelihood of the probability-flow ODE (docs/MATH.md section 6).

log p(z_eps) = log p_1(z_1) + integral_{t_eps}^{1} div_z v(z_t, t) dt, integrating the state (z, delta) forward
from t_eps to 1. The divergence is exact (one backward pass per dimension, for small D) or Hutchinson's
estimate u^T (dv/dz) u with a probe u drawn once per solve (Rademacher or Gaussian).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch

from latent_ndm.diffusion.checks import check_batch
from latent_ndm.diffusion.ode import integrate
from latent_ndm.diffusion.reverse_process import ReverseProcess
from latent_ndm.diffusion.schedule import DEFAULT_T_EPS

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


def ode_log_likelihood(velocity: Velocity, z_eps: torch.Tensor, t_eps: float = DEFAULT_T_EPS, method: str = "dopri5",
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


@dataclass(frozen=True)
class NLLBound:
    """Per-example upper bound on -log p(x) in nats (B,) from the ODE prior, its parts, and the solver's NFE."""

    nll: torch.Tensor
    ode_nll: torch.Tensor  # -log p_ODE(z_eps)
    dequant: torch.Tensor  # E_q[-log p(x | z_eps) + log q(z_eps | x)], in closed form
    nfe: int


def ode_nll_bound(process: ReverseProcess, x: torch.Tensor, t_eps: float = DEFAULT_T_EPS,
                  generator: torch.Generator | None = None, **solver: Any) -> NLLBound:
    """-log p(x) <= E_{q(z_eps|x)}[-log p(x | z_eps) - log p_ODE(z_eps) + log q(z_eps | x)], one z_eps per example.

    q(z_eps | x) = N(alpha F(x, t_eps), sigma^2 I) is the forward process (`process.process`) and p(x | z_eps) =
    N(z_eps / alpha, sigma^2 / alpha^2 I) its reconstruction model (docs/MATH.md section 4), so the two Gaussian terms
    are exact (`ForwardProcess.dequantisation`): E[-log p(x|z) + log q(z|x)] = -D log alpha_eps + alpha^2
    ||x - F(x, t_eps)||^2 / (2 sigma^2), while -log p_ODE is estimated at one sample. With a learned noise scale
    (MATH.md section 11) q(z_eps | x) has variance sigma^2 exp(2 L(x, t_eps)), which adds
    sum_d [(exp(2 L_d) - 1) / 2 - L_d]. `solver` goes to `ode_log_likelihood` (rtol, atol, exact, probe, method).
    """
    check_batch(x, "x")
    B = x.shape[0]
    forward = process.process
    t = torch.full((B,), t_eps, dtype=torch.promote_types(x.dtype, torch.float32), device=x.device)
    sched = forward.schedule(t)
    with torch.no_grad():
        m = forward.marginal(x, t.to(x.dtype), derivative=False)
    alpha, sigma = sched.alpha.to(x.dtype), sched.sigma.to(x.dtype)
    eps = torch.randn(x.shape, dtype=x.dtype, device=x.device, generator=generator)
    z_eps = forward.sample(m, eps, sched)
    ll = ode_log_likelihood(process.velocity, z_eps, t_eps=t_eps, generator=generator, **solver)
    dequant = forward.dequantisation(x, m, alpha, sigma)
    return NLLBound(nll=dequant - ll.logp, ode_nll=-ll.logp, dequant=dequant, nfe=ll.nfe)
