"""The NDM-vs-LSGM benchmark's outputs: a markdown table and a JSON of every number (the PNG chart: `chart`).

`report` is a plain dict (written as benchmark.json):
    {"budget", "seeds", "command", "hardware", "tolerances", "notes",
     "paired": {"nelbo_bpd" | "nll_bpd": {"differences", "mean", "se", "n", "dof", "t", "p", "ci", "outcome",
                                          "verdict"}} (NDM - LSGM by seed; latent_ndm/stats.py),
     "holm": {metric: [the labels of the comparisons decided together by Holm's correction]},
     "models": {"NDM" | "LSGM": {"run", "transform", "steps", "evaluation": {metric: evaluation.json entry},
                                 "seeds": {"per_seed": [{"seed", "run", "nelbo_bpd", "nll_bpd", ...}],
                                           "nelbo_bpd" | "nll_bpd" | ...: {"mean", "se", "n"}},
                                 "sampling": [{"tol", "nfe", "images_per_s", "num", "seconds"}],
                                 "step": {"ms", "times_ms", "memory_mib", "memory_kind", "batch_size"}}},
     "ratios": {"step_time", "memory"}, "paper": PAPER,
     "curve" (curve=true): the learning curves compared at equal steps, wall-clock and FLOPs (`curve.compare_curves`)}
The paper's numbers are kept apart from ours (`paper`), and every place that shows them says whose they are.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from data_tools.files import atomic_write_text
from latent_ndm.comparison import curve, few_step
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
           if seeds > 1 else "one seed: no error bars, so no verdict on the models"),
        *(["- verdicts: the paired t with n - 1 dof; a model is lower only where the 95% interval of the difference "
           "excludes 0, else inconclusive"
           + (f"; equivalent within ±{report['margin']:g} bits/dim where the 90% interval lies inside it (TOST, margin "
              "stated before the run)" if report.get("margin") is not None else
              " (no equivalence margin was given, so no claim of equality is made)")] if seeds > 1 else []),
        *holm_lines(report),
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
    lines += curve.markdown(report["curve"]) if report.get("curve") else []
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
                  *wall_clock_lines(r["models"]), *[f"- note: {note}" for note in r.get("notes", [])],
                  *curve_summary_lines(r.get("curve"), f"curve-{name}.png")]
    return lines


def curve_summary_lines(section: dict[str, Any] | None, png: str) -> list[str]:
    """A variant's learning curves in a line per axis (its full tables are in benchmark.json, its chart in `png`)."""
    if not section:
        return []
    return [f"- learning curve at {curve.AXIS_TITLES[axis]}"
            + (f" ({curve.INTERPOLATED})" if r["interpolated"] else "") + f": {r['summary']}"
            for axis, r in section["axes"].items()] + [f"- learning-curve chart: {png}"]


def holm_lines(report: dict[str, Any]) -> list[str]:
    """What Holm's correction decided together (a line per bound that had a family of comparisons)."""
    return [f"- Holm's correction: the {len(labels)} paired {key.removesuffix('_bpd').upper()} differences "
            f"({', '.join(labels)}) are decided together at a family-wise 5%"
            for key, labels in (report.get("holm") or {}).items()]


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
