"""Time grids of the fixed-step samplers: where on [t_end, 1] the K steps of a probability-flow solver land
(docs/MATH.md section 6.1). Every grid runs from t = 1 down to t_end, both ends exact, strictly decreasing.

- `uniform`: equal steps in t;
- `edm`: Karras et al.'s (EDM) rho-spaced grid in the noise-to-signal ratio sigma_t / alpha_t,
  s_i = (s_max^(1/rho) + i/K (s_min^(1/rho) - s_max^(1/rho)))^rho (rho = 7), which spends its steps near the data;
- `logsnr`: equal steps in log-SNR = log(alpha_t^2 / sigma_t^2), as DPM-Solver.

The noise levels are those of the VP schedule (for a learned noise scale, NFDM, the schedule's, not the learned one).
On the VP schedule sigma_t^2 = 1 / (1 + SNR_t), which `VPSchedule.t_from_sigma2` inverts in closed form.
"""

from __future__ import annotations

import torch

from latent_ndm.diffusion.schedule import VPSchedule

GRIDS = ("uniform", "edm", "logsnr")


def _t_from_log_snr(schedule: VPSchedule, log_snr: torch.Tensor) -> torch.Tensor:
    return schedule.t_from_sigma2(torch.sigmoid(-log_snr))


def sampling_grid(kind: str, steps: int, t_end: float, schedule: VPSchedule, rho: float = 7.0,
                  dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu") -> torch.Tensor:
    """The K + 1 times 1 = t_0 > t_1 > ... > t_K = t_end of a `kind` grid (one of GRIDS), shape (steps + 1,)."""
    if kind not in GRIDS:
        raise ValueError(f"unknown time grid {kind!r}; choose one of {list(GRIDS)}")
    if steps < 1 or not 0.0 < t_end < 1.0 or rho <= 0:
        raise ValueError(f"need steps >= 1, 0 < t_end < 1 and rho > 0, got {steps}, {t_end}, {rho}")
    frac = torch.arange(steps + 1, dtype=torch.float64) / steps
    ends = schedule(torch.tensor([1.0, t_end], dtype=torch.float64)).log_snr
    if kind == "uniform":
        t = 1.0 + (t_end - 1.0) * frac
    elif kind == "logsnr":
        t = _t_from_log_snr(schedule, ends[0] + (ends[1] - ends[0]) * frac)
    else:  # edm: noise-to-signal ratio s = exp(-log_snr / 2), rho-spaced
        s_max, s_min = torch.exp(-0.5 * ends)
        s = (s_max ** (1 / rho) + frac * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho
        t = _t_from_log_snr(schedule, -2.0 * torch.log(s))
    t[0], t[-1] = 1.0, t_end  # exact ends, whatever the round trip through the noise level did
    if not (t[1:] < t[:-1]).all():
        raise ValueError(f"the {kind} grid of {steps} steps to t_end = {t_end:g} is not strictly decreasing")
    return t.to(dtype=dtype, device=device)
