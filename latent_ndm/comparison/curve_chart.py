"""The learning-curve chart of the benchmark's curve mode (curve.png): per axis (steps, wall-clock, FLOPs), the
validation bound of each model against it (mean over seeds with its 95% t band, every run's checkpoints as dots) and
the paired difference with its pointwise 95% t-interval and its simultaneous 95% band over the grid around a zero line,
the band's verdict changes marked (`latent_ndm.comparison.curve`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from latent_ndm.comparison.chart import pyplot, save_png
from latent_ndm.comparison.curve import AXIS_TITLES, Curve, metric_label
from latent_ndm.comparison.report import COLORS


def _models_panel(ax: Any, section: dict[str, Any], axis: str) -> None:
    r = section["axes"][axis]
    bound = metric_label(section["metric"])
    for name in (section["name"], section["baseline"]):
        color = COLORS.get(name, "tab:gray")
        for run in section["runs"][name]:  # the checkpoints themselves, before interpolation
            c = Curve(tuple(run["steps"]), tuple(run["seconds"]), tuple(run["nelbo"]))
            ax.plot(c.along(axis, section["flops_per_step"][name]), c.nelbo, ".", color=color, alpha=0.35,
                    markersize=3)
        if not r["rows"]:
            continue
        xs = [row["x"] for row in r["rows"]]
        means = [row["models"][name]["mean"] for row in r["rows"]]
        ax.plot(xs, means, "-", color=color, label=f"{name} (mean of {section['seeds']})")
        if all(row["models"][name]["ci"] is not None for row in r["rows"]):
            ax.fill_between(xs, [row["models"][name]["ci"][0] for row in r["rows"]],
                            [row["models"][name]["ci"][1] for row in r["rows"]], color=color, alpha=0.2,
                            label=f"{name} 95% t-interval")
    ax.set_xlabel(r["label"], fontsize=8)
    ax.set_ylabel(f"validation {bound} (bits/dim)", fontsize=8)
    ax.set_title(f"{bound} at {AXIS_TITLES[axis]}: dots the checkpoints" + (
        "" if axis == "steps" else ",\nlines interpolated between checkpoints") + ("" if r["rows"] else
                                                                                   f"\n({r['summary']})"), fontsize=9)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)


def _paired_panel(ax: Any, section: dict[str, Any], axis: str) -> None:
    r = section["axes"][axis]
    name, baseline = section["name"], section["baseline"]
    ax.axhline(0.0, color="gray", linewidth=1)
    ax.set_xlabel(r["label"], fontsize=8)
    ax.set_ylabel(f"{name} - {baseline} (bits/dim; < 0: {name} lower)", fontsize=8)
    if not r["rows"]:
        ax.text(0.5, 0.5, r["summary"], ha="center", transform=ax.transAxes, fontsize=8, wrap=True)
        return
    xs = [row["x"] for row in r["rows"]]
    ax.plot(xs, [row["paired"]["mean"] for row in r["rows"]], "-o", color="tab:blue", markersize=3,
            label="paired difference, mean over seeds")
    if all(row["paired"]["ci"] is not None for row in r["rows"]):
        ax.fill_between(xs, [row["paired"]["ci"][0] for row in r["rows"]],
                        [row["paired"]["ci"][1] for row in r["rows"]], color="tab:blue", alpha=0.2,
                        label="95% t-interval (n - 1 dof), pointwise")
    band = r.get("band")
    if band and band["critical"] is not None:
        ax.plot(xs, [row["band"]["ci"][0] for row in r["rows"]], "--", color="tab:purple", linewidth=1,
                label=f"95% simultaneous band ({band['method']})")
        ax.plot(xs, [row["band"]["ci"][1] for row in r["rows"]], "--", color="tab:purple", linewidth=1)
    for change in r["band_changes"] if band else r["changes"]:  # a section saved before bands: pointwise changes
        ax.axvline(change["x"], color="tab:red", linestyle=":", linewidth=1)
        ax.annotate(change["to"], (change["x"], 0), textcoords="offset points", xytext=(3, 5), fontsize=7,
                    color="tab:red", rotation=90)
    one_seed = r["rows"][0]["paired"]["se"] is None
    ax.set_title(f"paired difference at {AXIS_TITLES[axis]}" + ("\n(one seed: no interval, no verdict)" if one_seed
                                                                else ""), fontsize=9)
    ax.legend(fontsize=7)


def write_curve_chart(path: Path, section: dict[str, Any]) -> Path:
    """A 2 x 3 PNG of a curve section: the models' bound (top) and the paired difference (bottom) against steps,
    wall-clock and FLOPs."""
    plt = pyplot()
    axes_names = list(section["axes"])
    fig, axes = plt.subplots(2, len(axes_names), figsize=(6 * len(axes_names), 8), squeeze=False)
    for i, axis in enumerate(axes_names):
        _models_panel(axes[0, i], section, axis)
        _paired_panel(axes[1, i], section, axis)
    flops = section["flops_per_step"]
    name, baseline = section["name"], section["baseline"]
    fig.suptitle(f"learning curves, {section['seeds']} seed(s) per model, validation every {section.get('every', '?')} "
                 f"steps; FLOPs per step {name} {flops[name]:.3g}, {baseline} {flops[baseline]:.3g} "
                 "(validation not counted)", fontsize=10)
    return save_png(fig, path)
