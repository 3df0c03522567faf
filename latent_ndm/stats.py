"""Seed statistics of every model comparison (the NDM-vs-LSGM benchmark, the 2D demo, the few-step table): mean and
standard error per model, and the paired difference with its t-interval and verdict. A leaf: any layer may use it.

With n values v_1..v_n: mean = sum v_i / n, SE = s / sqrt(n) with s the sample standard deviation (n - 1 in the
denominator). The paired difference takes d_i = A_i - B_i for the same seed i (same VAE export, data order and
initial noise stream), so that the seed-to-seed noise both models share cancels, and tests it with the paired t:

    t = mean(d) / SE(d), with n - 1 degrees of freedom; the 95% interval is mean(d) +- t_{0.975, n-1} SE(d)

(the exact Student-t quantile: 12.71 with 2 seeds, 4.30 with 3, 2.78 with 5; "2 SE" would claim a difference 18% of
the time with 3 seeds when there is none). The verdict has three outcomes (docs/MATH.md section 10):

* "A lower" / "B lower": the 95% interval excludes 0 (two-sided test at 5%);
* "inconclusive": it does not. Never "no difference": an interval that holds 0 is no evidence of equality;
* "equivalent within +-delta": only when a margin `delta` was stated in advance, and the 90% interval lies inside
  (-delta, +delta) (TOST: two one-sided tests at 5%).

Several comparisons in one report (the variants of a benchmark) are decided together by Holm's step-down procedure
(`holm`), which keeps the chance of any false "lower" at 5%. An estimate over G disjoint groups of samples (the
energy distance) gets its interval from t with G - 1 degrees of freedom. One value: no error estimate, no verdict.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from scipy import stats as scipy_stats

LEVEL = 0.95  # the confidence level of every interval and verdict
ALPHA = 1 - LEVEL
INCONCLUSIVE = "inconclusive"


def number(x: float, signed: bool = False) -> str:
    """4 decimals, or 3 significant digits below 1e-3 (a tiny difference must not print as 0.0000)."""
    sign = "+" if signed else ""
    return format(x, f"{sign}.4f") if x == 0 or abs(x) >= 1e-3 else format(x, f"{sign}.2e")


def t_critical(dof: int, level: float = LEVEL) -> float:
    """The two-sided critical value of Student's t: P(|T| <= t) = `level` with `dof` degrees of freedom."""
    if dof < 1 or not 0 < level < 1:
        raise ValueError(f"need dof >= 1 and 0 < level < 1, got {dof}, {level}")
    return float(scipy_stats.t.ppf(0.5 + level / 2, dof))


def p_value(t: float, dof: int) -> float:
    """The two-sided p-value of a t statistic with `dof` degrees of freedom."""
    return float(2 * scipy_stats.t.sf(abs(t), dof))


@dataclass(frozen=True)
class Estimate:
    """mean +- se over n values (se is None for n = 1); `dof` the degrees of freedom of its t (n - 1 for a mean over
    n values, G - 1 for an estimate over G groups)."""

    mean: float
    se: float | None
    n: int
    dof: int | None = None

    @property
    def degrees(self) -> int:
        return self.dof if self.dof is not None else self.n - 1

    def interval(self, level: float = LEVEL) -> tuple[float, float] | None:
        """mean -+ t_{level, dof} se; None without an error estimate."""
        if self.se is None or self.degrees < 1:
            return None
        half = t_critical(self.degrees, level) * self.se
        return self.mean - half, self.mean + half

    def text(self) -> str:
        return number(self.mean) if self.se is None else f"{number(self.mean)} ± {number(self.se)}"

    def interval_text(self, signed: bool = False) -> str:
        """"m ± se, 95% CI [lo, hi]" (just m without an error estimate)."""
        ci = self.interval()
        if ci is None:
            return number(self.mean, signed)
        return (f"{number(self.mean, signed)} ± {number(self.se)}, {LEVEL:.0%} CI [{number(ci[0], True)}, "
                f"{number(ci[1], True)}]")


def estimate(values: Sequence[float]) -> Estimate:
    """Mean and standard error of the mean of `values` (at least one, all finite)."""
    if not values or not all(math.isfinite(v) for v in values):
        raise ValueError(f"need at least one finite value, got {list(values)}")
    n = len(values)
    mean = math.fsum(values) / n
    if n == 1:
        return Estimate(mean, None, 1, 0)
    variance = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
    return Estimate(mean, math.sqrt(variance / n), n, n - 1)


def grouped(mean: float, se: float | None, groups: int) -> Estimate:
    """An estimate over `groups` disjoint groups (mean +- SE of the per-group values): its t has groups - 1 dof."""
    return Estimate(mean, se, groups, groups - 1 if se is not None else 0)


