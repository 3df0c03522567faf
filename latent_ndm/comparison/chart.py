"""The NDM-vs-LSGM benchmark's chart (benchmark.png): bounds, FID, sampling NFE and speed against tolerance, step
time and memory, the paired differences with their 95% t-intervals, and their trade-off against step time; the
paper's numbers drawn as gray lines labelled as the paper's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from data_tools.files import atomic_write
from latent_ndm.comparison.report import COLORS, EQUAL_TIME, MODELS, PAPER, metric, ours


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


def _bpd_panel(ax: Any, models: dict[str, Any]) -> None:
    """NELBO (solid) and ODE NLL (hatched) bars per model, in the model's colour, both on the NLL's images; the axis
    zoomed onto the bars (it does not start at 0), the paper's bounds drawn only where they fall inside it."""
    names = ours(models)
    x, width = [float(i) for i in range(len(names))], 0.38
    nelbo = "nelbo_nll_images" if all(metric(models[m], "nelbo_nll_images", "nelbo_bpd") is not None
                                      for m in names) else "nelbo"
    summary_key = {"nelbo_nll_images": "nelbo_nll_images_bpd", "nelbo": "nelbo_bpd", "nll": "nll_bpd"}
    lows, highs = [], []
    for shift, (name, key, hatch) in zip((-width / 2, width / 2), ((nelbo, "nelbo_bpd", ""),
                                                                 ("nll", "nll_bpd", "//")), strict=True):
        for i, m in enumerate(names):
            value = metric(models[m], name, key)
            summary = models[m].get("seeds", {}).get(summary_key[name])
            se = None
            if summary is not None and summary["n"] > 1:  # the mean over seeds, with its standard error
                value, se = summary["mean"], summary["se"]
            if value is not None:
                ax.bar(x[i] + shift, value, width, color=COLORS[m], hatch=hatch, edgecolor="white",
                       yerr=se, capsize=4 if se is not None else 0)
                label = f"{value:.4f}" + (f"\n±{se:.4f}" if se is not None else "")
                ax.annotate(label, (x[i] + shift, value + (se or 0)), ha="center", va="bottom", fontsize=7)
                lows.append(value - (se or 0))
                highs.append(value + (se or 0))
    ax.set_xticks(x, [f"{m}\nNELBO | NLL (ours)" for m in names], fontsize=8)
    ax.set_ylabel("bits/dim (axis zoomed, not from 0)")
    if lows:
        ax.set_ylim(*zoomed_range(lows, highs))
    count = int(models[MODELS[0]]["evaluation"].get("nll", {}).get("count", 0))
    same = f", same {count} images" if nelbo == "nelbo_nll_images" else ""
    seeds = models[MODELS[0]].get("seeds", {}).get("nelbo_bpd", {}).get("n", 1)
    over = f"\nmean ± SE over {seeds} seeds" if seeds > 1 else ""
    ax.set_title(f"NELBO (solid), ODE NLL (hatched){same}; lower is better{over}", fontsize=9)
    _paper_lines(ax, "nll_bpd_upper_bound", ".2f")


def _fid_panel(ax: Any, models: dict[str, Any]) -> None:
    values = {m: metric(models[m], "fid", "fid") for m in MODELS}
    if all(v is None for v in values.values()):
        ax.text(0.5, 0.6, "FID not computed\n(give fid.stats=<reference statistics>)", ha="center",
                transform=ax.transAxes, fontsize=9)
        ax.set_xticks([])
    else:
        _bars(ax, values, "FID", "FID (lower is better)")
    ax.set_title("FID (lower is better)", fontsize=10)
    _paper_lines(ax, "fid", ".2f")


def _tolerance_panel(ax: Any, models: dict[str, Any], key: str, ylabel: str, title: str) -> None:
    for name in MODELS:
        sampling = models[name]["sampling"]
        ax.plot([s["tol"] for s in sampling], [s[key] for s in sampling], marker="o", label=name, color=COLORS[name])
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("ODE tolerance (rtol = atol)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)


def comparisons(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Every paired NELBO difference of a report, in order: the main comparison, the equal-time LSGM, each variant;
    each {"label", "mean", "se", "n", "step_ratio"} (the step-time ratio NDM / LSGM of that comparison; None for the
    equal-time one, whose LSGM is the main one's network)."""
    def step_ratio(r: dict[str, Any]) -> float | None:
        return r.get("ratios", {}).get("step_time")

    sources = [("main", report.get("paired"), step_ratio(report)),
               (f"vs {EQUAL_TIME}", report.get("paired_equal_time"), None)]
    sources += [(name, r.get("paired"), step_ratio(r)) for name, r in (report.get("variants") or {}).items()]
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


def write_chart(path: Path, report: dict[str, Any]) -> Path:
    """A 2x4 PNG: bpd, FID, NFE and images/s against tolerance, step time and memory (the paper's values drawn
    as gray lines labelled as the paper's), the paired differences, and their trade-off against step time."""
    plt = pyplot()
    models = report["models"]
    fig, axes = plt.subplots(2, 4, figsize=(19, 8))
    _bpd_panel(axes[0, 0], models)
    _fid_panel(axes[0, 1], models)
    _tolerance_panel(axes[0, 2], models, "nfe", "NFE", "ODE sampler: function evaluations")
    _tolerance_panel(axes[1, 0], models, "images_per_s", "images / s", "ODE sampler: images per second")
    _bars(axes[1, 1], {m: models[m]["step"]["ms"] for m in MODELS}, "ms",
          f"training step (x{report['ratios']['step_time']:.2f} NDM/LSGM)")
    _bars(axes[1, 2], {m: models[m]["step"]["memory_mib"] for m in MODELS}, "MiB",
          f"{models['NDM']['step']['memory_kind']} (x{report['ratios']['memory']:.2f})")
    rows = comparisons(report)
    _paired_panel(axes[0, 3], rows)
    _tradeoff_panel(axes[1, 3], rows)
    fig.suptitle(f"NDM vs LSGM, budget {report['budget']} steps, {report['hardware']} (ours); "
                 "gray lines: the paper's CelebA-HQ-256 numbers", fontsize=11)
    return save_png(fig, path)
