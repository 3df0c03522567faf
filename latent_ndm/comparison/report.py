"""The NDM-vs-LSGM benchmark's outputs: a markdown table, a JSON of every number and a PNG chart.

`report` is a plain dict (written as benchmark.json):
    {"budget", "seeds", "command", "hardware", "tolerances", "notes",
     "paired": {"nelbo_bpd" | "nll_bpd": {"differences", "mean", "se", "n", "verdict"}} (NDM - LSGM by seed),
     "models": {"NDM" | "LSGM": {"run", "transform", "steps", "evaluation": {metric: evaluation.json entry},
                                 "seeds": {"per_seed": [{"seed", "run", "nelbo_bpd", "nll_bpd", ...}],
                                           "nelbo_bpd" | "nll_bpd" | ...: {"mean", "se", "n"}},
                                 "sampling": [{"tol", "nfe", "images_per_s", "num", "seconds"}],
                                 "step": {"ms", "times_ms", "memory_mib", "memory_kind", "batch_size"}}},
     "ratios": {"step_time", "memory"}, "paper": PAPER}
The paper's numbers are kept apart from ours (`paper`), and every place that shows them says whose they are.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from data_tools.files import atomic_write, atomic_write_text
from latent_ndm.comparison import few_step
from latent_ndm.stats import number, short_verdict

MODELS = ("NDM", "LSGM")
EQUAL_TIME = "LSGM (equal time)"  # with match=time: the LSGM trained for the NDM's wall-clock
COLORS = {"NDM": "tab:blue", "LSGM": "tab:orange", EQUAL_TIME: "tab:green"}
PAPER_LABEL = "paper (Bartosh et al., CelebA-HQ-256; not ours)"
PAPER = {  # NDM paper, CelebA-HQ-256: upper bounds on NLL in bits/dim and FID (their numbers, not produced here)
    "source": "Bartosh et al., Neural Diffusion Models (ICML 2024), CelebA-HQ-256",
    "LSGM": {"nll_bpd_upper_bound": 0.70, "fid": 7.22},
    "NDM": {"nll_bpd_upper_bound": 0.65, "fid": 7.18},
}
DASH = "—"


def _num(value: float | None, fmt: str) -> str:
    return DASH if value is None or not math.isfinite(value) else format(value, fmt)


def metric(model: dict[str, Any], name: str, key: str) -> float | None:
    """A number of the model's evaluation (None when that metric was not computed)."""
    entry = model["evaluation"].get(name)
    return None if entry is None else float(entry[key])


def tol_label(tol: float) -> str:
    return f"{tol:.0e}".replace("e-0", "e-")


def header(tolerances: list[float], memory_kind: str) -> list[str]:
    mem = "peak mem (MiB)" if "CUDA" in memory_kind else "saved act. (MiB)"
    return (["model", "NELBO bpd", "NELBO bpd (NLL images)", "NLL bpd", "FID"]
            + [f"NFE@{tol_label(t)}" for t in tolerances]
            + [f"img/s@{tol_label(t)}" for t in tolerances] + ["train step (ms)", mem])


def over_seeds(model: dict[str, Any], key: str, name: str, field: str) -> str:
    """mean ± SE over the seeds when there are several, else seed 0's number."""
    summary = model.get("seeds", {}).get(key)
    if summary is not None and summary["n"] > 1:
        return f"{summary['mean']:.4f} ± {number(summary['se'])}"
    return _num(metric(model, name, field), ".4f")


