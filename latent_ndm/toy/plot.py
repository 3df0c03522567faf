"""The demo's figure: per model a row of its ODE trajectories, its adaptive-ODE samples and its K-step Euler samples;
a last row with what the NDM's learned F_phi does to the board.

The bottom row shows the held-out points pushed through F_phi(x, t) at each t, coloured by their square, so an
un-interleaving of the board would be visible; an arrow per point (a subset) goes from x to x + k (F(x, t) - x), with
one magnification k for the whole row (printed in the titles), so that a displacement too small to see at scale 1 is
still readable in direction and in growth over t.

matplotlib is imported inside the functions (Agg backend), so importing this module has no side effects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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
    seed: int = 0  # the seed whose models are drawn
    summary: str = ""  # a line for the figure title, e.g. the seed-statistics verdict
    euler: dict[str, dict[int, torch.Tensor]] = field(default_factory=dict)  # model -> K -> (m, 2) K-step samples
    euler_titles: dict[str, dict[str, str]] = field(default_factory=dict)  # model -> str(K) -> panel title


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


def magnification(displacement: float, target: float = 0.35) -> float:
    """The smallest factor k in 1, 2, 5, 10, 20, 50, ... with k * displacement >= target / 2 (board units), so that
    the arrows are visible but no longer than a fraction of a square; 1 for no displacement."""
    if not displacement > 0:
        return 1.0
    k, mantissas = 1.0, (2.0, 2.5, 2.0)  # 1 -> 2 -> 5 -> 10 -> 20 -> ...
    i = 0
    while k * displacement < target / 2.0 and k < 1e6:
        k *= mantissas[i % 3]
        i += 1
    return k


def _arrows(ax: Any, x: torch.Tensor, F: torch.Tensor, square: torch.Tensor, k: float, n: int = 250) -> None:
    """Arrows x -> x + k (F - x) for the first n points, coloured by square."""
    import matplotlib

    p, d = x[:n].double().numpy(), (k * (F[:n] - x[:n])).double().numpy()
    colours = matplotlib.colormaps["tab10"](square[:n].numpy() / 9.0)
    ax.quiver(p[:, 0], p[:, 1], d[:, 0], d[:, 1], color=colours, angles="xy", scale_units="xy", scale=1.0,
              width=0.004, alpha=0.9)


def save_figure(fig_data: FigureData, path: Path) -> None:
    """Write the PNG to `path`: one row per model (ODE trajectories, adaptive-ODE samples, then the samples of each
    K-step Euler sampler), and a last row with F_phi(x, t) of the held-out points at each of `F_times` (with
    magnified displacement arrows; the held-out data alone when there is no NDM)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(fig_data.samples)
    ks = sorted({k for per in fig_data.euler.values() for k in per})
    cols = max(2 + len(ks), len(fig_data.F_times) if fig_data.F_ndm else 1)
    fig, axes = plt.subplots(len(models) + 1, cols, figsize=(3.9 * cols, 3.9 * (len(models) + 1)), squeeze=False)
    for row, name in zip(axes, models, strict=False):
        _paths(row[0], fig_data.paths[name], fig_data.data, f"{name}: ODE trajectories z_1 -> x")
        _scatter(row[1], fig_data.samples[name], fig_data.titles[name], limits=BOARD_LIMITS)
        for ax, k in zip(row[2:], ks, strict=False):
            title = fig_data.euler_titles.get(name, {}).get(str(k), f"{name}: {k} Euler steps")
            _scatter(ax, fig_data.euler[name][k], title, limits=BOARD_LIMITS)
        for ax in row[2 + len(ks):]:
            ax.axis("off")
    bottom = axes[-1]
    if fig_data.F_ndm:
        shifts = [(F - fig_data.data).norm(dim=1).mean().item() for F in fig_data.F_ndm]
        k = magnification(max(shifts))
        for ax, t, F, shift in zip(bottom, fig_data.F_times, fig_data.F_ndm, shifts, strict=False):
            note = " = x" if t == 0 else f"\nmean |F - x| = {shift:.3f}; arrows x -> x + {k:g} (F - x)"
            _scatter(ax, F, f"NDM: F_phi(x, t={t:g}){note}", square=fig_data.square, limits=BOARD_LIMITS, size=3.0)
            if t != 0:
                _arrows(ax, fig_data.data, F, fig_data.square, k)
        used = len(fig_data.F_times)
    else:
        _scatter(bottom[0], fig_data.data, "held-out data (colour = square)", square=fig_data.square,
                 limits=BOARD_LIMITS, size=3.0)
        used = 1
    for ax in bottom[used:]:
        ax.axis("off")
    title = (f"2D checkerboard, seed {fig_data.seed}: one row per model (ODE trajectories, adaptive-ODE samples, "
             "K-step Euler samples, ED = energy distance to held-out data); last row: held-out x (colour = square) "
             "pushed through the NDM's learned F_phi(x, t)")
    fig.suptitle(title + (f"\n{fig_data.summary}" if fig_data.summary else ""), fontsize=12)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
