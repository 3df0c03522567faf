"""Closed forms of the Gaussian forward process around a transform F (NDM eq. 7-8, 12; docs/MATH.md sections 2-3, 6,
11): pure functions of tensors and schedule values, which `forward_process.ForwardProcess`, the objectives' terms and
the samplers call.

Marginal (eq. 7):   q(z_t | x) = N(alpha_t F(x, t), sigma_t^2 I),   sampled as z_t = alpha_t F(x, t) + sigma_t eps.
Posterior (eq. 8):  q(z_s | z_t, x) = N(alpha_s F(x, s) + sqrt(sigma_s^2 - nu^2) (z_t - alpha_t F(x, t)) / sigma_t,
                    nu^2 I) for s < t and any 0 < nu^2 <= sigma_s^2; DDPM's nu^2 = sigma_s^2 (1 - SNR_t / SNR_s).
Continuous time:    c(t) = d sigma_t^2/dt - 2 r(t) sigma_t^2 + g^2(t), the coefficient of the score in the reverse drift
                    f(z, t, x) = alpha_t dF/dt(x, t) + r z - 1/2 c(t) (alpha_t F(x, t) - z) / sigma_t^2 and in the
                    continuous objective (the corrected eq. 11-12).
Learned noise:      the Gaussian NFDM process sigma(x, t) = sigma_t exp(L(x, t)) (`latent_ndm.diffusion.noise`) samples
                    z_t = alpha_t F + sigma(x, t) eps and adds `noise_drift` to the reverse drift f(z, t, x) (MATH.md
                    section 11); with L = None everything here is NDM's.

Shapes: data-like tensors are (B, ...); schedule fields are (B,) and are broadcast with `append_dims`.
"""

from __future__ import annotations

import torch

from latent_ndm.diffusion.checks import append_dims
from latent_ndm.diffusion.schedule import ScheduleOutput


def forward_sample(F_x_t: torch.Tensor, eps: torch.Tensor, sched_t: ScheduleOutput,
                   L_x_t: torch.Tensor | None = None) -> torch.Tensor:
    """z_t = alpha_t F(x, t) + sigma_t eps (NDM eq. 7), in the dtype of F; with a learned noise scale L(x, t),
    z_t = alpha_t F(x, t) + sigma_t exp(L(x, t)) eps."""
    nd = F_x_t.ndim
    alpha = append_dims(sched_t.alpha, nd).to(F_x_t.dtype)
    sigma = append_dims(sched_t.sigma, nd).to(F_x_t.dtype)
    if L_x_t is None:
        return alpha * F_x_t + sigma * eps
    return alpha * F_x_t + sigma * torch.exp(L_x_t.to(F_x_t.dtype)) * eps


def ddpm_nu2(sched_s: ScheduleOutput, sched_t: ScheduleOutput) -> torch.Tensor:
    """nu^2 = sigma_s^2 (1 - SNR_t / SNR_s), the DDPM variance of the eq. (8) posterior (s < t), shape (B,)."""
    return sched_s.sigma2 * -torch.expm1(sched_t.log_snr - sched_s.log_snr)


def posterior_mean(F_s: torch.Tensor, F_t: torch.Tensor, z_t: torch.Tensor, sched_s: ScheduleOutput,
                   sched_t: ScheduleOutput, nu2: torch.Tensor) -> torch.Tensor:
    """Mean of q(z_s | z_t, x) (NDM eq. 8): alpha_s F(x,s) + sqrt(sigma_s^2 - nu^2) (z_t - alpha_t F(x,t)) / sigma_t."""
    nd = z_t.ndim
    coef = append_dims(torch.sqrt((sched_s.sigma2 - nu2).clamp_min(0.0)) / sched_t.sigma, nd)
    alpha_s, alpha_t = append_dims(sched_s.alpha, nd), append_dims(sched_t.alpha, nd)
    return alpha_s * F_s + coef * (z_t - alpha_t * F_t)


def drift_coefficient(sched: ScheduleOutput, g2: torch.Tensor) -> torch.Tensor:
    """c(t) = d sigma_t^2/dt - 2 r(t) sigma_t^2 + g^2(t), shape (B,); = 2 beta(t) on VP with g^2 = g_F^2.

    The printed eq. (12) drops d sigma^2/dt; this is the corrected form (docs/MATH.md section 5)."""
    return sched.d_sigma2 - 2.0 * sched.r * sched.sigma2 + g2


def reverse_drift(z: torch.Tensor, F: torch.Tensor, dF_dt: torch.Tensor, sched: ScheduleOutput,
                  g2: torch.Tensor) -> torch.Tensor:
    """f(z, t, x) = alpha_t dF/dt(x,t) + r z - 1/2 c s(x, z, t), s = (alpha_t F(x, t) - z) / sigma_t^2,
    c = d sigma^2/dt - 2 r sigma^2 + g^2 (NDM eq. 12 corrected), from F(x, t) and dF/dt(x, t)."""
    nd = z.ndim
    c = drift_coefficient(sched, g2)
    alpha = append_dims(sched.alpha, nd)
    score = (alpha * F - z) / append_dims(sched.sigma2, nd)
    return alpha * dF_dt + append_dims(sched.r, nd) * z - 0.5 * append_dims(c, nd) * score


def noise_excess(L: torch.Tensor, dL_dt: torch.Tensor, sched: ScheduleOutput, g2: torch.Tensor) -> torch.Tensor:
    """e = dL/dt + g^2 / (2 sigma_t^2) (exp(-2 L) - 1): how much sigma'/sigma + g^2 / (2 sigma^2), the coefficient of
    (z - mu) in the reverse drift, grows when sigma_t becomes sigma_t exp(L); zero at L = 0. Shape of L."""
    c = append_dims(g2 / (2.0 * sched.sigma2), L.ndim).to(L.dtype)
    return dL_dt + c * torch.expm1(-2.0 * L)


def noise_drift(z: torch.Tensor, F: torch.Tensor, L: torch.Tensor, dL_dt: torch.Tensor, sched: ScheduleOutput,
                g2: torch.Tensor) -> torch.Tensor:
    """What a learned noise scale adds to the reverse drift f(z, t, x): e (z - alpha_t F(x, t)) (MATH.md section 11)."""
    alpha = append_dims(sched.alpha, z.ndim).to(z.dtype)
    return noise_excess(L.to(z.dtype), dL_dt.to(z.dtype), sched, g2) * (z - alpha * F.to(z.dtype))