def model_row(name: str, model: dict[str, Any], tolerances: list[float]) -> list[str]:
    """A model's cells, with dashes for what was not measured on it: sampling speed (variants), sampling and step
    cost (the equal-time LSGM, the same network as the LSGM row)."""
    model = {"sampling": [{"nfe": None, "images_per_s": None}] * len(tolerances),
             "step": {"ms": None, "memory_mib": None}, **model}
    sampling = model["sampling"]
    return ([f"{name} (F: {model['transform']}, {model['steps']} steps)",
             over_seeds(model, "nelbo_bpd", "nelbo", "nelbo_bpd"),
             over_seeds(model, "nelbo_nll_images_bpd", "nelbo_nll_images", "nelbo_bpd"),
             over_seeds(model, "nll_bpd", "nll", "nll_bpd"),
             _num(metric(model, "fid", "fid"), ".2f")]
            + [_num(s["nfe"], ".0f") for s in sampling] + [_num(s["images_per_s"], ".2f") for s in sampling]
            + [_num(model["step"]["ms"], ".1f"), _num(model["step"]["memory_mib"], ".1f")])


def paper_row(name: str, width: int) -> list[str]:
    p = PAPER[name]
    row = [f"{PAPER_LABEL}: {'latent NDM' if name == 'NDM' else 'LSGM'}", DASH, DASH,
           f"≤ {p['nll_bpd_upper_bound']:.2f}", f"{p['fid']:.2f}"]
    return row + [DASH] * (width - len(row))


