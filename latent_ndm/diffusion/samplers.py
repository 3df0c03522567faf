"""Samplers of the NDM reverse process, one family: discrete posterior (eta; the paper's Algorithm 2), reverse SDE
(Euler-Maruyama on NDM eq. 12), the probability-flow ODE adaptively (torchdiffeq's dopri5) or in fixed steps (Euler,
Heun, RK4 on a time grid of `grids.py`); docs/MATH.md section 6.

The functions `sample_*` do the work. All start from z_1 ~ N(0, I) (or a given z_1), stop at t_end and return
x = z_{t_end} / alpha_{t_end}, the mean of the reconstruction model p(x | z_0) = N(z_0 / alpha_0,
sigma_0^2 / alpha_0^2 I); each counts network calls. The `Sampler` classes are their settings, built from a config
of `configs/sampler/` by `build_sampler` (the one dispatch: a class's `name` is its config name); adding a sampler
is a class here and a YAML file there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

import torch

from latent_ndm.diffusion.checks import append_dims, check_batch
from latent_ndm.diffusion.gaussian import ddpm_nu2, posterior_mean
from latent_ndm.diffusion.grids import GRIDS, sampling_grid
from latent_ndm.diffusion.ode import ADAPTIVE, integrate, solve
from latent_ndm.diffusion.reverse_process import ReverseProcess
from latent_ndm.diffusion.schedule import DEFAULT_T_EPS, time_grid


@dataclass(frozen=True)
class SampleOutput:
    """Samples x (B, ...), the final latent z_{t_end}, the number of denoiser evaluations, an optional trajectory."""

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


def _finish(process: ReverseProcess, z: torch.Tensor, t_end: float, nfe: int,
            trajectory: list[torch.Tensor] | None) -> SampleOutput:
    alpha = process.schedule(torch.full((z.shape[0],), t_end, dtype=z.dtype, device=z.device)).alpha
    return SampleOutput(x=z / append_dims(alpha.to(z.dtype), z.ndim), z=z, nfe=nfe, trajectory=trajectory)


@torch.no_grad()
def sample_discrete(process: ReverseProcess, shape: tuple[int, ...] | None = None, T: int = 1000,
                    t_end: float = DEFAULT_T_EPS, eta: float = 1.0, z_1: torch.Tensor | None = None,
                    generator: torch.Generator | None = None, device: torch.device | str = "cpu",
                    dtype: torch.dtype = torch.float32, keep_trajectory: bool = False) -> SampleOutput:
    """The paper's Algorithm 2: z_s ~ q(z_s | z_t, x_hat(z_t, t)) on the grid t_i = t_end + (1 - t_end) i/T,
    with nu^2 = eta^2 * nu_DDPM^2 (eta = 1: DDPM, eta = 0: deterministic DDIM-style)."""
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    z = _start(shape, z_1, device, dtype, generator)
    grid = time_grid(T, t_end, dtype=z.dtype, device=z.device)
    B, traj = z.shape[0], ([z] if keep_trajectory else None)
    for i in range(T, 0, -1):
        s, t = grid[i - 1].expand(B), grid[i].expand(B)
        sched_s, sched_t = process.schedule(s), process.schedule(t)
        x_hat = process.denoiser(z, t)
        F_s, F_t = (m.F for m in process.process.marginals(x_hat, [s, t], [False, False]))
        nu2 = (eta**2) * ddpm_nu2(sched_s, sched_t)
        z = posterior_mean(F_s, F_t, z, sched_s, sched_t, nu2)
        if eta > 0:
            noise = torch.randn(z.shape, device=z.device, dtype=z.dtype, generator=generator)
            z = z + append_dims(torch.sqrt(nu2), z.ndim).to(z.dtype) * noise
        if traj is not None:
            traj.append(z)
    return _finish(process, z, t_end, T, traj)


@torch.no_grad()
def sample_sde(process: ReverseProcess, shape: tuple[int, ...] | None = None, steps: int = 1000,
               t_end: float = DEFAULT_T_EPS, z_1: torch.Tensor | None = None, generator: torch.Generator | None = None,
               device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
               keep_trajectory: bool = False) -> SampleOutput:
    """Euler-Maruyama on the reverse SDE dz = f dt + g dw from t = 1 to t_end (noise-free last step)."""
    z = _start(shape, z_1, device, dtype, generator)
    times = torch.linspace(1.0, t_end, steps + 1, dtype=z.dtype, device=z.device)
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
    return _finish(process, z, t_end, steps, traj)


@torch.no_grad()
def sample_ode(process: ReverseProcess, shape: tuple[int, ...] | None = None, t_end: float = DEFAULT_T_EPS,
               method: str = "dopri5", rtol: float = 1e-2, atol: float = 1e-2, steps: int | None = None,
               z_1: torch.Tensor | None = None, generator: torch.Generator | None = None,
               device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> SampleOutput:
    """Integrate the probability-flow ODE dz/dt = v(z, t) from t = 1 to t_end (adaptive or fixed-step)."""
    z = _start(shape, z_1, device, dtype, generator)

    def func(t: torch.Tensor, z_t: torch.Tensor) -> torch.Tensor:
        return process.velocity(z_t, t.expand(z_t.shape[0]))

    sol = integrate(func, z, 1.0, t_end, method=method, rtol=rtol, atol=atol, steps=steps)
    return _finish(process, sol.state, t_end, sol.nfe, None)


@torch.no_grad()
def sample_fixed(process: ReverseProcess, solver: str, steps: int, grid: str = "uniform", t_end: float = DEFAULT_T_EPS,
                 rho: float = 7.0, shape: tuple[int, ...] | None = None, z_1: torch.Tensor | None = None,
                 generator: torch.Generator | None = None, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> SampleOutput:
    """The probability-flow ODE dz/dt = v(z, t) from t = 1 to t_end in `steps` steps of a fixed-step torchdiffeq
    `solver` (euler, midpoint, heun2, rk4) on the `grid` of `grids.sampling_grid`."""
    z = _start(shape, z_1, device, dtype, generator)
    times = sampling_grid(grid, steps, t_end, process.schedule, rho, dtype=z.dtype, device=z.device)

    def func(t: torch.Tensor, z_t: torch.Tensor) -> torch.Tensor:
        return process.velocity(z_t, t.expand(z_t.shape[0]))

    path = solve(func, z, times, method=solver)
    return _finish(process, path.state[-1], t_end, path.nfe, None)


# -- the family of sampler settings ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Sampler:
    """How to draw from a reverse process. `t_end`: where sampling stops (None: the prior's training t_eps). A
    subclass with a `name` is a config choice (`configs/sampler/<name>.yaml`) and registers itself."""

    name: ClassVar[str] = ""
    registry: ClassVar[dict[str, type[Sampler]]] = {}
    t_end: float | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("name"):
            Sampler.registry[cls.name] = cls

    def __post_init__(self) -> None:
        if self.t_end is not None and not 0.0 < self.t_end < 1.0:
            raise ValueError(f"the sampler's t_end must lie in (0, 1), got {self.t_end}")

    def check(self, process: ReverseProcess) -> None:
        """Raise a one-sentence ValueError when `process` cannot be sampled this way."""

    def draw(self, process: ReverseProcess, z_1: torch.Tensor, t_end: float,
             generator: torch.Generator | None = None) -> SampleOutput:
        raise NotImplementedError

    def __call__(self, process: ReverseProcess, z_1: torch.Tensor, default_t_end: float,
                 generator: torch.Generator | None = None) -> SampleOutput:
        """Samples from z_1, stopping at `t_end` (or `default_t_end`, the prior's training t_eps, when None)."""
        self.check(process)
        return self.draw(process, z_1, default_t_end if self.t_end is None else self.t_end, generator)

    def settings(self) -> dict[str, Any]:
        """The config that builds this sampler again (`build_sampler(s.settings()) == s`)."""
        return {"name": self.name, **asdict(self)}

    def describe(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True)
class AdaptiveODE(Sampler):
    """The probability-flow ODE by an adaptive torchdiffeq method at rtol = atol = tol."""

    name: ClassVar[str] = "ode"
    tol: float = 1e-2
    method: str = "dopri5"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.method not in ADAPTIVE or self.tol <= 0:
            raise ValueError(f"sampler=ode needs an adaptive method ({', '.join(ADAPTIVE)}) and tol > 0, got "
                             f"{self.method!r}, {self.tol}; fixed steps are sampler=euler, heun or rk4")

    def draw(self, process: ReverseProcess, z_1: torch.Tensor, t_end: float,
             generator: torch.Generator | None = None) -> SampleOutput:
        return sample_ode(process, t_end=t_end, method=self.method, rtol=self.tol, atol=self.tol, z_1=z_1)

    def describe(self) -> str:
        return f"ode {self.method} tol {self.tol:g}"


@dataclass(frozen=True)
class FixedStepODE(Sampler):
    """The probability-flow ODE in `steps` steps of a fixed-step method on a time grid (`grids.GRIDS`: uniform,
    edm with its `rho`, logsnr); `evals` network evaluations per step."""

    solver: ClassVar[str] = ""
    evals: ClassVar[int] = 1
    steps: int = 8
    grid: str = "uniform"
    rho: float = 7.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.steps < 1 or self.grid not in GRIDS or self.rho <= 0:
            raise ValueError(f"sampler={self.name} needs steps >= 1, grid in {list(GRIDS)} and rho > 0, got "
                             f"{self.steps}, {self.grid!r}, {self.rho}")

    @classmethod
    def steps_for(cls, nfe: int) -> int:
        """The most steps that fit in `nfe` evaluations (0: not even one)."""
        return int(nfe) // cls.evals

    def draw(self, process: ReverseProcess, z_1: torch.Tensor, t_end: float,
             generator: torch.Generator | None = None) -> SampleOutput:
        return sample_fixed(process, self.solver, self.steps, self.grid, t_end, self.rho, z_1=z_1)

    def describe(self) -> str:
        grid = f"edm rho {self.rho:g}" if self.grid == "edm" else self.grid
        return f"{self.name} {self.steps} step{'' if self.steps == 1 else 's'} {grid}"


@dataclass(frozen=True)
class Euler(FixedStepODE):
    """Euler's method (1st order, 1 evaluation per step): the few-step sampler of a straight-mode prior."""

    name: ClassVar[str] = "euler"
    solver: ClassVar[str] = "euler"
    evals: ClassVar[int] = 1


@dataclass(frozen=True)
class Heun(FixedStepODE):
    """Heun's method (explicit trapezoid, 2nd order, 2 evaluations per step), EDM's deterministic sampler."""

    name: ClassVar[str] = "heun"
    solver: ClassVar[str] = "heun2"
    evals: ClassVar[int] = 2


@dataclass(frozen=True)
class RK4(FixedStepODE):
    """The classical 4th-order Runge-Kutta method (torchdiffeq's 3/8-rule variant, 4 evaluations per step)."""

    name: ClassVar[str] = "rk4"
    solver: ClassVar[str] = "rk4"
    evals: ClassVar[int] = 4
    steps: int = 2  # 8 NFE: `sample`'s default, as good as the adaptive ODE at tol 1e-5 in the sampler study (README)


@dataclass(frozen=True)
class ReverseSDE(Sampler):
    """Euler-Maruyama on the reverse SDE in `steps` equal steps."""

    name: ClassVar[str] = "sde"
    steps: int = 100

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.steps < 1:
            raise ValueError(f"sampler=sde needs steps >= 1, got {self.steps}")

    def draw(self, process: ReverseProcess, z_1: torch.Tensor, t_end: float,
             generator: torch.Generator | None = None) -> SampleOutput:
        return sample_sde(process, steps=self.steps, t_end=t_end, z_1=z_1, generator=generator)

    def describe(self) -> str:
        return f"sde {self.steps} steps"


@dataclass(frozen=True)
class DiscretePosterior(Sampler):
    """The paper's Algorithm 2 in `steps` steps, posterior noise eta (1: DDPM-like, 0: deterministic)."""

    name: ClassVar[str] = "discrete"
    steps: int = 100
    eta: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.steps < 1 or self.eta < 0:
            raise ValueError(f"sampler=discrete needs steps >= 1 and eta >= 0, got {self.steps}, {self.eta}")

    def check(self, process: ReverseProcess) -> None:
        if not process.process.has_discrete_posterior:
            raise ValueError("the discrete sampler (the paper's Algorithm 2) uses NDM's fixed noise schedule, and this "
                             "prior learns its noise (ndm/noise=neural): use sampler=ode, sde, euler, heun or rk4")

    def draw(self, process: ReverseProcess, z_1: torch.Tensor, t_end: float,
             generator: torch.Generator | None = None) -> SampleOutput:
        return sample_discrete(process, T=self.steps, t_end=t_end, eta=self.eta, z_1=z_1, generator=generator)

    def describe(self) -> str:
        return f"discrete {self.steps} steps eta {self.eta:g}"


def build_sampler(config: Mapping[str, Any] | Sampler) -> Sampler:
    """The sampler of a config mapping {name: ..., setting: value, ...} (a `configs/sampler/` file, or a mapping
    with only some settings: the rest are the class's defaults). One-sentence ValueError on an unknown name or
    setting."""
    if isinstance(config, Sampler):
        return config
    settings = dict(config)
    name = settings.pop("name", None)
    cls = Sampler.registry.get(str(name))
    if cls is None:
        raise ValueError(f"unknown sampler {name!r}; choose one of {sorted(Sampler.registry)}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ValueError(f"sampler={name} has no setting {', '.join(unknown)}; its settings are {sorted(known)}")
    return cls(**settings)
