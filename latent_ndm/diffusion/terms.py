"""The terms of the NDM negative ELBO, one equation per function, per example, in nats.

Shapes: data-like tensors are (B, ...); schedule fields and results are (B,).
Sums run over all non-batch dimensions (D of them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from latent_ndm.diffusion.checks import append_dims, check_same_shape
from latent_ndm.diffusion.gaussian import ddpm_nu2, drift_coefficient, noise_drift
from latent_ndm.diffusion.schedule import ScheduleOutput


@dataclass(frozen=True)
class NoiseTerms:
    """A learned noise scale's share of the continuous integrand: z_t, and L, dL/dt at x and at x_hat (shape of x)."""

    z: torch.Tensor
    L_x: torch.Tensor
    dL_x: torch.Tensor
    L_xh: torch.Tensor
    dL_xh: torch.Tensor


def _check_terms(tensors: dict[str, torch.Tensor], *scheds: ScheduleOutput) -> None:
    """All data-like tensors share one shape (B, ...) and every schedule has B rows."""
    (name0, ref), *rest = tensors.items()
    for name, x in rest:
        check_same_shape(ref, x, (name0, name))
    for sched in scheds:
        if sched.alpha.shape != ref.shape[:1]:
            raise ValueError(f"schedule has shape {tuple(sched.alpha.shape)} but the batch is {ref.shape[0]}")


def sum_dims(x: torch.Tensor) -> torch.Tensor:
    """Sum over all but the batch dimension: (B, ...) -> (B,)."""
    return x.reshape(x.shape[0], -1).sum(dim=1)


def prior_kl(F_x_1: torch.Tensor, sched_1: ScheduleOutput) -> torch.Tensor:
    """L_prior = KL(N(alpha_1 F(x,1), sigma_1^2 I) || N(0, I)).

    = 1/2 sum_d [sigma_1^2 + alpha_1^2 F_d(x,1)^2 - 1 - log sigma_1^2].
    """
    _check_terms({"F_x_1": F_x_1}, sched_1)
    D = F_x_1[0].numel()
    a2, s2 = sched_1.alpha**2, sched_1.sigma2
    return 0.5 * (D * (s2 - 1.0 - torch.log(s2)) + a2 * sum_dims(F_x_1.to(a2.dtype) ** 2))


def reconstruction(x: torch.Tensor, F_x_0: torch.Tensor, sched_0: ScheduleOutput,
                   L_x_0: torch.Tensor | None = None) -> torch.Tensor:
    """L_rec = E_eps[-log N(x; z_0 / alpha_0, sigma_0^2 / alpha_0^2 I)], z_0 = alpha_0 F(x, t_0) + sigma_0 eps.

    = D/2 (1 + log(2 pi sigma_0^2 / alpha_0^2)) + alpha_0^2 ||x - F(x, t_0)||^2 / (2 sigma_0^2), in closed form;
    the second part vanishes for F = identity and is small for F(x, t) = x + t G(x, t). With a learned noise scale
    z_0 has variance sigma_0^2 exp(2 L(x, t_0)), which adds 1/2 sum_d (exp(2 L_d) - 1).
    """
    _check_terms({"x": x, "F_x_0": F_x_0}, sched_0)
    D = x[0].numel()
    a2, s2 = sched_0.alpha**2, sched_0.sigma2
    const = 0.5 * D * (1.0 + torch.log(2.0 * math.pi * s2 / a2))
    out = const + a2 * sum_dims((x - F_x_0).to(a2.dtype) ** 2) / (2.0 * s2)
    return out if L_x_0 is None else out + 0.5 * sum_dims(torch.expm1(2.0 * L_x_0.to(a2.dtype)))


def discrete_kl(F_x_s: torch.Tensor, F_xh_s: torch.Tensor, F_x_t: torch.Tensor, F_xh_t: torch.Tensor,
                sched_s: ScheduleOutput, sched_t: ScheduleOutput) -> torch.Tensor:
    """KL(q(z_s | z_t, x) || q(z_s | z_t, x_hat)) with the DDPM nu^2 (NDM eq. 10; docs/MATH.md section 4):

    || alpha_s (F(x,s) - F(x_hat,s)) - sqrt(sigma_s^2 - nu^2)/sigma_t alpha_t (F(x,t) - F(x_hat,t)) ||^2 / (2 nu^2).
    """
    _check_terms({"F_x_s": F_x_s, "F_xh_s": F_xh_s, "F_x_t": F_x_t, "F_xh_t": F_xh_t}, sched_s, sched_t)
    nd = F_x_s.ndim
    nu2 = ddpm_nu2(sched_s, sched_t)
    coef = torch.sqrt(sched_s.sigma2 - nu2) / sched_t.sigma * sched_t.alpha
    diff = append_dims(sched_s.alpha, nd) * (F_x_s - F_xh_s) - append_dims(coef, nd) * (F_x_t - F_xh_t)
    return sum_dims(diff.to(nu2.dtype) ** 2) / (2.0 * nu2)


def continuous_integrand(F_x: torch.Tensor, dF_x: torch.Tensor, F_xh: torch.Tensor, dF_xh: torch.Tensor,
                         sched: ScheduleOutput, noise: NoiseTerms | None = None) -> torch.Tensor:
    """||Delta||^2 / (2 g^2) with g^2 = g_F^2 (NDM eq. 11 corrected; docs/MATH.md section 5):

    c = d sigma^2/dt - 2 r sigma^2 + g^2,
    Delta = alpha_t (dF/dt(x,t) - dF/dt(x_hat,t)) - alpha_t c / (2 sigma_t^2) (F(x,t) - F(x_hat,t)),
    the difference of the reverse drifts f(z_t, t, x) - f(z_t, t, x_hat). With a learned noise scale (`noise`) each
    drift gains `noise_drift`, and so does Delta (MATH.md section 11).
    """
    _check_terms({"F_x": F_x, "dF_x": dF_x, "F_xh": F_xh, "dF_xh": dF_xh}, sched)
    nd = F_x.ndim
    g2 = sched.g2
    c = drift_coefficient(sched, g2)
    a = append_dims(sched.alpha, nd)
    b = append_dims(sched.alpha * c / (2.0 * sched.sigma2), nd)
    delta = a * (dF_x - dF_xh).to(a.dtype) - b * (F_x - F_xh).to(a.dtype)
    if noise is not None:
        z = noise.z.to(a.dtype)
        delta = delta + (noise_drift(z, F_x, noise.L_x, noise.dL_x, sched, g2)
                         - noise_drift(z, F_xh, noise.L_xh, noise.dL_xh, sched, g2))
    return sum_dims(delta**2) / (2.0 * g2)
