"""The learnable noise scale of the Gaussian NFDM forward process (Bartosh et al. 2024; docs/MATH.md section 11).

NDM learns the mean of q(z_t | x) and fixes its noise. The Gaussian NFDM forward process learns both:

    q(z_t | x) = N(alpha_t F(x, t), sigma(x, t)^2 I),   sigma(x, t) = sigma_t exp(L(x, t)),
    L(x, t) = t (1 - t) rho(x, t),

per example and per dimension. L vanishes at t = 0 and t = 1, so q(z_1 | x) has NDM's variance sigma_1^2 (the prior
term is NDM's) and the noise is exactly the schedule's at the data end. L = 0 is NDM, element for element.

`NoiseScale` returns L(x, t) and, in one forward-mode pass, its partial time derivative dL/dt (the same jvp as the
transforms': its `TransformOutput` holds L in `.F` and dL/dt in `.dF_dt`;
`ForwardProcess` hands them on as `Marginal.L` and `Marginal.dL_dt`). What L adds to the drifts is
`gaussian.noise_excess`: e = dL/dt + g^2 / (2 sigma_t^2) (exp(-2 L) - 1).
"""

from __future__ import annotations

from typing import ClassVar

import torch

from latent_ndm.diffusion.transforms import GatedNetwork


def boundary_weight(t: torch.Tensor) -> torch.Tensor:
    """w(t) = t (1 - t): zero at both ends of [0, 1], so L(x, 0) = L(x, 1) = 0."""
    return t * (1.0 - t)


class NoiseScale(GatedNetwork):
    """L(x, t) = t (1 - t) rho(x, t), the log of sigma(x, t) / sigma_t; `rho` = `net(x, t)` (`GatedNetwork`)."""

    kind: ClassVar[str] = "noise"
    role: ClassVar[str] = "noise-scale network"

    def gate(self, t: torch.Tensor) -> torch.Tensor:
        return boundary_weight(t)

    def base(self, x: torch.Tensor) -> None:
        return None
