"""The NDM-vs-LSGM benchmark's report: typed (`Comparison`, its `ModelReport`s and their `StepCost`), rendered to a
markdown table (`markdown`), benchmark.json (`to_json`, `write_json`) and the PNG chart (`latent_ndm.comparison.chart`).

The metrics' columns, per-seed values, paired differences, lines and chart panels come from the metric registry
(`latent_ndm.evaluation.metrics`). The JSON keeps the keys of earlier versions:
    {"budget", "seeds", "match", "margin", "command", "hardware", "tolerances", "notes", "time",
     "paired": {key: {"differences", "mean", "se", "n", "dof", "t", "p", "ci", "outcome", "verdict"}} (NDM - LSGM
               by seed, for each metric's `paired` keys, e.g. nelbo_bpd and nll_bpd; latent_ndm/stats.py),
     "holm": {key: [the labels of the comparisons decided together by Holm's correction]},
     "models": {"NDM" | "LSGM" | EQUAL_TIME: {"run", "transform", "steps", "evaluation": {metric: evaluation.json
                entry}, "seeds": {"per_seed": [{"seed", "run", <per-seed keys>, ...}], key: {"mean", "se", "n"}},
                "sampling": [{"tol", "nfe", "images_per_s", "num", "seconds"}],
                "step": {"ms", "times_ms", "memory_mib", "memory_kind", "batch_size"}}},
     "ratios": {"step_time", "memory"}, "paper": PAPER, "paired_equal_time" (match=time), "few_step",
     "curve" (curve=true), "variants": {name: the same without "holm", with "train_overrides"}}
The paper's numbers are kept apart from ours (`paper`), and every place that shows them says whose they are.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from data_tools.files import atomic_write_text
from latent_ndm.comparison import curve, few_step
from latent_ndm.evaluation.metrics import DASH, Column, Metric
from latent_ndm.evaluation.metrics.base import fmt, value_of
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
_num = fmt


@dataclass
class StepCost:
    """One training step of a model on one batch: median milliseconds, each timed step's, and memory."""

    ms: float
    times_ms: list[float]
    memory_mib: float
    memory_kind: str
    batch_size: int


@dataclass
class ModelReport:
    """One model of a comparison: its seed-0 run and evaluations, its per-seed summary, and (where measured) the ODE
    sampler's NFE and speed per tolerance and its training step's cost."""

    run: str
    transform: str
    steps: int | None
    evaluation: dict[str, dict[str, Any]]
    seeds: dict[str, Any]
    sampling: list[dict[str, float]] | None = None
    step: StepCost | None = None

    def to_json(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k not in ("sampling", "step")}
        if self.sampling is not None:
            out["sampling"] = self.sampling
        if self.step is not None:
            out["step"] = asdict(self.step)
        return out


@dataclass
class Comparison:
    """The report of one NDM-vs-LSGM comparison (and, at the top, of its variants, each a `Comparison`)."""

    budget: int
    seeds: int
    match: str
    margin: float | None
    paired: dict[str, dict[str, Any]]
    command: str
    hardware: str
    tolerances: list[float]
    notes: list[str]
    models: dict[str, ModelReport]
    ratios: dict[str, float]
    time: str
    paper: dict[str, Any] = field(default_factory=lambda: PAPER)
    paired_equal_time: dict[str, dict[str, Any]] | None = None
    few_step: dict[str, Any] | None = None
    curve: dict[str, Any] | None = None
    train_overrides: list[str] | None = None  # a variant's, after the common ones
    variants: dict[str, Comparison] = field(default_factory=dict)
    holm: dict[str, list[str]] | None = None  # at the top: bound -> the comparisons decided together

    def to_json(self) -> dict[str, Any]:
        """The plain dict written as benchmark.json (optional sections only where present)."""
        out: dict[str, Any] = {"budget": self.budget, "seeds": self.seeds, "match": self.match, "margin": self.margin,
                               "paired": self.paired, "command": self.command, "hardware": self.hardware,
                               "tolerances": self.tolerances, "notes": self.notes,
                               "models": {name: m.to_json() for name, m in self.models.items()},
                               "ratios": self.ratios, "paper": self.paper, "time": self.time}
        optional = {"paired_equal_time": self.paired_equal_time, "few_step": self.few_step, "curve": self.curve,
                    "train_overrides": self.train_overrides, "holm": self.holm,
                    "variants": {name: v.to_json() for name, v in self.variants.items()} or None}
        return {**out, **{k: v for k, v in optional.items() if v is not None}}


def metric(model: ModelReport, name: str, key: str) -> float | None:
    """A number of the model's evaluation (None when that metric was not computed)."""
    return value_of(model, name, key)