def outcome(d: Estimate, name: str, baseline: str, delta: float | None = None, alpha: float = ALPHA) -> str:
    """The verdict on a difference `name` - `baseline` (lower is better): "<name> lower", "<baseline> lower",
    "equivalent within ±delta" (TOST, only with a margin), or "inconclusive"; "one seed" without an error estimate.
    `alpha` is the two-sided level the difference is tested at (Holm lowers it for all but the smallest p)."""
    if d.se is None or d.degrees < 1:
        return "one seed"
    if d.se == 0:
        return INCONCLUSIVE if d.mean == 0 else (name if d.mean < 0 else baseline) + " lower"
    if p_value(d.mean / d.se, d.degrees) < alpha:
        return f"{name} lower" if d.mean < 0 else f"{baseline} lower"
    if delta is not None:
        lo, hi = d.interval(1 - 2 * ALPHA)  # the 90% interval: two one-sided tests at 5%
        if -delta < lo and hi < delta:
            return f"equivalent within ±{number(delta)}"
    return INCONCLUSIVE


def paired_difference(a: Sequence[float], b: Sequence[float], unit: str = "bits/dim", baseline: str = "LSGM",
                      name: str = "NDM", delta: float | None = None) -> dict[str, Any]:
    """The paired difference `name` - `baseline` over seeds (lower is better for both) as a plain dict (for JSON):
    the per-seed differences, mean, se, n, dof, t, p, the 95% interval `ci`, the margin `delta`, the `outcome`
    (see `outcome`) and a `verdict` sentence."""
    if len(a) != len(b):
        raise ValueError(f"paired values need the same seeds, got {len(a)} {name} and {len(b)} {baseline} values")
    differences = [x - y for x, y in zip(a, b, strict=True)]
    d = estimate(differences)
    t = None if d.se in (None, 0) else d.mean / d.se
    ci = d.interval()
    out = {"differences": differences, **asdict(d), "t": t, "p": None if t is None else p_value(t, d.degrees),
           "ci": None if ci is None else list(ci), "level": LEVEL, "delta": delta, "name": name,
           "baseline": baseline, "unit": unit, "outcome": outcome(d, name, baseline, delta)}
    out["verdict"] = verdict(out)
    return out


def holm(comparisons: Sequence[dict[str, Any]], alpha: float = ALPHA) -> None:
    """Decide a family of `paired_difference` results together (Holm's step-down procedure, family-wise level
    `alpha`): sorted by p, the k-th smallest (k = 0, 1, ...) is a difference only if its p < alpha / (m - k) and every
    smaller p passed too. Each result gets "holm": {"family": m, "alpha": its threshold} and its outcome and verdict
    re-decided at that threshold (an interval that excludes 0 may now be inconclusive; the verdict says so)."""
    tested = [c for c in comparisons if c.get("p") is not None]
    m, failed = len(tested), False
    for k, c in enumerate(sorted(tested, key=lambda c: c["p"])):
        threshold = alpha / (m - k)
        c["holm"] = {"family": m, "alpha": threshold}
        d = Estimate(c["mean"], c["se"], c["n"], c["dof"])
        decided = outcome(d, c["name"], c["baseline"], c.get("delta"), alpha=0.0 if failed else threshold)
        failed = failed or not decided.endswith(" lower")
        c["outcome"] = decided
        c["verdict"] = verdict(c)


def verdict(paired: dict[str, Any]) -> str:
    """One sentence on a `paired_difference`."""
    unit = f" {paired['unit']}" if paired.get("unit") else ""
    name, baseline = paired["name"], paired["baseline"]
    if paired["se"] is None:
        return (f"{name} - {baseline} = {number(paired['mean'], True)}{unit} from one seed: no error estimate, so no "
                "verdict (use 3 seeds or more)")
    d = Estimate(paired["mean"], paired["se"], paired["n"], paired["dof"])
    t = "" if paired.get("t") is None else f", t = {paired['t']:.2f}, {d.degrees} dof, p = {paired['p']:.3g}"
    head = f"{name} - {baseline} = {d.interval_text(signed=True)}{unit} over {d.n} paired seeds{t}"
    result = paired["outcome"]
    holm_note = ""
    if "holm" in paired:
        h = paired["holm"]
        holm_note = f"Holm's correction across {h['family']} comparisons: tested at p < {h['alpha']:.3g}"
    if result.endswith(" lower"):
        return f"{head}: {result}" + (f" ({holm_note})" if holm_note else "")
    if result.startswith("equivalent"):
        return f"{head}: {result} (the 90% interval lies inside the margin stated in advance)"
    why = ("the interval holds 0" if d.interval() and d.interval()[0] <= 0 <= d.interval()[1]
           else "the interval excludes 0 but not at the corrected level")
    margin = "" if paired.get("delta") is None else f", and it is not inside ±{number(paired['delta'])}"
    return f"{head}: inconclusive ({why}{margin}" + (f"; {holm_note})" if holm_note else ")")


def short_verdict(paired: dict[str, Any]) -> str:
    """A table cell for a `paired_difference`: mean ± SE [95% CI]: the outcome."""
    if paired["se"] is None:
        return f"{number(paired['mean'], True)} (one seed: no verdict)"
    d = Estimate(paired["mean"], paired["se"], paired["n"], paired.get("dof"))
    return f"{d.interval_text(signed=True)}: {paired.get('outcome', INCONCLUSIVE)}"
