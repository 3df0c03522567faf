"""The demo's figure: data, samples of both models, the learned F_phi(x, t) and ODE trajectories.

matplotlib is imported inside the functions (Agg backend), so importing this module has no side effects.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

BOARD_LIMITS = (-2.6, 2.6)
LATENT_LIMITS = (-3.5, 3.5)


@dataclass(frozen=True)
class FigureData:
    """Everything the figure shows; tensors on the CPU. `F_ndm[k]` is F(x_heldout, F_times[k]) of shape (n, 2)."""

    data: torch.Tensor  # (n, 2) held-out points
    square: torch.Tensor  # (n,) square id of each held-out point, for colouring
    samples: dict[str, torch.Tensor]  # model name -> (m, 2) ODE samples
    paths: dict[str, torch.Tensor]  # model name -> (n_times, B, 2) ODE paths z_1 -> z_eps
    F_times: list[float]
    F_ndm: list[torch.Tensor]
    titles: dict[str, str]  # model name -> a one-line summary for the sample panel


def _scatter(ax: Any, pts: torch.Tensor, title: str, square: torch.Tensor | None = None,
             limits: tuple[float, float] | None = None, size: float = 1.0) -> None:
    """A square scatter panel of points (n, 2), coloured by square id (n,) when given."""
    p = pts.detach().double().numpy()
    colour = {"c": "k"} if square is None else {"c": square.numpy(), "cmap": "tab10", "vmin": 0, "vmax": 9}
    ax.scatter(p[:, 0], p[:, 1], s=size, alpha=0.6, linewidths=0, **colour)
    ax.set_title(title, fontsize=10)
    ax.set_aspect("equal")
    if limits is not None:
        ax.set_xlim(*limits)
        ax.set_ylim(*limits)


def _paths(ax: Any, paths: torch.Tensor, background: torch.Tensor, title: str) -> None:
    """ODE paths (n_times, B, 2) from z_1 (blue) to z_eps (red), over faint data."""
    bg = background.double().numpy()
    ax.scatter(bg[:, 0], bg[:, 1], s=0.5, c="0.85", linewidths=0)
    p = paths.detach().double().numpy()
    for b in range(p.shape[1]):
        ax.plot(p[:, b, 0], p[:, b, 1], "-", color="0.3", lw=0.7, alpha=0.8)
    ax.scatter(p[0, :, 0], p[0, :, 1], s=10, c="tab:blue", label="z_1 ~ N(0, I)", zorder=3)
    ax.scatter(p[-1, :, 0], p[-1, :, 1], s=10, c="tab:red", label="z_eps", zorder=3)
    ax.legend(loc="lower right", fontsize=7)
    ax.set_title(title, fontsize=10)
    ax.set_aspect("equal")
    ax.set_xlim(*LATENT_LIMITS)
    ax.set_ylim(*LATENT_LIMITS)


def save_figure(fig_data: FigureData, path: Path) -> None:
    """Write the 2 x 5 panel PNG to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 5, figsize=(22, 9.2))
    top, bottom = axes
    _scatter(top[0], fig_data.data, "held-out data (colour = square)", square=fig_data.square, limits=BOARD_LIMITS,
             size=3.0)
    for ax, name in zip(top[1:3], ("ndm", "baseline"), strict=True):
        _scatter(ax, fig_data.samples[name], fig_data.titles[name], limits=BOARD_LIMITS)
    for ax, name, label in zip(top[3:], ("ndm", "baseline"), ("NDM", "baseline (F = id)"), strict=True):
        _paths(ax, fig_data.paths[name], fig_data.data, f"{label}: ODE trajectories z_1 -> x")
    for ax, t, F in zip(bottom, fig_data.F_times, fig_data.F_ndm, strict=True):
        shift = (F - fig_data.data).norm(dim=1).mean().item()
        note = " = x" if t == 0 else f", mean |F - x| = {shift:.3f}"
        _scatter(ax, F, f"NDM: learned F_phi(x, t={t:g}){note}", square=fig_data.square, size=3.0)
    fig.suptitle("2D checkerboard: NDM (learnable F_phi) vs F = identity (DDPM); colours = source square of x",
                 fontsize=12)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