def columns() -> list[Column]:
    """The metrics' columns of the table, in registry order."""
    return [column for cls in Metric.registry.values() for column in cls.columns()]


def tol_label(tol: float) -> str:
    return f"{tol:.0e}".replace("e-0", "e-")


def header(tolerances: list[float], memory_kind: str) -> list[str]:
    mem = "peak mem (MiB)" if "CUDA" in memory_kind else "saved act. (MiB)"
    return (["model", *[c.title for c in columns()]]
            + [f"NFE@{tol_label(t)}" for t in tolerances]
            + [f"img/s@{tol_label(t)}" for t in tolerances] + ["train step (ms)", mem])


def over_seeds(model: ModelReport, key: str, name: str, field: str, spec: str = ".4f") -> str:
    """mean ± SE over the seeds when there are several, else seed 0's number (formatted by `spec`)."""
    summary = model.seeds.get(key)
    if summary is not None and summary["n"] > 1:
        return f"{summary['mean']:{spec}} ± {number(summary['se'])}"
    return _num(metric(model, name, field), spec)


def cell(model: ModelReport, column: Column) -> str:
    """A model's cell of a metric's column."""
    if column.seeds is not None:
        return over_seeds(model, column.seeds, column.metric, column.key, column.spec)
    return _num(metric(model, column.metric, column.key), column.spec)


def model_row(name: str, model: ModelReport, tolerances: list[float]) -> list[str]:
    """A model's cells, with dashes for what was not measured on it: sampling speed (variants), sampling and step
    cost (the equal-time LSGM, the same network as the LSGM row)."""
    sampling = model.sampling or [{"nfe": None, "images_per_s": None}] * len(tolerances)
    step = model.step
    return ([f"{name} (F: {model.transform}, {model.steps} steps)", *[cell(model, c) for c in columns()]]
            + [_num(s["nfe"], ".0f") for s in sampling] + [_num(s["images_per_s"], ".2f") for s in sampling]
            + [_num(step and step.ms, ".1f"), _num(step and step.memory_mib, ".1f")])


def paper_row(name: str, width: int) -> list[str]:
    p = PAPER[name]
    row = [f"{PAPER_LABEL}: {'latent NDM' if name == 'NDM' else 'LSGM'}",
           *[DASH if c.paper is None else c.paper.format(**p) for c in columns()]]
    return row + [DASH] * (width - len(row))


def measured_line(report: Comparison) -> str:
    """How the table's numbers were measured: each metric's clause, then the ODE sampler's."""
    models = report.models
    ndm = models["NDM"]
    clauses = [c for cls in Metric.registry.values() if (c := cls.measured(models)) is not None]
    return ("- " + "; ".join([*clauses, "NFE and images/s: ODE sampler (dopri5, rtol = atol = tol) on "
                              f"{ndm.sampling[0]['num'] if ndm.sampling else 0} samples, decoding included"]))


