"""Time samplers for the continuous-time objective (docs/MATH.md section 5): t ~ r(t) on [t_eps, 1], estimate =
integrand / r(t).

- UniformTime:        r = 1 / (1 - t_eps)
- LikelihoodISTime:   sigma_t^2 log-uniform on [sigma^2(t_eps), sigma^2(1)] (LSGM `ll_iw`);
                      1/r(t) = Lambda sigma_t^2 / (g_F^2 alpha_t^2), Lambda = ln(sigma_1^2 / sigma_eps^2)
- InverseG2Time:      r proportional to 1/g^2 = 1/beta(t): beta_t = beta(t_eps) (beta(1)/beta(t_eps))^u,
                      1/r(t) = Z beta(t), Z = ln(beta(1)/beta(t_eps)) / (b1 - b0)
Each returns TimeSample(t, weight) with weight = 1/r(t), both of shape (B,), in float32 or float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from latent_ndm.diffusion.schedule import DEFAULT_T_EPS, VPSchedule


@dataclass(frozen=True)
class TimeSample:
    """Times t of shape (B,) and importance weights 1/r(t) of shape (B,)."""

    t: torch.Tensor
    weight: torch.Tensor


def _uniforms(batch: int, device: torch.device | str, dtype: torch.dtype, generator: torch.Generator | None,
              stratified: bool) -> torch.Tensor:
    """u ~ U[0, 1)^B, optionally stratified (u_i = (u_0 + i) / B mod 1, the VDM low-discrepancy sampler)."""
    if batch <= 0:
        raise ValueError(f"batch must be positive, got {batch}")
    if stratified:
        u0 = torch.rand((), device=device, dtype=dtype, generator=generator)
        return torch.remainder(u0 + torch.arange(batch, device=device, dtype=dtype) / batch, 1.0)
    return torch.rand(batch, device=device, dtype=dtype, generator=generator)


def _check_t_eps(t_eps: float) -> float:
    if not 0.0 < t_eps < 1.0:
        raise ValueError(f"t_eps must lie in (0, 1), got {t_eps}")
    return float(t_eps)


class _TimeSampler:
    """What every time sampler shares: its schedule, cut-off t_eps and stratification, and `at`."""

    def __init__(self, schedule: VPSchedule, t_eps: float = DEFAULT_T_EPS, stratified: bool = False) -> None:
        self.schedule, self.t_eps, self.stratified = schedule, _check_t_eps(t_eps), stratified

    def at(self, t_eps: float) -> _TimeSampler:
        """The same sampler on [t_eps, 1]."""
        return type(self)(self.schedule, t_eps, self.stratified)


class UniformTime(_TimeSampler):
    """t ~ U[t_eps, 1], weight 1 - t_eps."""

    def __init__(self, schedule: VPSchedule, t_eps: float = DEFAULT_T_EPS, stratified: bool = False) -> None:
        self.schedule, self.t_eps, self.stratified = schedule, _check_t_eps(t_eps), stratified

    def weight(self, t: torch.Tensor) -> torch.Tensor:
        return torch.full_like(t, 1.0 - self.t_eps)

    def sample(self, batch: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
               generator: torch.Generator | None = None) -> TimeSample:
        u = _uniforms(batch, device, dtype, generator, self.stratified)
        t = self.t_eps + (1.0 - self.t_eps) * u
        return TimeSample(t=t, weight=self.weight(t))


class LikelihoodISTime(_TimeSampler):
    """Importance sampling for the likelihood weighting: sigma_t^2 log-uniform (LSGM `ll_iw`)."""

    def __init__(self, schedule: VPSchedule, t_eps: float = DEFAULT_T_EPS, stratified: bool = False) -> None:
        self.schedule, self.t_eps, self.stratified = schedule, _check_t_eps(t_eps), stratified
        ends = schedule.sigma2(torch.tensor([self.t_eps, 1.0], dtype=torch.float64))
        self.log_s2_eps, self.log_s2_1 = math.log(ends[0].item()), math.log(ends[1].item())

    def weight(self, t: torch.Tensor) -> torch.Tensor:
        s = self.schedule(t)
        Lambda = self.log_s2_1 - self.log_s2_eps
        return Lambda * s.sigma2 / (s.g2 * s.alpha**2)

    def sample(self, batch: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
               generator: torch.Generator | None = None) -> TimeSample:
        u = _uniforms(batch, device, torch.float64, generator, self.stratified)
        sigma2 = torch.exp(self.log_s2_eps + (self.log_s2_1 - self.log_s2_eps) * u)
        t = self.schedule.t_from_sigma2(sigma2).clamp(self.t_eps, 1.0).to(dtype)
        return TimeSample(t=t, weight=self.weight(t))


class InverseG2Time(_TimeSampler):
    """r(t) proportional to 1 / g^2(t) = 1 / beta(t)."""

    def __init__(self, schedule: VPSchedule, t_eps: float = DEFAULT_T_EPS, stratified: bool = False) -> None:
        self.schedule, self.t_eps, self.stratified = schedule, _check_t_eps(t_eps), stratified
        self.beta_eps = schedule.b0 + (schedule.b1 - schedule.b0) * self.t_eps
        self.Z = math.log(schedule.b1 / self.beta_eps) / (schedule.b1 - schedule.b0)

    def weight(self, t: torch.Tensor) -> torch.Tensor:
        return self.Z * self.schedule.beta(t)

    def sample(self, batch: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
               generator: torch.Generator | None = None) -> TimeSample:
        u = _uniforms(batch, device, torch.float64, generator, self.stratified)
        beta = self.beta_eps * (self.schedule.b1 / self.beta_eps) ** u
        t = self.schedule.t_from_beta(beta).clamp(self.t_eps, 1.0).to(dtype)
        return TimeSample(t=t, weight=self.weight(t))


TimeSampler = UniformTime | LikelihoodISTime | InverseG2Time
