"""Learning curves of two models over paired seeds, compared along three axes (docs/MATH.md section 10.1).

Pure: no training, no files. Given per model and seed the validation NELBO at each checkpoint (`Curve`: step,
training seconds, NELBO) and each model's FLOPs per training step, `compare_curves` puts every run on a common grid
of each axis:

- "steps": the checkpoints that every run has (both models validate at the same steps, so nothing is interpolated);
- "seconds": the training wall-clock (the steps' own seconds, validation excluded);
- "flops": step x FLOPs per step (forward + backward of one training step; validation not counted): at equal FLOPs
  a model that costs more per step has taken fewer steps;

the continuous axes on an even grid from the largest first checkpoint to the smallest last checkpoint over all runs
of the comparison, so that no run is ever extrapolated. Each run's NELBO is interpolated linearly between its
checkpoints onto the grid; at each grid point the paired difference `name - baseline` over seeds
(`stats.paired_difference`: t with n - 1 dof, 95% interval, the verdict words of stats.py) and each model's mean ± SE
with its 95% t-interval (`stats.estimate`): these intervals are pointwise (each grid point at 95%) and serve
statements about one point. Statements about where along an axis a verdict holds ("NDM lower from X on") come from a
simultaneous 95% band over the axis's grid (`stats.simultaneous_band`: sign-flip max-|t| over the paired seeds with 6
seeds or more, Bonferroni over the grid with fewer, where no sign-flip test can reach 95%): each row's "band" holds its
interval and verdict, `verdict_changes(rows, "band")` says where the band's verdict changes and the axis's summary is
written from it; `verdict_changes(rows)` keeps the pointwise changes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from latent_ndm import stats

AXES = ("steps", "seconds", "flops")
AXIS_LABELS = {"steps": "optimizer steps", "seconds": "training seconds (validation excluded)",
               "flops": "training FLOPs (validation not counted)"}
AXIS_TITLES = {"steps": "equal steps", "seconds": "equal wall-clock", "flops": "equal FLOPs"}
INTERPOLATED = "interpolated between checkpoints"
BAND = "95% simultaneous band"
ONE_SEED = "one seed: no verdict"


@dataclass(frozen=True)
class Curve:
    """One run's validation bound at its checkpoints: `steps` (increasing), the training `seconds` at each
    (increasing) and the `nelbo` (bits/dim)."""

    steps: tuple[int, ...]
    seconds: tuple[float, ...]
    nelbo: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.steps or not len(self.steps) == len(self.seconds) == len(self.nelbo):
            raise ValueError(f"a curve needs as many steps, seconds and NELBOs (at least one), got "
                             f"{len(self.steps)}, {len(self.seconds)}, {len(self.nelbo)}")
        if not all(math.isfinite(v) for v in (*self.seconds, *self.nelbo)):
            raise ValueError("a curve's seconds and NELBOs must be finite")
        for name, xs in (("steps", self.steps), ("seconds", self.seconds)):
            if any(b <= a for a, b in zip(xs, xs[1:], strict=False)):
                raise ValueError(f"a curve's {name} must increase, got {list(xs)}")

    def along(self, axis: str, flops_per_step: float | None = None) -> tuple[float, ...]:
        """The checkpoints' positions on `axis` ("flops" needs the model's FLOPs per step)."""
        if axis == "steps":
            return tuple(float(s) for s in self.steps)
        if axis == "seconds":
            return self.seconds
        if axis == "flops":
            if flops_per_step is None or flops_per_step <= 0:
                raise ValueError(f"the FLOPs axis needs the FLOPs per step (> 0), got {flops_per_step}")
            return tuple(s * float(flops_per_step) for s in self.steps)
        raise ValueError(f"axis must be one of {list(AXES)}, got {axis!r}")


def curve_from_points(points: Sequence[Mapping[str, Any]], metric: str = "nelbo_bpd",
                      seconds: str = "step_seconds") -> Curve:
    """A `Curve` from the points of a run's curve.json (`metric` and `seconds` of each point)."""
    missing = [p["step"] for p in points if p.get(metric) is None or p.get(seconds) is None]
    if missing:
        raise ValueError(f"the curve has no {metric} or {seconds} at steps {missing}")
    return Curve(tuple(int(p["step"]) for p in points), tuple(float(p[seconds]) for p in points),
                 tuple(float(p[metric]) for p in points))


