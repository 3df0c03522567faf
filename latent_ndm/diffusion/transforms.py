"""Forward transforms F(x, t) of the NDM forward process q(z_t | x) = N(alpha_t F(x, t), sigma_t^2 I) (NDM eq. 7;
docs/MATH.md section 2).

Each transform returns F and its partial time derivative dF/dt together (`F_and_dF_dt`), the latter
in one forward-mode pass. dF/dt is the partial in t with x held fixed: for F(x_hat, t) the caller passes
x_hat as a plain tensor, so nothing is differentiated through x_hat(z_t, t).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import nn

from latent_ndm.diffusion.checks import append_dims, check_batch, check_time

JvpMethod = Literal["forward", "double_vjp"]


@dataclass(frozen=True)
class TransformOutput:
    """F(x, t) and dF/dt(x, t), both of the shape of x (dF_dt is None where it was not asked for)."""

    F: torch.Tensor
    dF_dt: torch.Tensor | None


class Transform(nn.Module):
    """Base class: `forward(x, t) -> F(x, t)`; `F_and_dF_dt(x, t) -> TransformOutput`;
    `evaluate(x, times, derivative)` for F at several times of one x, sharing work where the transform can."""

    kind: ClassVar[str] = "custom"  # identity (LSGM), separable, neural: what the model is called after

    def F_and_dF_dt(self, x: torch.Tensor, t: torch.Tensor) -> TransformOutput:
        raise NotImplementedError

    def evaluate(self, x: torch.Tensor, times: Sequence[torch.Tensor],
                 derivative: Sequence[bool]) -> list[TransformOutput]:
        """F(x, t_j) for each t_j of shape (B,), with dF/dt where derivative[j]: one batched forward for all
        the plain evaluations and one batched jvp for all the derivatives."""
        if len(times) != len(derivative):
            raise ValueError("times and derivative must have the same length")
        B, out = x.shape[0], [None] * len(times)
        for want in (False, True):
            idx = [j for j, d in enumerate(derivative) if d == want]
            if not idx:
                continue
            xs, ts = torch.cat([x] * len(idx)), torch.cat([times[j] for j in idx])
            res = self.F_and_dF_dt(xs, ts) if want else TransformOutput(self(xs, ts), None)
            Fs = res.F.split(B)
            dFs = res.dF_dt.split(B) if want else [None] * len(idx)
            for k, j in enumerate(idx):
                out[j] = TransformOutput(F=Fs[k], dF_dt=dFs[k])
        return out

    @staticmethod
    def _check(x: torch.Tensor, t: torch.Tensor) -> None:
        check_batch(x, "x")
        check_time(t, x.shape[0])


class IdentityTransform(Transform):
    """F(x, t) = x: DDPM/VDM in data space, LSGM in latent space (the baseline)."""

    kind: ClassVar[str] = "identity"

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self._check(x, t)
        return x

    def F_and_dF_dt(self, x: torch.Tensor, t: torch.Tensor) -> TransformOutput:
        self._check(x, t)
        return TransformOutput(F=x, dF_dt=torch.zeros_like(x))

    def evaluate(self, x: torch.Tensor, times: Sequence[torch.Tensor],
                 derivative: Sequence[bool]) -> list[TransformOutput]:
        for t in times:
            self._check(x, t)
        return [TransformOutput(F=x, dF_dt=torch.zeros_like(x) if d else None) for d in derivative]


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


class GatedNetwork(JvpTransform):
    """out(x, t) = base(x) + gate(t) * net(x, t), with dout/dt by the jvp: the shape of `NeuralTransform` (base x,
    gate t) and of the NFDM noise scale (`noise.NoiseScale`: base 0, gate t (1 - t)). `net(x, t)` is any
    time-conditioned network returning a tensor of the shape of x (TimeMLP, UNet); it runs with autocast off, for
    plain evaluations as inside the jvp, so the output is one function in the dtype of x at every t."""

    role: ClassVar[str] = "transform network"  # how an error names the network

    def __init__(self, net: nn.Module, jvp_method: JvpMethod = "forward") -> None:
        super().__init__(jvp_method)
        self.net = net

    def gate(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def base(self, x: torch.Tensor) -> torch.Tensor | None:
        """What the gated network is added to (None: nothing)."""
        return x

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            out = self.net(x, t)
        if out.shape != x.shape:
            raise ValueError(f"{self.role} returned shape {tuple(out.shape)} for input {tuple(x.shape)}")
        gated = append_dims(self.gate(t.to(x.dtype)), x.ndim) * out
        base = self.base(x)
        return gated if base is None else base + gated


class NeuralTransform(GatedNetwork):
    """F_phi(x, t) = x + t * G_phi(x, t), so F(x, 0) = x (the recommended NDM transform)."""

    kind: ClassVar[str] = "neural"

    def gate(self, t: torch.Tensor) -> torch.Tensor:
        return t


class SeparableTransform(Transform):
    """F_phi(x, t) = x + t sum_{k<K} phi_k(t) H_k(x), phi_k(t) = cos(k pi t): F(x, 0) = x, smooth in t.

    One pass of the network H (called as net(x, 0), returning K times the channels of x along dim 1) gives F and
    the exact dF/dt = sum_k [phi_k(t) + t phi_k'(t)] H_k(x) at every t, so F(x, t), dF/dt(x, t), F(x, t_0) and
    F(x, 1) of one x cost a single forward pass (no forward-mode AD). The time dependence is restricted to the
    span of K basis functions; the dependence on x is a full network.
    """

    kind: ClassVar[str] = "separable"

    def __init__(self, net: nn.Module, num_basis: int = 8) -> None:
        super().__init__()
        if num_basis < 1:
            raise ValueError(f"num_basis must be >= 1, got {num_basis}")
        self.net, self.num_basis = net, int(num_basis)

    @classmethod
    def from_factory(cls, net: Callable[..., nn.Module], in_channels: int, num_basis: int = 8) -> SeparableTransform:
        """The transform whose network is `net(out_channels=num_basis * in_channels)` (e.g. a partial U-Net)."""
        return cls(net(out_channels=num_basis * in_channels), num_basis=num_basis)

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        """H(x) of shape (B, K, *x.shape[1:]). The network runs with autocast off (as `NeuralTransform`'s does), so
        F and dF/dt keep the dtype of x under bf16-mixed training."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            h = self.net(x, torch.zeros(x.shape[0], device=x.device, dtype=x.dtype))
        if h.shape[0] != x.shape[0] or h.shape[1] != self.num_basis * x.shape[1] or h.shape[2:] != x.shape[2:]:
            raise ValueError(f"transform network returned shape {tuple(h.shape)} for input {tuple(x.shape)}; "
                             f"it must have {self.num_basis} x {x.shape[1]} channels")
        return h.reshape(x.shape[0], self.num_basis, *x.shape[1:])

    def combine(self, x: torch.Tensor, H: torch.Tensor, t: torch.Tensor, derivative: bool) -> TransformOutput:
        """F (and dF/dt) at times t from the heads H."""
        k = torch.arange(self.num_basis, device=x.device, dtype=H.dtype) * torch.pi
        tt = t.to(H.dtype)[:, None]
        phi, dphi = torch.cos(k * tt), -k * torch.sin(k * tt)  # (B, K)
        G = torch.einsum("bk,bk...->b...", phi, H)
        tx = append_dims(tt[:, 0], x.ndim)
        F = x + tx * G
        dF = G + tx * torch.einsum("bk,bk...->b...", dphi, H) if derivative else None
        return TransformOutput(F=F, dF_dt=dF)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self._check(x, t)
        return self.combine(x, self.heads(x), t, derivative=False).F

    def F_and_dF_dt(self, x: torch.Tensor, t: torch.Tensor) -> TransformOutput:
        self._check(x, t)
        return self.combine(x, self.heads(x), t, derivative=True)

    def evaluate(self, x: torch.Tensor, times: Sequence[torch.Tensor],
                 derivative: Sequence[bool]) -> list[TransformOutput]:
        for t in times:
            self._check(x, t)
        H = self.heads(x)
        return [self.combine(x, H, t, d) for t, d in zip(times, derivative, strict=True)]
