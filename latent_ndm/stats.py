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
(`holm`), which keeps the chance of any false "lower" at 5%. Statements about where along a learning curve a verdict
holds come from a simultaneous band over the curve's grid (`simultaneous_band`: sign-flip max-|t| over the paired
seeds' residuals, or Bonferroni over the grid where sign flips cannot reach 95%, i.e. with 5 seeds or fewer). An
estimate over G disjoint groups of samples (the energy distance) gets its interval from t with G - 1 degrees of
freedom. One value: no error estimate, no verdict.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
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


SIGN_FLIP = "sign-flip max-|t|"
BONFERRONI = "Bonferroni"
SIGN_FLIP_EXACT_MAX = 12  # up to this many seeds every one of the 2^n sign patterns is enumerated
SIGN_FLIP_DRAWS = 4096  # beyond it: the observed pattern and 4095 seeded random ones (a Monte Carlo permutation test)


def sign_flip_reachable(n: int, alpha: float = ALPHA) -> bool:
    """Whether sign flips of n paired seeds can give a two-sided level `alpha` at all: a pattern and its negation give
    the same |t|, so an exact sign-flip test's smallest p is 2 / 2^n (1/16 with 5 seeds, 1/32 with 6), and the flips
    have only 2^(n-1) distinct values to take a quantile from."""
    return n >= 2 and 2.0 / 2.0**n <= alpha


def _sign_patterns(n: int) -> np.ndarray:
    """(N, n) signs: all 2^n patterns for n <= SIGN_FLIP_EXACT_MAX, else the identity and seeded random ones."""
    if n <= SIGN_FLIP_EXACT_MAX:
        bits = (np.arange(2**n)[:, None] >> np.arange(n)[None, :]) & 1
        return 1.0 - 2.0 * bits
    random = np.random.default_rng(0).choice([-1.0, 1.0], size=(SIGN_FLIP_DRAWS - 1, n))
    return np.vstack([np.ones((1, n)), random])


def _max_abs_t(d: np.ndarray, signs: np.ndarray) -> np.ndarray:
    """max over grid points of |t| of the sign-flipped values, per pattern: d (n, G), signs (N, n) -> (N,).
    Flipping signs leaves sum d_i^2 unchanged, so the variance of each pattern follows from its mean."""
    n = d.shape[0]
    mean = signs @ d / n
    var = np.maximum((np.sum(d**2, axis=0) - n * mean**2) / (n - 1), 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.abs(mean) / np.sqrt(var / n)
    return np.nan_to_num(t, nan=0.0, posinf=np.inf).max(axis=1)


def simultaneous_critical(differences: Sequence[Sequence[float]], level: float = LEVEL,
                          method: str = "auto") -> tuple[float, str]:
    """(c, method): the critical |t| that makes mean -+ c SE at every grid point a band holding the true paired
    difference at all points at once with probability >= `level`. `differences[g][i]`: seed i at grid point g.

    - SIGN_FLIP: the `level` quantile of max over the grid of |t| under every sign pattern of the seeds' residuals
      d_i - mean(d) at each point (all 2^n patterns up to SIGN_FLIP_EXACT_MAX seeds: a wild bootstrap with
      Rademacher weights, enumerated). Residuals, not the raw differences, so that c does not depend on the true
      difference and mean -+ c SE is a band, not only a test of "no difference anywhere"; it needs only that each
      seed's deviations are symmetric, adapts to the grid points' correlation, and is approximate, not exact (the
      simulated null of tests/test_stats.py checks its 5%). Infinite (no band) where `sign_flip_reachable` is false.
    - BONFERRONI: Student's t at level 1 - alpha / G (the pointwise test at alpha / G at each of G points; valid for
      any correlation under the pointwise t's own normality, conservative for a smooth curve).
    - "auto": SIGN_FLIP where sign flips can reach `level`, i.e. with 6 seeds or more at 95%; BONFERRONI with fewer
      (with 5 seeds an exact sign-flip test's smallest p is 1/16 > 0.05 and the flips take 16 distinct values, too
      few for a 95% quantile)."""
    g = len(differences)
    n = len(differences[0]) if g else 0
    if g < 1 or n < 2 or any(len(row) != n for row in differences):
        raise ValueError(f"a band needs at least one grid point and the same >= 2 seeds at each, got {g} points with "
                         f"{sorted({len(row) for row in differences})} seeds")
    alpha = 1 - level
    if method == "auto":
        method = SIGN_FLIP if sign_flip_reachable(n, alpha) else BONFERRONI
    if method == BONFERRONI:
        return t_critical(n - 1, 1 - alpha / g), BONFERRONI
    if method != SIGN_FLIP:
        raise ValueError(f"method must be 'auto', {SIGN_FLIP!r} or {BONFERRONI!r}, got {method!r}")
    if not sign_flip_reachable(n, alpha):
        return math.inf, SIGN_FLIP
    d = np.asarray(differences, dtype=float).T
    maxima = np.sort(_max_abs_t(d - d.mean(axis=0), _sign_patterns(n)))[::-1]
    k = math.floor(alpha * len(maxima) + 1e-9)  # at most k patterns may lie strictly above c
    return float(maxima[k]), SIGN_FLIP


def simultaneous_band(paired: Sequence[dict[str, Any]], level: float = LEVEL,
                      method: str = "auto") -> dict[str, Any] | None:
    """A simultaneous `level` band over a curve's grid from its pointwise `paired_difference` results (the same seeds
    at every point): {"method", "level", "points", "seeds", "critical", "ci": [[lo, hi] per point], or None where no
    band at `level` exists, "outcome": per point}. A point's outcome is "<name> lower" / "<baseline> lower" where the
    band excludes 0 there, else "inconclusive", so that the chance of any false "lower" anywhere on the grid is at
    most 1 - `level` (family-wise). None with one seed (no error estimate)."""
    if not paired or paired[0]["se"] is None:
        return None
    critical, used = simultaneous_critical([p["differences"] for p in paired], level, method)
    reachable = math.isfinite(critical)
    ci, outcomes = [], []
    for p in paired:
        half = critical * p["se"] if reachable and p["se"] > 0 else 0.0
        lo, hi = p["mean"] - half, p["mean"] + half
        ci.append([lo, hi])
        lower = reachable and (lo > 0 or hi < 0)
        outcomes.append(INCONCLUSIVE if not lower else f"{p['name']} lower" if p["mean"] < 0 else
                        f"{p['baseline']} lower")
    return {"method": used, "level": level, "points": len(paired), "seeds": paired[0]["n"],
            "critical": critical if reachable else None, "ci": ci if reachable else None, "outcome": outcomes}