def markdown(report: dict[str, Any]) -> str:
    """The table, then the lines that say how it was produced."""
    models, tols = report["models"], report["tolerances"]
    cols = header(tols, models["NDM"]["step"]["memory_kind"])
    rows = ([model_row(name, models[name], tols) for name in ours(models)]
            + [paper_row(name, len(cols)) for name in MODELS])
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join(["---"] + ["---:"] * (len(cols) - 1)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    r = report["ratios"]
    nll = models["NDM"]["evaluation"].get("nll", {})
    nelbo = models["NDM"]["evaluation"].get("nelbo", {})
    seeds = report.get("seeds", 1)
    lines += [
        "",
        f"- seeds: {seeds} per model ("
        + (f"training seeds 0..{seeds - 1}, each NDM paired with the LSGM of its seed); " if seeds > 1 else
           "training seed 0); ")
        + ("bounds are mean ± standard error over the seeds, sampling and step cost are seed 0's"
           if seeds > 1 else "one seed: no error bars, so no difference between the models can be claimed"),
        *paired_lines(report),
        *wall_clock_lines(models),
        *other_cutoff_lines(models),
        f"- hardware: {report['hardware']}",
        f"- command: `{report['command']}`",
        f"- budget: {report['budget']} optimizer steps per model (same VAE export and data)",
        f"- NDM / LSGM: train step time x{_num(r['step_time'], '.2f')}, "
        f"{models['NDM']['step']['memory_kind']} x{_num(r['memory'], '.2f')} "
        f"(batch {models['NDM']['step']['batch_size']}, median of {len(models['NDM']['step']['times_ms'])} steps)",
        f"- NELBO on {int(nelbo.get('count', 0))} held-out images; NLL (probability-flow ODE) on the first "
        f"{int(nll.get('count', 0))}, beside the NELBO of the same images and encoder samples; NFE and images/s: "
        "ODE sampler (dopri5, rtol = atol = tol) on "
        f"{models['NDM']['sampling'][0]['num'] if models['NDM']['sampling'] else 0} samples, decoding included",
        f"- the {PAPER_LABEL} rows are the paper's reported CelebA-HQ-256 numbers (upper bounds on NLL), for "
        "reference only; they are not results of this code or of this data",
    ]
    lines += [f"- note: {note}" for note in report.get("notes", [])]
    lines += few_step.markdown(report.get("few_step"))
    lines += variants_markdown(report)
    return "\n".join(lines) + "\n"


def variants_markdown(report: dict[str, Any]) -> list[str]:
    """The summary across the main comparison and its variants (paired NELBO difference each), then each variant's
    own table and lines."""
    variants = report.get("variants") or {}
    if not variants:
        return []
    lines = ["", "## Variants", "",
             "| comparison | train overrides | NDM NELBO bpd | LSGM NELBO bpd | NDM - LSGM, paired by seed | "
             "step time NDM / LSGM |",
             "|---|---|---:|---:|---|---:|"]
    for name, r in {"main": report, **variants}.items():
        overrides = ", ".join(r.get("train_overrides", [])) or "(the main comparison)"
        p = r.get("paired", {}).get("nelbo_bpd")
        lines.append(f"| {name} | {overrides} | {over_seeds(r['models']['NDM'], 'nelbo_bpd', 'nelbo', 'nelbo_bpd')} | "
                     f"{over_seeds(r['models']['LSGM'], 'nelbo_bpd', 'nelbo', 'nelbo_bpd')} | "
                     f"{short_verdict(p) if p else DASH} | x{_num(r['ratios']['step_time'], '.2f')} |")
    for name, r in variants.items():
        tols = r["tolerances"]
        cols = header(tols, r["models"]["NDM"]["step"]["memory_kind"])
        lines += ["", f"### Variant {name}: {', '.join(r['train_overrides'])}", "",
                  "| " + " | ".join(cols) + " |", "|" + "|".join(["---"] + ["---:"] * (len(cols) - 1)) + "|"]
        lines += ["| " + " | ".join(model_row(m, r["models"][m], tols)) + " |" for m in ours(r["models"])]
        lines += ["", *paired_lines(r),
                  f"- NDM / LSGM: train step time x{_num(r['ratios']['step_time'], '.2f')}",
                  *wall_clock_lines(r["models"]), *[f"- note: {note}" for note in r.get("notes", [])]]
    return lines


def paired_lines(report: dict[str, Any]) -> list[str]:
    """A line per paired difference of a comparison: against the LSGM at equal steps, then at equal time."""
    lines = [f"- paired {key.removesuffix('_bpd').upper()}: {p['verdict']}"
             for key, p in report.get("paired", {}).items()]
    return lines + [f"- paired {key.removesuffix('_bpd').upper()}, against the {EQUAL_TIME}: {p['verdict']}"
                    for key, p in report.get("paired_equal_time", {}).items()]


def ours(models: dict[str, Any]) -> list[str]:
    """The models of a report in table order: NDM, LSGM, then the equal-time LSGM when there is one."""
    return [m for m in (*MODELS, EQUAL_TIME) if m in models]


def other_cutoff_lines(models: dict[str, Any]) -> list[str]:
    """The NLL at the other cut-off (`nll.other_t_eps`), seed 0, beside the table's (taken at the training t_eps)."""
    parts, t_eps = [], None
    for name in ours(models):
        other = models[name]["evaluation"].get("nll", {}).get("at_other_t_eps")
        if other is not None:
            t_eps = other["settings"]["t_eps"]
            parts.append(f"{name} {other['nll_bpd']:.4f}")
    if not parts:
        return []
    main = models["NDM"]["evaluation"]["nll"]["settings"]["t_eps"]
    return [f"- NLL bpd at t_eps {t_eps:g} instead of the training t_eps {main:g} (the table's; the priors were not "
            f"trained below it), seed 0: {', '.join(parts)}"]


def wall_clock_lines(models: dict[str, Any]) -> list[str]:
    """The training wall-clock of each model (fit, validation included; mean over seeds), where recorded."""
    parts = []
    for name in ours(models):
        seconds = models[name].get("seeds", {}).get("train_seconds")
        if seconds is not None:
            mean = seconds["mean"]
            parts.append(f"{name} {mean:.0f} s" if mean >= 100 else f"{name} {mean:.1f} s")
            parts[-1] += f" ({models[name]['steps']} steps)"
    return [f"- training wall-clock (fit, validation included, mean over seeds): {', '.join(parts)}"] if parts else []


def write_json(path: Path, report: dict[str, Any]) -> Path:
    atomic_write_text(path, json.dumps(report, indent=2, sort_keys=True) + "\n")
    return path


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
    return [{"label": label, "mean": p["mean"], "se": p["se"], "n": p["n"], "step_ratio": ratio}
            for label, paired, ratio in sources if (p := (paired or {}).get("nelbo_bpd")) is not None]


def symlog_threshold(rows: list[dict[str, Any]], spread: float = 20.0) -> float | None:
    """When the paired differences span more than `spread` times their smallest reach |mean| + 2 SE (a T = 10
    variant beside F sizes), the linear range of a symlog axis that keeps the small ones readable: twice that
    smallest reach. None: a linear axis shows them all."""
    reach = [abs(r["mean"]) + 2 * (r["se"] or 0.0) for r in rows]
    small = min(reach, default=0.0)
    if small <= 0 or max(reach) <= spread * small:
        return None
    return 2 * small


def _paired_panel(ax: Any, rows: list[dict[str, Any]]) -> None:
    """NDM - baseline per comparison, with 2 SE bars around a zero line: a bar clear of zero is a difference."""
    if not rows:
        ax.text(0.5, 0.5, "no paired comparison", ha="center", transform=ax.transAxes, fontsize=9)
        return
    y = list(range(len(rows)))[::-1]
    for yi, r in zip(y, rows, strict=True):
        err = None if r["se"] is None else 2 * r["se"]
        ax.errorbar(r["mean"], yi, xerr=err, fmt="o", color="tab:blue", capsize=4)
    ax.axvline(0.0, color="gray", linewidth=1)
    ax.set_yticks(y, [f"{r['label']} (n={r['n']})" for r in rows], fontsize=7)
    linear = symlog_threshold(rows)
    if linear is not None:
        ax.set_xscale("symlog", linthresh=linear)
    ax.set_xlabel("NDM - baseline, NELBO bits/dim (< 0: NDM lower)", fontsize=8)
    notes = [f"symlog axis, linear within ±{linear:.2g}"] if linear is not None else []
    notes += ["one seed: no error bar, no verdict"] if any(r["se"] is None for r in rows) else []
    ax.set_title("paired difference by seed, mean ± 2 SE" + "".join(f"\n({n})" for n in notes), fontsize=9)


def _tradeoff_panel(ax: Any, rows: list[dict[str, Any]]) -> None:
    """Paired NELBO difference against the step-time ratio of each comparison that has one: the price of F."""
    rows = [r for r in rows if r["step_ratio"] is not None]
    if not rows:
        ax.text(0.5, 0.5, "no step-time ratio", ha="center", transform=ax.transAxes, fontsize=9)
        return
    for r in rows:
        err = None if r["se"] is None else 2 * r["se"]
        ax.errorbar(r["step_ratio"], r["mean"], yerr=err, fmt="o", capsize=4, color="tab:blue")
        ax.annotate(r["label"], (r["step_ratio"], r["mean"]), textcoords="offset points", xytext=(5, 3), fontsize=7)
    ax.axhline(0.0, color="gray", linewidth=1)
    ax.set_xlim(0.9, max(r["step_ratio"] for r in rows) + 0.5)  # from LSGM's own cost, x1
    linear = symlog_threshold(rows)
    if linear is not None:
        ax.set_yscale("symlog", linthresh=linear)
    ax.set_xlabel("training step time NDM / LSGM")
    ax.set_ylabel("NDM - LSGM NELBO (bits/dim), ± 2 SE" + ("" if linear is None else f"\nsymlog, linear within "
                                                               f"±{linear:.2g}"), fontsize=8)
    ax.set_title("what F costs and what it buys (lower-left is better)", fontsize=10)


def write_chart(path: Path, report: dict[str, Any]) -> Path:
    """A 2x4 PNG: bpd, FID, NFE and images/s against tolerance, step time and memory (the paper's values drawn
    as gray lines labelled as the paper's), the paired differences, and their trade-off against step time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    fig.tight_layout()
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    finally:
        plt.close(fig)
    return path
