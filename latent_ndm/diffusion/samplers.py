"""Samplers of the NDM reverse process: discrete posterior (eta; the paper's Algorithm 2), reverse SDE
(Euler-Maruyama on NDM eq. 12), probability-flow ODE (torchdiffeq); docs/MATH.md section 6.

All start from z_1 ~ N(0, I) (or a given z_1), stop at t_eps and return x = z_{t_eps} / alpha_{t_eps}, the mean
of the reconstruction model p(x | z_0) = N(z_0 / alpha_0, sigma_0^2 / alpha_0^2 I); each counts network calls.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from latent_ndm.diffusion.checks import append_dims, check_batch
from latent_ndm.diffusion.forward_process import ddpm_nu2, posterior_mean
from latent_ndm.diffusion.ode import integrate
from latent_ndm.diffusion.reverse_process import ReverseProcess
from latent_ndm.diffusion.schedule import time_grid


@dataclass(frozen=True)
class SampleOutput:
    """Samples x (B, ...), the final latent z_{t_eps}, the number of denoiser evaluations, an optional trajectory."""

    x: torch.Tensor
    z: torch.Tensor
    nfe: int
    trajectory: list[torch.Tensor] | None = None


def _start(shape: tuple[int, ...] | None, z_1: torch.Tensor | None, device: torch.device | str,
           dtype: torch.dtype, generator: torch.Generator | None) -> torch.Tensor:
    if z_1 is None:
        if shape is None:
            raise ValueError("give either the sample shape or an initial z_1")
        return torch.randn(shape, device=device, dtype=dtype, generator=generator)
    check_batch(z_1, "z_1")
    return z_1


def _finish(process: ReverseProcess, z: torch.Tensor, t_eps: float, nfe: int,
            trajectory: list[torch.Tensor] | None) -> SampleOutput:
    alpha = process.schedule(torch.full((z.shape[0],), t_eps, dtype=z.dtype, device=z.device)).alpha
    return SampleOutput(x=z / append_dims(alpha.to(z.dtype), z.ndim), z=z, nfe=nfe, trajectory=trajectory)


@torch.no_grad()
def sample_discrete(process: ReverseProcess, shape: tuple[int, ...] | None = None, T: int = 1000,
                    t_eps: float = 1e-3, eta: float = 1.0, z_1: torch.Tensor | None = None,
                    generator: torch.Generator | None = None, device: torch.device | str = "cpu",
                    dtype: torch.dtype = torch.float32, keep_trajectory: bool = False) -> SampleOutput:
    """The paper's Algorithm 2: z_s ~ q(z_s | z_t, x_hat(z_t, t)) on the grid t_i = t_eps + (1 - t_eps) i/T,
    with nu^2 = eta^2 * nu_DDPM^2 (eta = 1: DDPM, eta = 0: deterministic DDIM-style)."""
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    z = _start(shape, z_1, device, dtype, generator)
    grid = time_grid(T, t_eps, dtype=z.dtype, device=z.device)
    B, traj = z.shape[0], ([z] if keep_trajectory else None)
    for i in range(T, 0, -1):
        s, t = grid[i - 1].expand(B), grid[i].expand(B)
        sched_s, sched_t = process.schedule(s), process.schedule(t)
        x_hat = process.denoiser(z, t)
        F_s, F_t = (o.F for o in process.transform.evaluate(x_hat, [s, t], [False, False]))
        nu2 = (eta**2) * ddpm_nu2(sched_s, sched_t)
        z = posterior_mean(F_s, F_t, z, sched_s, sched_t, nu2)
        if eta > 0:
            noise = torch.randn(z.shape, device=z.device, dtype=z.dtype, generator=generator)
            z = z + append_dims(torch.sqrt(nu2), z.ndim).to(z.dtype) * noise
        if traj is not None:
            traj.append(z)
    return _finish(process, z, t_eps, T, traj)


@torch.no_grad()
def sample_sde(process: ReverseProcess, shape: tuple[int, ...] | None = None, steps: int = 1000,
               t_eps: float = 1e-3, z_1: torch.Tensor | None = None, generator: torch.Generator | None = None,
               device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
               keep_trajectory: bool = False) -> SampleOutput:
    """Euler-Maruyama on the reverse SDE dz = f dt + g dw from t = 1 to t_eps (noise-free last step)."""
    z = _start(shape, z_1, device, dtype, generator)
    times = torch.linspace(1.0, t_eps, steps + 1, dtype=z.dtype, device=z.device)
    B, traj = z.shape[0], ([z] if keep_trajectory else None)
    for k in range(steps):
        t, h = times[k].expand(B), (times[k] - times[k + 1]).item()
        f, g2 = process.drift(z, t, g2_scale=1.0)
        z = z - h * f
        if k < steps - 1:
            noise = torch.randn(z.shape, device=z.device, dtype=z.dtype, generator=generator)
            z = z + append_dims(torch.sqrt(g2 * h), z.ndim).to(z.dtype) * noise
        if traj is not None:
            traj.append(z)
    return _finish(process, z, t_eps, steps, traj)


@torch.no_grad()
def sample_ode(process: ReverseProcess, shape: tuple[int, ...] | None = None, t_eps: float = 1e-3,
               method: str = "dopri5", rtol: float = 1e-2, atol: float = 1e-2, steps: int | None = None,
               z_1: torch.Tensor | None = None, generator: torch.Generator | None = None,
               device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> SampleOutput:
    """Integrate the probability-flow ODE dz/dt = v(z, t) from t = 1 to t_eps (adaptive or fixed-step)."""
    z = _start(shape, z_1, device, dtype, generator)

    def func(t: torch.Tensor, z_t: torch.Tensor) -> torch.Tensor:
        return process.velocity(z_t, t.expand(z_t.shape[0]))

    sol = integrate(func, z, 1.0, t_eps, method=method, rtol=rtol, atol=atol, steps=steps)
    return _finish(process, sol.state, t_eps, sol.nfe, None)
