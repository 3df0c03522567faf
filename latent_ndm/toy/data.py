"""The 2D checkerboard of the NDM paper's Figure 2.

A 4x4 board on [-2, 2]^2 whose 8 squares (i, j) with i + j even are filled (i = column, j = row, both
counted from the bottom-left corner); the density is uniform on the filled squares, 1/8 per unit area,
so its differential entropy is log 8 = 2.079 nats, the reference NLL of the true density.
Each coordinate is marginally uniform on [-2, 2], so the data standard deviation is 4 / sqrt(12).
"""

from __future__ import annotations

import math

import torch

BOARD_HALF_WIDTH = 2.0  # the board is [-2, 2]^2
CHECKERBOARD_ENTROPY_NATS = math.log(8.0)  # H = log(area of the support) for a uniform density
CHECKERBOARD_STD = 4.0 / math.sqrt(12.0)  # std of U[-2, 2], per coordinate


def filled_squares() -> torch.Tensor:
    """Lower-left corners (x, y) of the 8 filled unit squares, shape (8, 2), in a fixed order (the square ids)."""
    corners = [(i - 2.0, j - 2.0) for j in range(4) for i in range(4) if (i + j) % 2 == 0]
    return torch.tensor(corners, dtype=torch.float64)


def sample_checkerboard(n: int, seed: int, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """n points uniform on the filled squares, deterministic given `seed`.

    Returns (x, square) with x of shape (n, 2) and `square` of shape (n,), the id (0..7) of each point's square.
    """
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    g = torch.Generator().manual_seed(seed)
    square = torch.randint(0, 8, (n,), generator=g)
    offset = torch.rand(n, 2, generator=g, dtype=torch.float64)
    x = filled_squares()[square] + offset
    return x.to(dtype), square


def square_id(x: torch.Tensor) -> torch.Tensor:
    """The id (0..7) of the filled square holding each point of x (n, 2), or -1 off the filled squares."""
    ij = torch.floor(x.to(torch.float64) + BOARD_HALF_WIDTH).long()  # column, row in 0..3 on the board
    on_board = ((ij >= 0) & (ij <= 3)).all(dim=1)
    filled = on_board & ((ij.sum(dim=1) % 2) == 0)
    lookup = torch.full((16,), -1, dtype=torch.long)
    corners = (filled_squares() + BOARD_HALF_WIDTH).long()
    lookup[corners[:, 1] * 4 + corners[:, 0]] = torch.arange(8)
    idx = (ij[:, 1] * 4 + ij[:, 0]).clamp(0, 15)
    return torch.where(filled, lookup[idx], torch.full_like(idx, -1))


def fraction_on_board(x: torch.Tensor) -> float:
    """The fraction of points of x (n, 2) that lie in a filled square (1.0 for data; a sample-quality check)."""
    return (square_id(x) >= 0).to(torch.float64).mean().item()