def markdown(report: Comparison) -> str:
    """The table, then the lines that say how it was produced."""
    models, tols = report.models, report.tolerances
    ndm_step = models["NDM"].step
    assert ndm_step is not None
    cols = header(tols, ndm_step.memory_kind)
    rows = ([model_row(name, models[name], tols) for name in ours(models)]
            + [paper_row(name, len(cols)) for name in MODELS])
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join(["---"] + ["---:"] * (len(cols) - 1)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    r = report.ratios
    seeds = report.seeds
    lines += [
        "",
        f"- seeds: {seeds} per model ("
        + (f"training seeds 0..{seeds - 1}, each NDM paired with the LSGM of its seed); " if seeds > 1 else
           "training seed 0); ")
        + ("bounds are mean ± standard error over the seeds, sampling and step cost are seed 0's"
           if seeds > 1 else "one seed: no error bars, so no verdict on the models"),
        *(["- verdicts: the paired t with n - 1 dof; a model is lower only where the 95% interval of the difference "
           "excludes 0, else inconclusive"
           + (f"; equivalent within ±{report.margin:g} bits/dim where the 90% interval lies inside it (TOST, margin "
              "stated before the run)" if report.margin is not None else
              " (no equivalence margin was given, so no claim of equality is made)")] if seeds > 1 else []),
        *holm_lines(report),
        *paired_lines(report),
        *wall_clock_lines(models),
        *[line for cls in Metric.registry.values() for line in cls.notes(models, ours(models))],
        f"- hardware: {report.hardware}",
        f"- command: `{report.command}`",
        f"- budget: {report.budget} optimizer steps per model (same VAE export and data)",
        f"- NDM / LSGM: train step time x{_num(r['step_time'], '.2f')}, "
        f"{ndm_step.memory_kind} x{_num(r['memory'], '.2f')} "
        f"(batch {ndm_step.batch_size}, median of {len(ndm_step.times_ms)} steps)",
        measured_line(report),
        f"- the {PAPER_LABEL} rows are the paper's reported CelebA-HQ-256 numbers (upper bounds on NLL), for "
        "reference only; they are not results of this code or of this data",
    ]
    lines += [f"- note: {note}" for note in report.notes]
    lines += few_step.markdown(report.few_step)
    lines += curve.markdown(report.curve) if report.curve else []
    lines += variants_markdown(report)
    return "\n".join(lines) + "\n"


def variants_markdown(report: Comparison) -> list[str]:
    """The summary across the main comparison and its variants (paired NELBO difference each), then each variant's
    own table and lines."""
    variants = report.variants
    if not variants:
        return []
    lines = ["", "## Variants", "",
             "| comparison | train overrides | NDM NELBO bpd | LSGM NELBO bpd | NDM - LSGM, paired by seed | "
             "step time NDM / LSGM |",
             "|---|---|---:|---:|---|---:|"]
    for name, r in {"main": report, **variants}.items():
        overrides = ", ".join(r.train_overrides or []) or "(the main comparison)"
        p = r.paired.get("nelbo_bpd")
        lines.append(f"| {name} | {overrides} | {over_seeds(r.models['NDM'], 'nelbo_bpd', 'nelbo', 'nelbo_bpd')} | "
                     f"{over_seeds(r.models['LSGM'], 'nelbo_bpd', 'nelbo', 'nelbo_bpd')} | "
                     f"{short_verdict(p) if p else DASH} | x{_num(r.ratios['step_time'], '.2f')} |")
    for name, r in variants.items():
        tols = r.tolerances
        step = r.models["NDM"].step
        assert step is not None
        cols = header(tols, step.memory_kind)
        lines += ["", f"### Variant {name}: {', '.join(r.train_overrides or [])}", "",
                  "| " + " | ".join(cols) + " |", "|" + "|".join(["---"] + ["---:"] * (len(cols) - 1)) + "|"]
        lines += ["| " + " | ".join(model_row(m, r.models[m], tols)) + " |" for m in ours(r.models)]
        lines += ["", *paired_lines(r),
                  f"- NDM / LSGM: train step time x{_num(r.ratios['step_time'], '.2f')}",
                  *wall_clock_lines(r.models), *[f"- note: {note}" for note in r.notes],
                  *curve_summary_lines(r.curve, f"curve-{name}.png")]
    return lines


def curve_summary_lines(section: dict[str, Any] | None, png: str) -> list[str]:
    """A variant's learning curves in a line per axis (its full tables are in benchmark.json, its chart in `png`)."""
    if not section:
        return []
    return [f"- learning curve at {curve.AXIS_TITLES[axis]}"
            + (f" ({curve.INTERPOLATED})" if r["interpolated"] else "") + f": {r['summary']}"
            for axis, r in section["axes"].items()] + [f"- learning-curve chart: {png}"]


def holm_lines(report: Comparison) -> list[str]:
    """What Holm's correction decided together (a line per bound that had a family of comparisons)."""
    return [f"- Holm's correction: the {len(labels)} paired {key.removesuffix('_bpd').upper()} differences "
            f"({', '.join(labels)}) are decided together at a family-wise 5%"
            for key, labels in (report.holm or {}).items()]


def paired_lines(report: Comparison) -> list[str]:
    """A line per paired difference of a comparison: against the LSGM at equal steps, then at equal time."""
    lines = [f"- paired {key.removesuffix('_bpd').upper()}: {p['verdict']}" for key, p in report.paired.items()]
    return lines + [f"- paired {key.removesuffix('_bpd').upper()}, against the {EQUAL_TIME}: {p['verdict']}"
                    for key, p in (report.paired_equal_time or {}).items()]


def ours(models: dict[str, Any]) -> list[str]:
    """The models of a report in table order: NDM, LSGM, then the equal-time LSGM when there is one."""
    return [m for m in (*MODELS, EQUAL_TIME) if m in models]


def wall_clock_lines(models: dict[str, ModelReport]) -> list[str]:
    """The training wall-clock of each model (fit, validation included; mean over seeds), where recorded."""
    parts = []
    for name in ours(models):
        seconds = models[name].seeds.get("train_seconds")
        if seconds is not None:
            mean = seconds["mean"]
            parts.append(f"{name} {mean:.0f} s" if mean >= 100 else f"{name} {mean:.1f} s")
            parts[-1] += f" ({models[name].steps} steps)"
    return [f"- training wall-clock (fit, validation included, mean over seeds): {', '.join(parts)}"] if parts else []


def write_json(path: Path, report: Comparison) -> Path:
    atomic_write_text(path, json.dumps(report.to_json(), indent=2, sort_keys=True) + "\n")
    return path