def interpolate(xs: Sequence[float], ys: Sequence[float], at: float) -> float:
    """y at `at`, linear between the two checkpoints around it (exact at a checkpoint); never extrapolated: `at`
    outside [xs[0], xs[-1]] is an error."""
    if not xs[0] <= at <= xs[-1]:
        raise ValueError(f"{at} lies outside the checkpoints [{xs[0]}, {xs[-1]}]: no extrapolation")
    for i in range(1, len(xs)):
        if at <= xs[i]:
            w = (at - xs[i - 1]) / (xs[i] - xs[i - 1])
            return ys[i - 1] + w * (ys[i] - ys[i - 1])
    return ys[0]  # a single checkpoint, at it


def common_range(positions: Sequence[Sequence[float]]) -> tuple[float, float] | None:
    """From the largest first checkpoint to the smallest last one over all runs; None when they do not overlap."""
    lo, hi = max(p[0] for p in positions), min(p[-1] for p in positions)
    return (lo, hi) if lo <= hi else None


def even_grid(lo: float, hi: float, points: int) -> list[float]:
    """`points` evenly spaced values from `lo` to `hi`, both included (one value when they are equal)."""
    if points < 2 or hi == lo:
        return [lo] if hi == lo or points == 1 else [lo, hi]
    return [lo + (hi - lo) * i / (points - 1) for i in range(points - 1)] + [hi]


def step_grid(curves: Sequence[Curve]) -> list[float]:
    """The checkpoints (steps) that every run has."""
    common = set(curves[0].steps).intersection(*(c.steps for c in curves[1:]))
    return [float(s) for s in sorted(common)]


def _band(values: Sequence[float]) -> dict[str, Any]:
    e = stats.estimate(values)
    ci = e.interval()
    return {**asdict(e), "ci": None if ci is None else list(ci)}


def axis_comparison(runs: Mapping[str, Sequence[Curve]], flops_per_step: Mapping[str, float], axis: str,
                    points: int = 20, margin: float | None = None, name: str = "NDM",
                    baseline: str = "LSGM") -> dict[str, Any]:
    """The comparison along one axis: {"axis", "label", "range", "grid", "rows": [{"x", "models": {model: mean, se,
    n, dof, ci, steps}, "paired": paired_difference}], "changes", "summary"}. `runs[model][seed]`; seeds paired."""
    models = (name, baseline)
    positions = {m: [c.along(axis, flops_per_step.get(m)) for c in runs[m]] for m in models}
    if axis == "steps":
        grid = step_grid([c for m in models for c in runs[m]])
        span = (grid[0], grid[-1]) if grid else None
    else:
        span = common_range([p for m in models for p in positions[m]])
        grid = [] if span is None else even_grid(*span, points)
    rows = []
    for x in grid:
        nelbo = {m: [interpolate(p, c.nelbo, x) for p, c in zip(positions[m], runs[m], strict=True)] for m in models}
        steps = {m: [interpolate(p, c.steps, x) for p, c in zip(positions[m], runs[m], strict=True)] for m in models}
        rows.append({"x": x,
                     "models": {m: {**_band(nelbo[m]), "steps": math.fsum(steps[m]) / len(steps[m])} for m in models},
                     "paired": stats.paired_difference(nelbo[name], nelbo[baseline], name=name, baseline=baseline,
                                                       delta=margin)})
    band = add_band(rows)
    band_changes = verdict_changes(rows, "band") if band else []
    return {"axis": axis, "label": AXIS_LABELS[axis], "range": None if span is None else list(span), "grid": grid,
            "interpolated": axis != "steps", "rows": rows, "changes": verdict_changes(rows), "band": band,
            "band_changes": band_changes, "summary": summary(axis, rows, band_changes, "band")}


