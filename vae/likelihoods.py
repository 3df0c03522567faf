"""Decoder likelihoods p(x|z) over images x in [-1, 1] of shape (B, C, H, W), discretised to a b-bit grid.

Bin convention (PixelCNN++ / NVAE, generalised to b bits): with n = 2^b bins, the k-th value is
x_k = 2 k / (n - 1) - 1, k = 0..n-1 (so -1 and +1 are themselves bin centres), and bin k covers
[x_k - h, x_k + h] with half-width h = 1 / (n - 1). The edge bins extend to -inf (k = 0) and +inf (k = n - 1),
so the pmf sums to exactly 1 over the n values and needs no dequantisation offset. For b = 8 this is
the usual x = k / 255 * 2 - 1, h = 1/255. `log_prob(x)` expects x on this grid (see `quantize`); it returns
log p(x) in nats summed over channels and pixels, shape (B,). Computations run in float32 (float64 if given).

Numerics: log(sigmoid(a) - sigmoid(b)) = logsigmoid(a) + logsigmoid(-b) + log(1 - exp(-(a - b))), a - b = 2h/s,
is exact and stable in both tails, so the discretised logistic needs no PixelCNN++ mid-bin fallback.
The Gaussian uses log Phi on the reflected bin (bin in the left tail) and falls back to the mid-bin density
pdf(x) * 2h only where the bin is so narrow relative to the scale (2h/s < 1e-3) that the CDF difference cancels.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from einops import rearrange

LOG_SCALE_MIN = -7.0  # PixelCNN++ lower clamp on log-scales: s >= 9e-4, i.e. < 1/30 of an 8-bit bin
_NARROW_BIN = 1e-3  # 2h/s below which the Gaussian uses the mid-bin density


def quantize(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Map an image in [-1, 1] (8-bit grid) to the b-bit grid, still in [-1, 1].

    k8 = round(255 (x + 1) / 2), k_b = floor(k8 / 2^(8 - b)), x_b = 2 k_b / (2^b - 1) - 1
    (docs/MATH.md section 7, at 5 bits: floor(255 x / 8) / 31 for x in [0, 1]). Off-grid input is first rounded to
    8 bits. Idempotent: a b-bit image is mapped to itself.
    """
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be in 1..8 to quantize 8-bit data, got {bits}")
    k8 = torch.round((x.clamp(-1.0, 1.0) + 1.0) * 127.5)
    k_b = torch.div(k8, 2 ** (8 - bits), rounding_mode="floor")
    return k_b * (2.0 / (2**bits - 1)) - 1.0


