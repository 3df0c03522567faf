"""The NDM-vs-LSGM benchmark's chart (benchmark.png): the metrics' panels (`Metric.panels`: bounds, FID, ...), then
sampling NFE and speed against tolerance, step time and memory, the paired differences with their 95% t-intervals,
and their trade-off against step time; the paper's numbers drawn as gray lines labelled as the paper's."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_tools.files import atomic_write
from latent_ndm.comparison.report import COLORS, EQUAL_TIME, MODELS, PAPER, Comparison, ModelReport, ours
from latent_ndm.evaluation.metrics import Metric


def _bars(ax: Any, values: dict[str, float | None], ylabel: str, title: str) -> None:
    names = [n for n in MODELS if values.get(n) is not None]
    ax.bar(names, [values[n] for n in names], color=[COLORS[n] for n in names])
    for i, n in enumerate(names):
        ax.annotate(f"{values[n]:.3g}", (i, values[n]), ha="center", va="bottom", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)


def _paper_lines(ax: Any, key: str, fmt: str) -> None:
    """The paper's two numbers as gray lines where they fall inside the axis, else named in a corner note."""
    lo, hi = ax.get_ylim()
    outside = []
    for name, style in (("LSGM", ":"), ("NDM", "--")):
        value, label = PAPER[name][key], "latent NDM" if name == "NDM" else "LSGM"
        if lo <= value <= hi:
            ax.axhline(value, color="gray", linestyle=style, linewidth=1,
                       label=f"paper's {label} ({format(value, fmt)}; CelebA-HQ-256, not ours)")
        else:
            outside.append(f"{label} {format(value, fmt)}")
    if outside:
        ax.text(0.01, 0.99, f"paper (CelebA-HQ-256, not ours), off this axis: {', '.join(outside)}",
                transform=ax.transAxes, ha="left", va="top", fontsize=6, color="gray")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=6, loc="upper right")
    ax.set_ylim(lo, hi)


def zoomed_range(lows: list[float], highs: list[float], margin: float = 0.35) -> tuple[float, float]:
    """y-limits that show the spread of bars from `lows` to `highs` (value -+ error): bars of 4.61 and 4.63 bits/dim
    drawn from 0 look equal. The range spans them with `margin` of their spread on each side (at least 0.01)."""
    lo, hi = min(lows), max(highs)
    pad = max(margin * (hi - lo), 0.01)
    return lo - pad, hi + 2 * pad  # room above for the labels


