"""Seed statistics of every model comparison (the NDM-vs-LSGM benchmark, the 2D demo): mean and standard error per
model, and the paired difference. Standard library only, so that any layer may use it.

With n seeds, model values v_1..v_n: mean = sum v_i / n, SE = s / sqrt(n) with s the sample standard deviation
(n - 1 in the denominator). The paired difference takes d_i = NDM_i - LSGM_i for the same seed i (same VAE export,
data order and initial noise stream) and reports mean(d) +- SE(d): the seed-to-seed noise that both models share
cancels in d_i, so the paired SE is what decides. A difference counts only when |mean(d)| > 2 SE(d); otherwise it
is reported as no difference. With one seed there is no error estimate and no verdict beyond saying so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

Z = 2.0  # a difference counts when it exceeds Z standard errors


def number(x: float, signed: bool = False) -> str:
    """4 decimals, or 3 significant digits below 1e-3 (a tiny difference must not print as 0.0000)."""
    sign = "+" if signed else ""
    return format(x, f"{sign}.4f") if x == 0 or abs(x) >= 1e-3 else format(x, f"{sign}.2e")


@dataclass(frozen=True)
class Estimate:
    """mean +- se over n values (se is None for n = 1)."""

    mean: float
    se: float | None
    n: int

    def text(self) -> str:
        return number(self.mean) if self.se is None else f"{number(self.mean)} ± {number(self.se)}"


def estimate(values: Sequence[float]) -> Estimate:
    """Mean and standard error of the mean of `values` (at least one, all finite)."""
    if not values or not all(math.isfinite(v) for v in values):
        raise ValueError(f"need at least one finite value, got {list(values)}")
    n = len(values)
    mean = math.fsum(values) / n
    if n == 1:
        return Estimate(mean, None, 1)
    variance = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
    return Estimate(mean, math.sqrt(variance / n), n)


def paired_difference(ndm: Sequence[float], baseline_values: Sequence[float], unit: str = "bits/dim",
                      baseline: str = "LSGM", name: str = "NDM") -> dict[str, Any]:
    """The paired difference `name` - `baseline` over seeds (lower is better for both): the per-seed differences, their
    mean +- SE, the baseline's name and a verdict sentence."""
    if len(ndm) != len(baseline_values):
        raise ValueError(f"paired values need the same seeds, got {len(ndm)} NDM and {len(baseline_values)} "
                         f"{baseline} values")
    differences = [a - b for a, b in zip(ndm, baseline_values, strict=True)]
    d = estimate(differences)
    return {"differences": differences, **asdict(d), "baseline": baseline, "verdict": verdict(d, unit, baseline, name)}


def lower(d: Estimate, baseline: str = "LSGM", name: str = "NDM") -> str | None:
    """Which model a paired difference `name` - `baseline` shows lower (beyond Z standard errors), or None."""
    if d.se is None or abs(d.mean) <= Z * d.se:
        return None
    return name if d.mean < 0 else baseline


def verdict(d: Estimate, unit: str = "bits/dim", baseline: str = "LSGM", name: str = "NDM") -> str:
    """One sentence on a paired difference `name` - `baseline`."""
    unit = f" {unit}" if unit else ""
    if d.se is None:
        return (f"{name} - {baseline} = {number(d.mean, True)}{unit} from one seed: no error estimate, so no evidence "
                "either way (use 3 seeds or more)")
    head = f"{name} - {baseline} = {number(d.mean, True)} ± {number(d.se)}{unit} over {d.n} paired seeds"
    winner = lower(d, baseline, name)
    if winner is not None:
        return f"{head}: {winner} is lower, by more than {Z:g} standard errors"
    return f"{head}: no difference (within {Z:g} standard errors)"


def short_verdict(paired: dict[str, Any]) -> str:
    """A table cell for a `paired_difference`: mean +- SE, then NDM lower / LSGM lower / no difference / one seed."""
    if paired["se"] is None:
        return f"{number(paired['mean'], True)} (one seed: no error estimate)"
    d = Estimate(paired["mean"], paired["se"], paired["n"])
    winner = lower(d, paired.get("baseline", "LSGM"))
    return f"{number(d.mean, True)} ± {number(d.se)}: {f'{winner} lower' if winner else 'no difference'}"