class BinGrid:
    """The b-bit grid of the module docstring: `num_bins` values, `half_width` h, `snap` to the nearest value."""

    def __init__(self, bits: int) -> None:
        if not isinstance(bits, int) or not 1 <= bits <= 16:
            raise ValueError(f"bits must be an int in 1..16, got {bits!r}")
        self.bits = bits
        self.num_bins = 2**bits
        self.half_width = 1.0 / (self.num_bins - 1)

    def centres(self, device: torch.device | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """All bin centres x_k = 2k/(n-1) - 1, shape (n,)."""
        return torch.arange(self.num_bins, device=device, dtype=dtype) * (2.0 * self.half_width) - 1.0

    def snap(self, x: torch.Tensor) -> torch.Tensor:
        """The centre of the bin containing x (edge bins take everything beyond +-1)."""
        k = torch.round((x + 1.0) / (2.0 * self.half_width)).clamp(0, self.num_bins - 1)
        return k * (2.0 * self.half_width) - 1.0


def _log1mexp(d: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(-d)) for d > 0, stable for small and large d (Maechler 2012); d is clamped to >= 1e-30."""
    ln2 = math.log(2.0)  # each branch sees only its own range, so neither yields inf gradients under where
    small, large = d.clamp(1e-30, ln2), d.clamp_min(ln2)
    return torch.where(d < ln2, torch.log(-torch.expm1(-small)), torch.log1p(-torch.exp(-large)))


def _log_ndtr(z: torch.Tensor, z_far: float = -30.0) -> torch.Tensor:
    """log Phi(z); below `z_far` the asymptotic series -z^2/2 - log(-z sqrt(2 pi)) + log(1 - z^-2 + 3 z^-4 - 15 z^-6)
    (error < 1e-10), because torch's log_ndtr backward overflows in float32 for z < -400."""
    far = z.clamp(max=z_far)
    w = far.pow(-2)
    series = -0.5 * far**2 - torch.log(-far) - 0.5 * math.log(2.0 * math.pi) + torch.log1p(w * (-1 + w * (3 - 15 * w)))
    return torch.where(z < z_far, series, torch.special.log_ndtr(z.clamp(min=z_far)))


def discretized_logistic_log_prob(
    x: torch.Tensor, mu: torch.Tensor, log_scale: torch.Tensor, grid: BinGrid
) -> torch.Tensor:
    """Elementwise log P(bin of x) under Logistic(mu, s = exp(log_scale)); shapes broadcast."""
    h = grid.half_width
    inv_s = torch.exp(-log_scale)
    plus, minus = (x - mu + h) * inv_s, (x - mu - h) * inv_s
    log_cdf_plus, log_sf_minus = F.logsigmoid(plus), F.logsigmoid(-minus)
    interior = log_cdf_plus + log_sf_minus + _log1mexp(2.0 * h * inv_s)
    return torch.where(x < -1.0 + h, log_cdf_plus, torch.where(x > 1.0 - h, log_sf_minus, interior))


def discretized_gaussian_log_prob(
    x: torch.Tensor, mu: torch.Tensor, log_scale: torch.Tensor, grid: BinGrid
) -> torch.Tensor:
    """Elementwise log P(bin of x) under N(mu, s^2), s = exp(log_scale); shapes broadcast."""
    h = grid.half_width
    inv_s = torch.exp(-log_scale)
    centred = x - mu
    # Phi(a) - Phi(b) = Phi(-b) - Phi(-a): reflect so the bin sits left of the mean, where log_ndtr is exact.
    reflected = -centred.abs()
    log_cdf_hi = _log_ndtr((reflected + h) * inv_s)
    log_cdf_lo = _log_ndtr((reflected - h) * inv_s)
    interior = log_cdf_hi + _log1mexp(log_cdf_hi - log_cdf_lo)
    mid = -0.5 * (centred * inv_s) ** 2 - 0.5 * math.log(2.0 * math.pi) + math.log(2.0 * h) - log_scale
    interior = torch.where(2.0 * h * inv_s < _NARROW_BIN, mid, interior)
    bottom = _log_ndtr((centred + h) * inv_s)
    top = _log_ndtr(-(centred - h) * inv_s)
    return torch.where(x < -1.0 + h, bottom, torch.where(x > 1.0 - h, top, interior))


ChannelLogProb = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, BinGrid], torch.Tensor]


def _channel_mode(loc: torch.Tensor, log_scale: torch.Tensor, grid: BinGrid, log_prob: ChannelLogProb) -> torch.Tensor:
    """Most probable bin of a discretised unimodal location-scale law: the bin of loc or one of the two edges."""
    candidates = torch.stack([grid.snap(loc), torch.full_like(loc, -1.0), torch.full_like(loc, 1.0)])
    best = log_prob(candidates, loc, log_scale, grid).argmax(dim=0, keepdim=True)
    return candidates.gather(0, best)[0]


