"""Input validation and broadcasting shared by the math layer.

Every public function of the math layer calls these so that bad input raises one readable
`ValueError` instead of silently producing NaN.
"""

from __future__ import annotations

import torch


def append_dims(t: torch.Tensor, ndim: int) -> torch.Tensor:
    """Reshape a per-example tensor of shape (B,) to (B, 1, ..., 1) with `ndim` dimensions."""
    if t.ndim > ndim:
        raise ValueError(f"cannot broadcast a tensor with {t.ndim} dims to {ndim} dims")
    return t.reshape(t.shape + (1,) * (ndim - t.ndim))


def check_time(t: torch.Tensor, batch: int | None = None, name: str = "t") -> None:
    """Check that `t` has shape (B,), is finite and lies in [0, 1]."""
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape (B,), got {type(t).__name__}")
    if t.ndim != 1:
        raise ValueError(f"{name} must have shape (B,), got {tuple(t.shape)}")
    if batch is not None and t.shape[0] != batch:
        raise ValueError(f"{name} has batch size {t.shape[0]} but the data has batch size {batch}")
    if t.is_floating_point() is False:
        raise ValueError(f"{name} must be a floating-point tensor, got {t.dtype}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains non-finite values")
    if (t < 0).any() or (t > 1).any():
        raise ValueError(f"{name} must lie in [0, 1]; got values in [{t.min().item():.4g}, {t.max().item():.4g}]")


def check_finite(x: torch.Tensor, name: str = "x") -> None:
    """Raise a ValueError naming `name` when `x` holds NaN or inf."""
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")


def check_same_shape(a: torch.Tensor, b: torch.Tensor, names: tuple[str, str] = ("x", "x_hat")) -> None:
    """Raise a ValueError when two tensors that must match do not."""
    if a.shape != b.shape:
        raise ValueError(f"{names[0]} has shape {tuple(a.shape)} but {names[1]} has shape {tuple(b.shape)}")


def check_batch(x: torch.Tensor, name: str = "x") -> None:
    """Check that `x` is a floating tensor with a leading batch dimension and finite values."""
    if not isinstance(x, torch.Tensor) or x.ndim < 2:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a tensor of shape (B, ...) with at least 2 dims, got {shape}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {x.dtype}")
    check_finite(x, name)


def math_dtype(t: torch.Tensor) -> torch.dtype:
    """The dtype schedules and weights are computed in: at least float32, float64 if the input is."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32
