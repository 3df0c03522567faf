"""The VAE posterior q(z|x) = N(z; mu, diag(sigma^2)) as a distribution object.

Every per-example quantity (`log_prob`, `entropy`, `kl`) is summed over all non-batch dimensions and is in nats,
so it has shape (B,). The log-variance is clamped to [LOGVAR_MIN, LOGVAR_MAX] = [-30, 20]
(sigma in [3e-7, 2.2e4]): wide enough never to bind for a trained encoder, narrow enough that exp(logvar) and
1/var stay finite in float32 (and that an untrained encoder cannot produce inf/NaN in the KL).
Half-precision inputs (an autocast encoder) are upcast to float32; float64 is kept.
"""

from __future__ import annotations

import math

import torch

LOGVAR_MIN = -30.0
LOGVAR_MAX = 20.0
_LOG_2PI = math.log(2.0 * math.pi)


def _sum_per_example(x: torch.Tensor) -> torch.Tensor:
    """Sum over every dimension except the first: (B, ...) -> (B,)."""
    return x.flatten(start_dim=1).sum(dim=1)


class DiagonalGaussian:
    """N(mean, diag(exp(logvar))) over tensors of shape (B, ...), e.g. latents (B, C, H, W).

    Args:
        mean: mu, shape (B, ...) with at least 2 dims.
        logvar: log sigma^2, same shape as `mean`; clamped to [LOGVAR_MIN, LOGVAR_MAX].
    """

    def __init__(self, mean: torch.Tensor, logvar: torch.Tensor) -> None:
        if not isinstance(mean, torch.Tensor) or not isinstance(logvar, torch.Tensor):
            raise ValueError("mean and logvar must be torch.Tensors")
        if mean.ndim < 2:
            raise ValueError(f"mean must have shape (B, ...) with at least 2 dims, got {tuple(mean.shape)}")
        if mean.shape != logvar.shape:
            raise ValueError(f"mean has shape {tuple(mean.shape)} but logvar has shape {tuple(logvar.shape)}")
        if not mean.is_floating_point() or not logvar.is_floating_point():
            raise ValueError(f"mean and logvar must be floating point, got {mean.dtype} and {logvar.dtype}")
        if mean.dtype in (torch.float16, torch.bfloat16):  # autocast encoders: the math runs in float32
            mean, logvar = mean.float(), logvar.float()
        self.mean = mean
        self.logvar = logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)

    @classmethod
    def from_params(cls, params: torch.Tensor, dim: int = 1) -> DiagonalGaussian:
        """Split `params` in two halves along `dim` (mean first, then logvar), e.g. (B, 2C, H, W) -> C + C."""
        if params.shape[dim] % 2 != 0:
            raise ValueError(f"params must have an even size along dim {dim}, got shape {tuple(params.shape)}")
        mean, logvar = params.chunk(2, dim=dim)
        return cls(mean, logvar)

    @property
    def shape(self) -> torch.Size:
        return self.mean.shape

    @property
    def var(self) -> torch.Tensor:
        """sigma^2 = exp(logvar)."""
        return torch.exp(self.logvar)

    @property
    def std(self) -> torch.Tensor:
        """sigma = exp(logvar / 2)."""
        return torch.exp(0.5 * self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """Reparameterised sample z = mu + sigma * eps, eps ~ N(0, I); differentiable in mu and logvar."""
        eps = torch.randn(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + self.std * eps

    def mode(self) -> torch.Tensor:
        """The mode (= mean) mu."""
        return self.mean

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log q(z) = -1/2 sum[log 2 pi + logvar + (z - mu)^2 / sigma^2], shape (B,)."""
        if z.shape != self.mean.shape:
            raise ValueError(f"z has shape {tuple(z.shape)} but the distribution has shape {tuple(self.shape)}")
        log_density = -0.5 * (_LOG_2PI + self.logvar + (z - self.mean) ** 2 * torch.exp(-self.logvar))
        return _sum_per_example(log_density)

    def entropy(self) -> torch.Tensor:
        """H[q] = 1/2 sum[log(2 pi e) + logvar], shape (B,)."""
        return _sum_per_example(0.5 * (_LOG_2PI + 1.0 + self.logvar))

    def kl_elements(self) -> torch.Tensor:
        """KL(self || N(0, I)) of every element, same shape as the mean: 1/2 (mu^2 + sigma^2 - 1 - logvar)."""
        return 0.5 * (self.mean**2 + self.var - 1.0 - self.logvar)

    def kl(self, other: DiagonalGaussian | None = None) -> torch.Tensor:
        """KL(self || other), shape (B,); `other=None` means N(0, I).

        KL = 1/2 sum[logvar_o - logvar + (sigma^2 + (mu - mu_o)^2) / sigma_o^2 - 1];
        against N(0, I): 1/2 sum[mu^2 + sigma^2 - 1 - logvar].
        """
        if other is None:
            return _sum_per_example(self.kl_elements())
        if not isinstance(other, DiagonalGaussian):
            raise ValueError(f"other must be a DiagonalGaussian or None, got {type(other).__name__}")
        if other.shape != self.shape:
            raise ValueError(f"cannot take the KL between shapes {tuple(self.shape)} and {tuple(other.shape)}")
        kl = 0.5 * (
            other.logvar - self.logvar + (self.var + (self.mean - other.mean) ** 2) * torch.exp(-other.logvar) - 1.0
        )
        return _sum_per_example(kl)

    def __repr__(self) -> str:
        return f"DiagonalGaussian(shape={tuple(self.shape)}, dtype={self.mean.dtype})"