def _as_float(t: torch.Tensor) -> torch.Tensor:
    """Half-precision network outputs are upcast: likelihoods are computed in float32 (float64 kept)."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _check_image(x: torch.Tensor, shape: tuple[int, ...]) -> None:
    if not isinstance(x, torch.Tensor) or tuple(x.shape) != shape:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must have shape {shape} (B, C, H, W) to match the likelihood, got {got}")


class DiscretizedGaussian:
    """Independent discretised Gaussians per sub-pixel: p(x) = prod_i P(bin of x_i | mu_i, s_i).

    Args:
        mean: mu, shape (B, C, H, W). logscale: log s, same shape, clamped below at `log_scale_min`.
    """

    def __init__(
        self, mean: torch.Tensor, logscale: torch.Tensor, bits: int = 8, log_scale_min: float = LOG_SCALE_MIN
    ) -> None:
        if mean.ndim != 4 or mean.shape != logscale.shape:
            raise ValueError(
                f"mean and logscale must share a shape (B, C, H, W), got {tuple(mean.shape)}, {tuple(logscale.shape)}"
            )
        self.grid = BinGrid(bits)
        self.bits, self.num_bins = self.grid.bits, self.grid.num_bins
        self.loc = _as_float(mean)
        self.log_scale = _as_float(logscale).clamp_min(log_scale_min)

    @staticmethod
    def num_params(channels: int = 3) -> int:
        """Decoder output channels: a mean and a log-scale per image channel."""
        return 2 * channels

    @classmethod
    def from_params(cls, params: torch.Tensor, bits: int = 8, channels: int = 3) -> DiscretizedGaussian:
        """params (B, 2C, H, W): means in the first C channels, log-scales in the last C."""
        if params.ndim != 4 or params.shape[1] != cls.num_params(channels):
            raise ValueError(f"params must have shape (B, {2 * channels}, H, W), got {tuple(params.shape)}")
        mean, logscale = params.chunk(2, dim=1)
        return cls(mean, logscale, bits=bits)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) in nats, shape (B,); x on the b-bit grid in [-1, 1]."""
        _check_image(x, tuple(self.loc.shape))
        log_p = discretized_gaussian_log_prob(x.to(self.loc.dtype), self.loc, self.log_scale, self.grid)
        return log_p.flatten(1).sum(1)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """An exact sample from the pmf: the bin of mu + s * eps, eps ~ N(0, 1)."""
        eps = torch.randn(self.loc.shape, generator=generator, device=self.loc.device, dtype=self.loc.dtype)
        return self.grid.snap(self.loc + torch.exp(self.log_scale) * eps)

    def mean(self) -> torch.Tensor:
        """mu clamped to [-1, 1] (the continuous mean, not the pmf's mean)."""
        return self.loc.clamp(-1.0, 1.0)

    def mode(self) -> torch.Tensor:
        """The exact most probable value of each sub-pixel."""
        return _channel_mode(self.loc, self.log_scale, self.grid, discretized_gaussian_log_prob)