def add_band(rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The simultaneous 95% band over the rows' paired differences (`stats.simultaneous_band`), each row's part of
    it put in row["band"] = {"mean", "ci", "outcome"}; returned without the per-row lists ({"method", "level",
    "points", "seeds", "critical"}). None (and no row["band"]) with one seed or no rows."""
    band = stats.simultaneous_band([row["paired"] for row in rows])
    if band is None:
        return None
    for i, row in enumerate(rows):
        row["band"] = {"mean": row["paired"]["mean"], "ci": None if band["ci"] is None else band["ci"][i],
                       "outcome": band["outcome"][i]}
    return {k: v for k, v in band.items() if k not in ("ci", "outcome")}


def verdict_changes(rows: Sequence[Mapping[str, Any]], key: str = "paired") -> list[dict[str, Any]]:
    """Every grid point whose verdict differs from the one before it: {"x", "previous_x", "from", "to", "mean",
    "ci"} (the difference there); `key` "paired": the pointwise verdicts and intervals, "band": the simultaneous
    band's."""
    out = []
    for before, row in zip(rows, rows[1:], strict=False):
        old, new = before[key]["outcome"], row[key]["outcome"]
        if new != old:
            out.append({"x": row["x"], "previous_x": before["x"], "from": old, "to": new,
                        "mean": row[key]["mean"], "ci": row[key]["ci"]})
    return out


def position(axis: str, x: float) -> str:
    """A point of an axis as text: 120 steps, 35.2 s, 1.23e+12 FLOPs."""
    if axis == "steps":
        return f"{x:.0f} steps"
    if axis == "seconds":
        return f"{x:.1f} s" if x < 100 else f"{x:.0f} s"
    return f"{x:.3g} FLOPs"


def _ci_text(mean: float, ci: Sequence[float] | None, kind: str = "95% CI") -> str:
    if ci is None:
        return stats.number(mean, True)
    return f"{stats.number(mean, True)}, {kind} [{stats.number(ci[0], True)}, {stats.number(ci[1], True)}]"


def summary(axis: str, rows: Sequence[Mapping[str, Any]], changes: Sequence[Mapping[str, Any]],
            key: str = "paired") -> str:
    """One sentence: the verdict along the axis and where it changes (with the interval there), or that it does not
    change within the budget. `key` "band": the simultaneous band's verdicts and intervals (`changes` from
    `verdict_changes(rows, "band")`); "paired": the pointwise ones."""
    if not rows:
        return "no common range: the runs' checkpoints do not overlap on this axis"
    first, last = rows[0], rows[-1]
    span = f"from {position(axis, first['x'])} to {position(axis, last['x'])}"
    if first["paired"]["se"] is None:
        return f"{ONE_SEED} ({span})"
    kind = BAND if key == "band" else "95% CI"
    start = first[key]["outcome"]
    if not changes:
        return (f"{start} at every grid point {span} ({_ci_text(first[key]['mean'], first[key]['ci'], kind)} "
                f"at the start, {_ci_text(last[key]['mean'], last[key]['ci'], kind)} at the end): the verdict "
                "does not change within the budget")
    parts = [f"{start} at {position(axis, first['x'])} ({_ci_text(first[key]['mean'], first[key]['ci'], kind)})"]
    parts += [f"{c['to']} from {position(axis, c['x'])} on (after {position(axis, c['previous_x'])}; "
              f"{_ci_text(c['mean'], c['ci'], kind)})" for c in changes]
    return "; ".join(parts) + f"; up to {position(axis, last['x'])}"


def compare_curves(runs: Mapping[str, Sequence[Curve]], flops_per_step: Mapping[str, float], points: int = 20,
                   margin: float | None = None, name: str = "NDM", baseline: str = "LSGM",
                   metric: str = "nelbo_bpd") -> dict[str, Any]:
    """The comparison along every axis (JSON-able): {"seeds", "points", "metric", "flops_per_step", "axes": {axis:
    `axis_comparison`}, "runs": {model: [curve per seed]}}. `runs[model][seed]`: the same seeds for both models;
    `metric`: the name of the curves' bound (for the report)."""
    if len(runs[name]) != len(runs[baseline]) or not runs[name]:
        raise ValueError(f"paired curves need the same seeds, got {len(runs[name])} {name} and "
                         f"{len(runs[baseline])} {baseline} runs")
    if points < 2:
        raise ValueError(f"a grid needs at least 2 points, got {points}")
    axes = {axis: axis_comparison(runs, flops_per_step, axis, points, margin, name, baseline) for axis in AXES}
    return {"seeds": len(runs[name]), "points": points, "metric": metric, "margin": margin, "name": name,
            "baseline": baseline,
            "flops_per_step": {m: float(flops_per_step[m]) for m in (name, baseline)},
            "axes": axes, "runs": {m: [asdict(c) for c in runs[m]] for m in (name, baseline)}}


def _steps(mean: float) -> str:
    """A mean (interpolated) step count: 1 decimal below 100."""
    return f"{mean:.0f}" if mean >= 100 else f"{mean:.1f}"


def metric_label(metric: str) -> str:
    """nelbo_bpd -> NELBO, kl_bpd -> KL."""
    return metric.removesuffix("_bpd").upper()


def shown_rows(rows: Sequence[Mapping[str, Any]], count: int = 5) -> list[int]:
    """The indices of the rows a table shows: `count` evenly spaced ones (first and last included) and every row at
    which the verdict (pointwise or the simultaneous band's) changes."""
    if not rows:
        return []
    even = {round(i * (len(rows) - 1) / max(count - 1, 1)) for i in range(count)}
    changed = {i for i in range(1, len(rows)) for key in ("paired", "band")
               if key in rows[i] and rows[i][key]["outcome"] != rows[i - 1][key]["outcome"]}
    return sorted(even | changed)


def markdown(section: Mapping[str, Any], count: int = 5) -> list[str]:
    """The report's curve section: how it was made, then a table per axis at a handful of grid points (the pointwise
    interval and, where computed, the simultaneous band) and the sentence on where the verdict changes (from the band;
    a section saved before bands existed has its pointwise sentence)."""
    name, baseline = section["name"], section["baseline"]
    flops = section["flops_per_step"]
    seeds = section["seeds"]
    bound = metric_label(section["metric"])
    lines = ["", "## Learning curves", "",
             f"- validation {bound} (bits/dim) of the EMA weights on the same held-out images at every checkpoint"
             + (f" (every {section['every']} steps)" if section.get("every") else "")
             + f", {seeds} seed{'s' if seeds > 1 else ''} per model; equal steps: the checkpoints every run has; "
             f"equal wall-clock and equal FLOPs: on a grid of {section['points']} points, each run's values "
             f"{INTERPOLATED} (linearly), the grid from the latest first checkpoint to the earliest last checkpoint "
             "over all runs: no extrapolation",
             "- FLOPs per training step (forward + backward on one batch"
             + (f" of {section['flops_batch_size']}" if section.get("flops_batch_size") else "")
             + f", torch.utils.flop_counter): {name} {flops[name]:.3g}, {baseline} {flops[baseline]:.3g} "
             f"(x{flops[name] / flops[baseline]:.2f}); the FLOPs axis is step x FLOPs per step, validation not "
             "counted; at equal FLOPs the models have taken different numbers of steps",
             "- wall-clock: the training steps' own seconds (forward, backward, optimizer step), without validation, "
             "sample grids or checkpoints (`step_seconds` in each run's curve.json)",
             ("- " + (f"intervals: paired t over seeds with n - 1 = {seeds - 1} dof at each grid point, 95%, pointwise "
                      "(not simultaneous over the curve): for statements about one grid point") if seeds > 1
              else f"- {ONE_SEED} along the curve"),
             *band_note(section),
             *[f"- note: {note}" for note in section.get("notes", [])]]
    for axis, r in section["axes"].items():
        lines += ["", f"### At {AXIS_TITLES[axis]} ({r['label']})", ""]
        if not r["rows"]:
            lines.append(f"- {r['summary']}")
            continue
        head = [r["label"], *(["steps " + " / ".join((name, baseline))] if axis != "steps" else []),
                f"{name} {bound} bpd", f"{baseline} {bound} bpd", f"{name} - {baseline}, paired by seed",
                *([BAND] if r.get("band") else [])]
        lines += ["| " + " | ".join(head) + " |", "|" + "|".join(["---:"] * (len(head) - 1) + ["---"]) + "|"]
        for i in shown_rows(r["rows"], count):
            row = r["rows"][i]
            m = row["models"]
            cells = [position(axis, row["x"]),
                     *([f"{_steps(m[name]['steps'])} / {_steps(m[baseline]['steps'])}"] if axis != "steps" else []),
                     *[stats.Estimate(m[k]["mean"], m[k]["se"], m[k]["n"], m[k]["dof"]).text()
                       for k in (name, baseline)],
                     stats.short_verdict(row["paired"]), *([_band_cell(row["band"])] if r.get("band") else [])]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append(f"- along {AXIS_TITLES[axis]}" + (f" ({INTERPOLATED})" if r["interpolated"] else "")
                     + f": {r['summary']}")
    return lines


def _band_cell(band: Mapping[str, Any]) -> str:
    if band["ci"] is None:
        return f"no band: {band['outcome']}"
    return f"[{stats.number(band['ci'][0], True)}, {stats.number(band['ci'][1], True)}]: {band['outcome']}"


def band_note(section: Mapping[str, Any]) -> list[str]:
    """The report's line on the simultaneous bands (none for a single seed or a section saved before bands)."""
    bands = {axis: r["band"] for axis, r in section["axes"].items() if r.get("band")}
    if not bands:
        return []
    method = next(iter(bands.values()))["method"]
    why = ("max over the grid of |t| under all 2^n sign flips of the paired seeds" if method == stats.SIGN_FLIP
           else "Student's t at 1 - 0.05 / (grid points) at each point; with 5 seeds or fewer no sign-flip test can "
           "reach 95% (its smallest p is 2 / 2^n)")
    crit = ", ".join(f"{AXIS_TITLES[axis]} {b['critical']:.2f} over {b['points']} points" for axis, b in bands.items()
                     if b["critical"] is not None)
    return [f"- {BAND}s ({method}: {why}; critical |t|: {crit}) hold at every grid point at once: the sentences on "
            "where a verdict holds (\"lower from ... on\") come from them; a pointwise interval that excludes 0 where "
            "the band does not is no family-wise evidence"]
