"""Forward transforms F(x, t) of the NDM forward process q(z_t | x) = N(alpha_t F(x, t), sigma_t^2 I).

Each transform returns F and its partial time derivative dF/dt together (`F_and_dF_dt`), the latter
in one forward-mode pass. dF/dt is the partial in t with x held fixed: for F(x_hat, t) the caller passes
x_hat as a plain tensor, so nothing is differentiated through x_hat(z_t, t).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from latent_ndm.checks import append_dims, check_batch, check_time

JvpMethod = Literal["forward", "double_vjp"]


@dataclass(frozen=True)
class TransformOutput:
    """F(x, t) and dF/dt(x, t), both of the shape of x."""

    F: torch.Tensor
    dF_dt: torch.Tensor


class Transform(nn.Module):
    """Base class: `forward(x, t) -> F(x, t)`; `F_and_dF_dt(x, t) -> TransformOutput`."""

    is_identity: bool = False

    def F_and_dF_dt(self, x: torch.Tensor, t: torch.Tensor) -> TransformOutput:
        raise NotImplementedError

    @staticmethod
    def _check(x: torch.Tensor, t: torch.Tensor) -> None:
        check_batch(x, "x")
        check_time(t, x.shape[0])


class IdentityTransform(Transform):
    """F(x, t) = x: DDPM/VDM in data space, LSGM in latent space (the baseline)."""

    is_identity = True

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self._check(x, t)
        return x

    def F_and_dF_dt(self, x: torch.Tensor, t: torch.Tensor) -> TransformOutput:
        self._check(x, t)
        return TransformOutput(F=x, dF_dt=torch.zeros_like(x))


class JvpTransform(Transform):
    """A transform given by `forward(x, t)`; dF/dt comes from one Jacobian-vector product in t.

    jvp_method "forward" uses torch.func.jvp (forward-mode AD, one pass); "double_vjp" uses
    torch.autograd.functional.jvp with create_graph=True (two reverse passes), for networks whose ops
    lack forward-mode formulas. Both keep the graph so the loss can be backpropagated through dF/dt.
    """

    def __init__(self, jvp_method: JvpMethod = "forward") -> None:
        super().__init__()
        if jvp_method not in ("forward", "double_vjp"):
            raise ValueError(f"jvp_method must be 'forward' or 'double_vjp', got {jvp_method!r}")
        self.jvp_method = jvp_method

    def F_and_dF_dt(self, x: torch.Tensor, t: torch.Tensor) -> TransformOutput:
        self._check(x, t)
        t = t.to(x.dtype).contiguous()  # an expanded (stride-0) t cannot carry a tangent
        ones = torch.ones_like(t)

        def F_of_t(t_: torch.Tensor) -> torch.Tensor:
            return self.forward(x, t_)

        with torch.autocast(device_type=x.device.type, enabled=False):
            if self.jvp_method == "forward":
                F, dF_dt = torch.func.jvp(F_of_t, (t,), (ones,))
            else:
                with torch.enable_grad():
                    t_req = t.detach().requires_grad_(True)
                    F, dF_dt = torch.autograd.functional.jvp(F_of_t, t_req, ones, create_graph=True)
        return TransformOutput(F=F, dF_dt=dF_dt)


class NeuralTransform(JvpTransform):
    """F_phi(x, t) = x + t * G_phi(x, t), so F(x, 0) = x (the recommended NDM transform).

    `net(x, t)` is any time-conditioned network returning a tensor of the shape of x (TimeMLP, UNet).
    """

    def __init__(self, net: nn.Module, jvp_method: JvpMethod = "forward") -> None:
        super().__init__(jvp_method)
        self.net = net

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        G = self.net(x, t)
        if G.shape != x.shape:
            raise ValueError(f"transform network returned shape {tuple(G.shape)} for input {tuple(x.shape)}")
        return x + append_dims(t.to(x.dtype), x.ndim) * G