class DiscretizedMixtureOfLogistics:
    """PixelCNN++ discretised mixture of M logistics with channel-autoregressive means.

    Per pixel, component m has weight pi_m = softmax(logits)_m, log-scales l_{c,m} and locations
    mu'_{c,m} = mu_{c,m} + sum_{j<c} a_{c,j,m} x_j, a = tanh(raw coefficients); for RGB the mean of G depends
    on R (a_{1,0}) and that of B on R and G (a_{2,0}, a_{2,1}). p(x) = sum_m pi_m prod_c P(bin of x_c | mu', l).
    Channel layout of params (B, M (1 + 2C + C(C-1)/2), H, W), each group ordered (channel, component):
    [logits (M) | mu (C*M) | log-scales (C*M) | raw coefficients (C(C-1)/2 * M), pairs (1,0), (2,0), (2,1), ...].
    For C = 3 that is M * 10 channels.
    """

    def __init__(
        self,
        params: torch.Tensor,
        bits: int = 8,
        num_mix: int = 10,
        channels: int = 3,
        log_scale_min: float = LOG_SCALE_MIN,
    ) -> None:
        expected = self.num_params(channels, num_mix)
        if params.ndim != 4 or params.shape[1] != expected:
            raise ValueError(
                f"params must have shape (B, {expected}, H, W) for {channels} channels and {num_mix} "
                f"components, got {tuple(params.shape)}"
            )
        self.grid = BinGrid(bits)
        self.bits, self.num_bins = self.grid.bits, self.grid.num_bins
        self.channels, self.num_mix = channels, num_mix
        b, _, h, w = params.shape
        self.image_shape = (b, channels, h, w)
        num_coeffs = channels * (channels - 1) // 2
        logits, mu, log_scale, coeffs = _as_float(params).split(
            [num_mix, channels * num_mix, channels * num_mix, num_coeffs * num_mix], dim=1
        )
        self.log_weights = F.log_softmax(logits, dim=1)  # (B, M, H, W)
        self.mu = rearrange(mu, "b (c m) h w -> b c m h w", c=channels)
        self.log_scale = rearrange(log_scale, "b (c m) h w -> b c m h w", c=channels).clamp_min(log_scale_min)
        self.coeffs = rearrange(torch.tanh(coeffs), "b (k m) h w -> b k m h w", k=num_coeffs)

    @staticmethod
    def num_params(channels: int = 3, num_mix: int = 10) -> int:
        """Decoder output channels: M * (1 + 2C + C(C-1)/2), i.e. 10 M for RGB."""
        return num_mix * (1 + 2 * channels + channels * (channels - 1) // 2)

    @classmethod
    def from_params(
        cls, params: torch.Tensor, bits: int = 8, num_mix: int = 10, channels: int = 3
    ) -> DiscretizedMixtureOfLogistics:
        return cls(params, bits=bits, num_mix=num_mix, channels=channels)

    def _location(self, c: int, previous: list[torch.Tensor], mu: torch.Tensor, coeffs: torch.Tensor):
        """mu'_c = mu_c + sum_{j<c} a_{c,j} x_j, with the coefficient index of the pair (c, j)."""
        loc = mu[:, c]
        first = c * (c - 1) // 2
        for j, x_j in enumerate(previous):
            loc = loc + coeffs[:, first + j] * x_j
        return loc

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) in nats, shape (B,); x on the b-bit grid in [-1, 1]."""
        _check_image(x, self.image_shape)
        x = x.to(self.mu.dtype)
        log_p = self.log_weights
        for c in range(self.channels):
            previous = [x[:, j, None] for j in range(c)]  # (B, 1, H, W) broadcast over components
            loc = self._location(c, previous, self.mu, self.coeffs)
            log_p = log_p + discretized_logistic_log_prob(x[:, c, None], loc, self.log_scale[:, c], self.grid)
        return torch.logsumexp(log_p, dim=1).flatten(1).sum(1)

    def _select(self, component: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Parameters of one component per pixel; component (B, H, W) of indices -> (B, C|K, H, W)."""
        one_hot = rearrange(F.one_hot(component, self.num_mix).to(self.mu.dtype), "b h w m -> b 1 m h w")
        return tuple((t * one_hot).sum(dim=2) for t in (self.mu, self.log_scale, self.coeffs))

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """An exact sample from the pmf: a Gumbel-max component, then channel by channel the bin of
        mu' + s * logistic noise, each channel conditioned on the already quantised ones."""
        kw = {"generator": generator, "device": self.mu.device, "dtype": self.mu.dtype}
        tiny = torch.finfo(self.mu.dtype).tiny
        u_mix = torch.rand(self.log_weights.shape, **kw).clamp(tiny, 1.0 - 1e-7)
        component = (self.log_weights - torch.log(-torch.log(u_mix))).argmax(dim=1)
        mu, log_scale, coeffs = self._select(component)
        u = torch.rand(self.image_shape, **kw).clamp(1e-7, 1.0 - 1e-7)
        noise = torch.log(u) - torch.log1p(-u)
        xs: list[torch.Tensor] = []
        for c in range(self.channels):
            loc = self._location(c, xs, mu, coeffs)
            xs.append(self.grid.snap(loc + torch.exp(log_scale[:, c]) * noise[:, c]))
        return torch.stack(xs, dim=1)

    def mean(self) -> torch.Tensor:
        """Mean of the continuous mixture, E[x_c] = sum_m pi_m E_m[x_c] with E_m[x_c] = mu_c + sum a E_m[x_j],
        clamped to [-1, 1] (not the discretised pmf's mean; they differ only near the edges)."""
        means: list[torch.Tensor] = []
        for c in range(self.channels):
            means.append(self._location(c, means, self.mu, self.coeffs))
        weights = self.log_weights.exp()
        return torch.stack([(weights * m).sum(dim=1) for m in means], dim=1).clamp(-1.0, 1.0)

    def mode(self) -> torch.Tensor:
        """Greedy mode: the most probable component per pixel, then channel by channel its most probable bin."""
        mu, log_scale, coeffs = self._select(self.log_weights.argmax(dim=1))
        xs: list[torch.Tensor] = []
        for c in range(self.channels):
            loc = self._location(c, xs, mu, coeffs)
            xs.append(_channel_mode(loc, log_scale[:, c], self.grid, discretized_logistic_log_prob))
        return torch.stack(xs, dim=1)


LIKELIHOODS: dict[str, type] = {"dml": DiscretizedMixtureOfLogistics, "gaussian": DiscretizedGaussian}
