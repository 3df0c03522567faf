"""The variance-preserving (VP) noise schedule of DDPM/LSGM, with its time derivatives (NDM eq. 6; docs/MATH.md
section 1).

beta(t) = b0 + (b1 - b0) t,  log alpha_t = -b0 t / 2 - (b1 - b0) t^2 / 4,  sigma_t^2 = 1 - alpha_t^2,
r(t) = d log alpha_t / dt = -beta(t) / 2,  g_F^2(t) = d sigma_t^2/dt - 2 r(t) sigma_t^2 = beta(t).

Everything is computed in float64 and returned in the math dtype of `t` (float32, or float64 when `t`
is float64), with autocast off: schedules never run in half precision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from latent_ndm.diffusion.checks import check_time, math_dtype


@dataclass(frozen=True)
class ScheduleOutput:
    """alpha_t, sigma_t and their derivatives at times t, each of shape (B,)."""

    alpha: torch.Tensor  # alpha_t
    sigma: torch.Tensor  # sigma_t
    sigma2: torch.Tensor  # sigma_t^2
    d_alpha: torch.Tensor  # d alpha_t / dt
    d_sigma2: torch.Tensor  # d sigma_t^2 / dt
    r: torch.Tensor  # d log alpha_t / dt
    g2: torch.Tensor  # forward-SDE diffusion g_F^2(t) = d sigma^2/dt - 2 r sigma^2
    log_snr: torch.Tensor  # lambda_t = log(alpha_t^2 / sigma_t^2)

    def select(self, rows: slice | torch.Tensor) -> ScheduleOutput:
        """The same quantities for a subset of the batch (rows of every field)."""
        return ScheduleOutput(**{k: v[rows] for k, v in self.__dict__.items()})


DEFAULT_T_EPS = 1e-2
"""The math package's one default cut-off: where a bound's integral starts (training, validation, ODE NLL) and where a
sampler stops (`t_end`) unless told otherwise; LSGM's training value. A run's config names its own (`ndm.t_eps`)."""


class VPSchedule:
    """Linear-beta VP schedule (b0 = 0.1, b1 = 20 as in DDPM, VDM and LSGM)."""

    def __init__(self, b0: float = 0.1, b1: float = 20.0) -> None:
        if not (0 < b0 < b1) or not math.isfinite(b1):
            raise ValueError(f"VPSchedule needs 0 < b0 < b1 < inf, got b0={b0}, b1={b1}")
        self.b0 = float(b0)
        self.b1 = float(b1)

    def __repr__(self) -> str:
        return f"VPSchedule(b0={self.b0}, b1={self.b1})"

    # -- closed forms, float64 in, float64 out ---------------------------------------------------
    def _beta(self, t: torch.Tensor) -> torch.Tensor:
        return self.b0 + (self.b1 - self.b0) * t

    def _log_alpha(self, t: torch.Tensor) -> torch.Tensor:
        return -0.5 * self.b0 * t - 0.25 * (self.b1 - self.b0) * t**2

    def _sigma2(self, t: torch.Tensor) -> torch.Tensor:
        return -torch.expm1(2.0 * self._log_alpha(t))  # 1 - alpha^2, accurate for small t

    # -- public API -------------------------------------------------------------------------------
    def __call__(self, t: torch.Tensor) -> ScheduleOutput:
        """All schedule quantities at times `t` of shape (B,), in the math dtype of `t`."""
        check_time(t)
        out_dtype = math_dtype(t)
        with torch.autocast(device_type=t.device.type, enabled=False):
            t64 = t.to(torch.float64)
            log_alpha = self._log_alpha(t64)
            alpha = torch.exp(log_alpha)
            sigma2 = self._sigma2(t64)
            beta = self._beta(t64)
            r = -0.5 * beta
            d_sigma2 = -2.0 * alpha**2 * r  # d(1 - alpha^2)/dt
            g2 = d_sigma2 - 2.0 * r * sigma2
            log_snr = 2.0 * log_alpha - torch.log(sigma2)
            fields = dict(
                alpha=alpha,
                sigma=torch.sqrt(sigma2),
                sigma2=sigma2,
                d_alpha=alpha * r,
                d_sigma2=d_sigma2,
                r=r,
                g2=g2,
                log_snr=log_snr,
            )
        return ScheduleOutput(**{k: v.to(out_dtype) for k, v in fields.items()})

    def beta(self, t: torch.Tensor) -> torch.Tensor:
        """beta(t) = b0 + (b1 - b0) t, which equals g_F^2(t) for the VP process."""
        check_time(t)
        return self._beta(t.to(torch.float64)).to(math_dtype(t))

    def sigma2(self, t: torch.Tensor) -> torch.Tensor:
        """sigma_t^2 = 1 - alpha_t^2."""
        check_time(t)
        return self._sigma2(t.to(torch.float64)).to(math_dtype(t))

    def t_from_sigma2(self, sigma2: torch.Tensor) -> torch.Tensor:
        """Inverse of t -> sigma_t^2 on (0, 1): solves (b1-b0)/4 t^2 + b0/2 t + 1/2 log(1 - sigma^2) = 0."""
        if not torch.isfinite(sigma2).all() or (sigma2 <= 0).any() or (sigma2 >= 1).any():
            raise ValueError("sigma2 must lie in the open interval (0, 1)")
        s = sigma2.to(torch.float64)
        a, b = 0.25 * (self.b1 - self.b0), 0.5 * self.b0
        c = 0.5 * torch.log1p(-s)  # = -(a t^2 + b t)
        # t = (-b + sqrt(b^2 - 4 a c)) / (2 a), written as 2(-c) / (b + sqrt(b^2 - 4 a c)) to avoid cancellation
        t = (-2.0 * c) / (b + torch.sqrt(b * b - 4.0 * a * c))
        return t.to(math_dtype(sigma2))

    def t_from_beta(self, beta: torch.Tensor) -> torch.Tensor:
        """Inverse of t -> beta(t)."""
        t = (beta.to(torch.float64) - self.b0) / (self.b1 - self.b0)
        return t.to(math_dtype(beta))


def time_grid(T: int, t_eps: float, dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu"
              ) -> torch.Tensor:
    """t_i = t_eps + (1 - t_eps) i / T, i = 0..T (shape (T + 1,))."""
    if T < 1:
        raise ValueError(f"T must be a positive integer, got {T}")
    if not 0.0 < t_eps < 1.0:
        raise ValueError(f"t_eps must lie in (0, 1), got {t_eps}")
    return t_eps + (1.0 - t_eps) * torch.arange(T + 1, dtype=dtype, device=device) / T