def _tolerance_panel(ax: Any, models: dict[str, ModelReport], key: str, ylabel: str, title: str) -> None:
    for name in MODELS:
        sampling = models[name].sampling or []
        ax.plot([s["tol"] for s in sampling], [s[key] for s in sampling], marker="o", label=name, color=COLORS[name])
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("ODE tolerance (rtol = atol)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)


def comparisons(report: Comparison) -> list[dict[str, Any]]:
    """Every paired NELBO difference of a report, in order: the main comparison, the equal-time LSGM, each variant;
    each {"label", "mean", "se", "n", "step_ratio"} (the step-time ratio NDM / LSGM of that comparison; None for the
    equal-time one, whose LSGM is the main one's network)."""
    def step_ratio(r: Comparison) -> float | None:
        return r.ratios.get("step_time")

    sources = [("main", report.paired, step_ratio(report)),
               (f"vs {EQUAL_TIME}", report.paired_equal_time, None)]
    sources += [(name, r.paired, step_ratio(r)) for name, r in report.variants.items()]
    return [{"label": label, "mean": p["mean"], "se": p["se"], "n": p["n"], "ci": p.get("ci"),
             "outcome": p.get("outcome"), "step_ratio": ratio}
            for label, paired, ratio in sources if (p := (paired or {}).get("nelbo_bpd")) is not None]


def _error(r: dict[str, Any]) -> list[list[float]] | None:
    """The 95% interval of a comparison as matplotlib's asymmetric error bar (None: one seed)."""
    if r.get("ci") is None:
        return None
    return [[r["mean"] - r["ci"][0]], [r["ci"][1] - r["mean"]]]


def _reach(r: dict[str, Any]) -> float:
    return max(abs(r["ci"][0]), abs(r["ci"][1])) if r.get("ci") else abs(r["mean"])


def symlog_threshold(rows: list[dict[str, Any]], spread: float = 20.0) -> float | None:
    """When the paired differences span more than `spread` times their smallest reach (the far end of the 95%
    interval; a T = 10 variant beside F sizes), the linear range of a symlog axis that keeps the small ones readable:
    twice that smallest reach. None: a linear axis shows them all."""
    reach = [_reach(r) for r in rows]
    small = min(reach, default=0.0)
    if small <= 0 or max(reach) <= spread * small:
        return None
    return 2 * small


def _paired_panel(ax: Any, rows: list[dict[str, Any]]) -> None:
    """NDM - baseline per comparison, with its 95% t-interval around a zero line: an interval clear of zero is a
    difference (at that comparison's own level; the report says where Holm's correction decided otherwise)."""
    if not rows:
        ax.text(0.5, 0.5, "no paired comparison", ha="center", transform=ax.transAxes, fontsize=9)
        return
    y = list(range(len(rows)))[::-1]
    for yi, r in zip(y, rows, strict=True):
        ax.errorbar(r["mean"], yi, xerr=_error(r), fmt="o", color="tab:blue", capsize=4)
    ax.axvline(0.0, color="gray", linewidth=1)
    ax.set_yticks(y, [f"{r['label']} (n={r['n']}): {r['outcome'] or 'no verdict'}" for r in rows], fontsize=7)
    linear = symlog_threshold(rows)
    if linear is not None:
        ax.set_xscale("symlog", linthresh=linear)
    ax.set_xlabel("NDM - baseline, NELBO bits/dim (< 0: NDM lower)", fontsize=8)
    notes = [f"symlog axis, linear within ±{linear:.2g}"] if linear is not None else []
    notes += ["one seed: no error bar, no verdict"] if any(r["se"] is None for r in rows) else []
    ax.set_title("paired difference by seed, mean and 95% t-interval (n - 1 dof)" + "".join(f"\n({n})" for n in notes),
                 fontsize=9)


def _tradeoff_panel(ax: Any, rows: list[dict[str, Any]]) -> None:
    """Paired NELBO difference against the step-time ratio of each comparison that has one: the price of F."""
    rows = [r for r in rows if r["step_ratio"] is not None]
    if not rows:
        ax.text(0.5, 0.5, "no step-time ratio", ha="center", transform=ax.transAxes, fontsize=9)
        return
    for r in rows:
        ax.errorbar(r["step_ratio"], r["mean"], yerr=_error(r), fmt="o", capsize=4, color="tab:blue")
        ax.annotate(r["label"], (r["step_ratio"], r["mean"]), textcoords="offset points", xytext=(5, 3), fontsize=7)
    ax.axhline(0.0, color="gray", linewidth=1)
    ax.set_xlim(0.9, max(r["step_ratio"] for r in rows) + 0.5)  # from LSGM's own cost, x1
    linear = symlog_threshold(rows)
    if linear is not None:
        ax.set_yscale("symlog", linthresh=linear)
    ax.set_xlabel("training step time NDM / LSGM")
    ax.set_ylabel("NDM - LSGM NELBO (bits/dim), 95% interval" + ("" if linear is None else f"\nsymlog, linear within "
                                                               f"±{linear:.2g}"), fontsize=8)
    ax.set_title("what F costs and what it buys (lower-left is better)", fontsize=10)


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (no display needed), imported when a chart is drawn, not at start-up."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig: Any, path: Path) -> Path:
    """Lay `fig` out and write it to `path` as a 100-dpi PNG, atomically (a temporary file, then a rename); the
    figure is closed either way."""
    plt = pyplot()
    fig.tight_layout()
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    finally:
        plt.close(fig)
    return path


@dataclass
class View:
    """What a metric's panel draws from (`latent_ndm.evaluation.metrics.base.ChartView`): the models in table order,
    the compared pair, their colours, and the chart's helpers."""

    models: Mapping[str, ModelReport]
    names: list[str]
    pair: tuple[str, ...] = MODELS
    colors: Mapping[str, str] = field(default_factory=lambda: COLORS)

    def bars(self, ax: Any, values: Mapping[str, float | None], ylabel: str, title: str) -> None:
        _bars(ax, dict(values), ylabel, title)

    def paper_lines(self, ax: Any, key: str, fmt: str) -> None:
        _paper_lines(ax, key, fmt)

    def zoomed_range(self, lows: list[float], highs: list[float]) -> tuple[float, float]:
        return zoomed_range(lows, highs)


COLUMNS = 4
FIXED = 6  # the panels after the metrics': NFE, paired, images/s, step time, memory, trade-off


def draw(report: Comparison) -> Any:
    """The figure: the metrics' panels in registry order, then NFE and images/s against tolerance, the paired
    differences, step time and memory (the paper's values drawn as gray lines labelled as the paper's), and the
    trade-off against step time; four panels a row (2x4 with the built-in metrics' two panels)."""
    plt = pyplot()
    models = report.models
    steps = {m: models[m].step for m in MODELS}
    panels = [panel for cls in Metric.registry.values() for panel in cls.panels()]
    rows = -(-(len(panels) + FIXED) // COLUMNS)
    fig, grid = plt.subplots(rows, COLUMNS, figsize=(19, 4 * rows))
    axes = list(grid.flat)
    view = View(models, ours(models))
    for ax, panel in zip(axes, panels, strict=False):
        panel(ax, view)
    nfe, paired, speed, step, memory, tradeoff, *unused = axes[len(panels):]
    _tolerance_panel(nfe, models, "nfe", "NFE", "ODE sampler: function evaluations")
    _tolerance_panel(speed, models, "images_per_s", "images / s", "ODE sampler: images per second")
    _bars(step, {m: s.ms if s else None for m, s in steps.items()}, "ms",
          f"training step (x{report.ratios['step_time']:.2f} NDM/LSGM)")
    _bars(memory, {m: s.memory_mib if s else None for m, s in steps.items()}, "MiB",
          f"{steps['NDM'].memory_kind if steps['NDM'] else ''} (x{report.ratios['memory']:.2f})")
    rows_ = comparisons(report)
    _paired_panel(paired, rows_)
    _tradeoff_panel(tradeoff, rows_)
    for ax in unused:
        ax.set_axis_off()
    fig.suptitle(f"NDM vs LSGM, budget {report.budget} steps, {report.hardware} (ours); "
                 "gray lines: the paper's CelebA-HQ-256 numbers", fontsize=11)
    return fig


def write_chart(path: Path, report: Comparison) -> Path:
    """The chart of `draw`, written to `path` as a PNG."""
    return save_png(draw(report), path)
