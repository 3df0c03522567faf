"""Seed statistics of the comparisons against hand-computed answers and scipy's own tests: the paired t with n - 1
degrees of freedom, its 95% interval, the three verdicts (lower / inconclusive / equivalent within a margin, by TOST),
Holm's correction across a family, the t-interval of an estimate over G groups, and the simultaneous band over a
learning curve's grid (its critical value against brute force, its family-wise error under a simulated null)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from latent_ndm.stats import (
    BONFERRONI,
    SIGN_FLIP,
    estimate,
    grouped,
    holm,
    paired_difference,
    short_verdict,
    sign_flip_reachable,
    simultaneous_band,
    simultaneous_critical,
    t_critical,
)


def test_mean_and_standard_error_of_known_values() -> None:
    e = estimate([4.60, 4.62, 4.64])  # mean 4.62, sample sd 0.02, SE 0.02 / sqrt(3)
    assert e.mean == pytest.approx(4.62) and e.se == pytest.approx(0.02 / math.sqrt(3)) and e.n == 3
    assert e.text() == "4.6200 ± 0.0115" and e.degrees == 2
    one = estimate([4.5])
    assert one.se is None and one.text() == "4.5000" and one.interval() is None
    with pytest.raises(ValueError):
        estimate([])
    with pytest.raises(ValueError):
        estimate([1.0, math.nan])


@pytest.mark.parametrize(("dof", "table"), [(1, 12.706), (2, 4.303), (3, 3.182), (4, 2.776), (9, 2.262), (30, 2.042)])
def test_t_critical_values_are_the_exact_quantiles(dof: int, table: float) -> None:
    assert t_critical(dof) == pytest.approx(table, abs=5e-4)  # a printed t table, 3 decimals
    assert t_critical(dof) == pytest.approx(scipy_stats.t.ppf(0.975, dof), rel=1e-12)


def test_the_paired_t_and_interval_are_scipys() -> None:
    """Seeds move both models by the same large amount; NDM is 0.01 lower on every seed (+- 0.001)."""
    shared = [0.0, 0.30, -0.25, 0.10]
    lsgm = [4.60 + s for s in shared]
    ndm = [4.59 + s + e for s, e in zip(shared, [0.001, -0.001, 0.0, 0.0005], strict=True)]
    assert math.hypot(estimate(ndm).se, estimate(lsgm).se) > 0.1  # compared model by model, 0.01 drowns in noise
    p = paired_difference(ndm, lsgm)
    assert p["differences"] == pytest.approx([-0.009, -0.011, -0.010, -0.0095])
    reference = scipy_stats.ttest_rel(ndm, lsgm)
    assert p["t"] == pytest.approx(reference.statistic) and p["p"] == pytest.approx(reference.pvalue)
    assert p["dof"] == 3 and p["ci"] == pytest.approx(list(reference.confidence_interval(0.95)))
    assert p["outcome"] == "NDM lower" and "t = -23.13, 3 dof" in p["verdict"]  # ... paired, it is clear


def test_two_standard_errors_is_not_a_verdict_with_three_seeds() -> None:
    """d = -0.008, -0.015, -0.023: |mean| = 3.5 SE, a difference by the old 2-SE rule; with 2 dof the 95% critical
    value is 4.30, so the interval holds 0 and the verdict is inconclusive (never "no difference")."""
    lsgm = [4.62, 4.63, 4.61]
    ndm = [x + d for x, d in zip(lsgm, [-0.008, -0.015, -0.023], strict=True)]
    p = paired_difference(ndm, lsgm)
    assert abs(p["mean"]) > 2 * p["se"] and p["t"] == pytest.approx(-3.538, abs=1e-3)
    assert p["ci"][0] < 0 < p["ci"][1] and scipy_stats.ttest_rel(ndm, lsgm).pvalue > 0.05
    assert p["outcome"] == "inconclusive" and "inconclusive (the interval holds 0)" in p["verdict"]
    assert short_verdict(p) == "-0.0153 ± 0.0043, 95% CI [-0.0340, +0.0033]: inconclusive"
    assert "no difference" not in p["verdict"]


def test_equivalence_needs_a_margin_and_the_90_percent_interval_inside_it() -> None:
    lsgm = [4.60, 4.70, 4.65, 4.62]
    d = [0.001, -0.001, 0.0005, 0.0]
    ndm = [x + e for x, e in zip(lsgm, d, strict=True)]
    assert paired_difference(ndm, lsgm)["outcome"] == "inconclusive"  # no margin: no claim of equality
    for delta, expected in ((0.003, "equivalent within ±0.0030"), (0.001, "inconclusive")):
        p = paired_difference(ndm, lsgm, delta=delta)
        # TOST: both one-sided tests against the margins at 5% (scipy), the same as the 90% interval inside it
        low = scipy_stats.ttest_1samp([a - b for a, b in zip(ndm, lsgm, strict=True)], -delta, alternative="greater")
        high = scipy_stats.ttest_1samp([a - b for a, b in zip(ndm, lsgm, strict=True)], delta, alternative="less")
        assert (max(low.pvalue, high.pvalue) < 0.05) == (expected != "inconclusive")
        assert p["outcome"] == expected and p["delta"] == delta


def test_holms_correction_decides_a_family_together() -> None:
    """Three comparisons with p = 0.00076, 0.0290 and 0.0339 (each below 0.05 alone): Holm tests the smallest at
    0.05/3, the next at 0.05/2, and stops at the first that fails; only the first stays a difference."""
    base = [4.60, 4.61, 4.62]
    family = [paired_difference([b + d for b, d in zip(base, ds, strict=True)], base)
              for ds in ([-0.010, -0.011, -0.0105], [-0.007, -0.012, -0.013], [-0.006, -0.010, -0.012])]
    ps = [c["p"] for c in family]
    assert all(p < 0.05 for p in ps) and [c["outcome"] for c in family] == ["NDM lower"] * 3
    assert ps == pytest.approx([scipy_stats.ttest_1samp(c["differences"], 0).pvalue for c in family])
    holm(family)
    order = sorted(range(3), key=lambda i: ps[i])
    expected = {order[0]: ps[order[0]] < 0.05 / 3}
    expected[order[1]] = expected[order[0]] and ps[order[1]] < 0.05 / 2
    expected[order[2]] = expected[order[1]] and ps[order[2]] < 0.05
    assert [c["outcome"] == "NDM lower" for c in family] == [expected[i] for i in range(3)] == [True, False, False]
    assert "Holm's correction across 3 comparisons" in family[1]["verdict"]
    assert "the interval excludes 0 but not at the corrected level" in family[1]["verdict"]


def test_a_grouped_estimate_uses_groups_minus_one_degrees_of_freedom() -> None:
    e = grouped(3.847, 0.147, groups=4)
    lo, hi = e.interval()
    assert e.degrees == 3 and hi - 3.847 == pytest.approx(3.182 * 0.147, abs=1e-3)  # not 2 SE: 87% coverage at G=4
    assert lo == pytest.approx(3.847 - scipy_stats.t.ppf(0.975, 3) * 0.147)


def test_one_seed_gives_no_verdict_and_the_names_and_unit_are_said() -> None:
    single = paired_difference([4.61], [4.63])
    assert single["se"] is None and single["outcome"] == "one seed" and "no verdict" in single["verdict"]
    assert short_verdict(single) == "-0.0200 (one seed: no verdict)"
    worse = paired_difference([2.1, 2.11, 2.09], [2.0, 2.0, 2.01], unit="nats", baseline="baseline")
    assert worse["outcome"] == "baseline lower" and "nats" in worse["verdict"]
    other = paired_difference([4.70, 4.71, 4.72], [4.60, 4.60, 4.61], baseline="LSGM (equal time)")
    assert other["verdict"].startswith("NDM - LSGM (equal time) = ") and other["outcome"] == "LSGM (equal time) lower"
    tiny = paired_difference([1.0, 1.0 + 3e-6], [1.00002, 1.00002])
    assert "-1.85e-05 ± 1.50e-06" in tiny["verdict"]  # not "-0.0000 ± 0.0000"
    with pytest.raises(ValueError, match="same seeds"):
        paired_difference([1.0, 2.0], [1.0])


def test_no_sign_flip_band_reaches_95_percent_with_5_seeds_so_bonferroni_is_used() -> None:
    """A sign pattern and its negation give the same |t|: with 5 seeds 16 distinct values, smallest p 1/16 > 0.05."""
    assert not sign_flip_reachable(5) and sign_flip_reachable(6) and not sign_flip_reachable(1)
    d = [[0.1 * (g + 1) + e for e in (-0.03, 0.01, 0.02, 0.0, 0.04)] for g in range(20)]
    assert simultaneous_critical(d, method=SIGN_FLIP) == (math.inf, SIGN_FLIP)
    assert simultaneous_critical(d) == (pytest.approx(scipy_stats.t.ppf(1 - 0.05 / 40, 4), rel=1e-12), BONFERRONI)
    rows = [paired_difference(x, [0.0] * 5) for x in d]
    band = simultaneous_band(rows, method=SIGN_FLIP)
    assert band["ci"] is None and set(band["outcome"]) == {"inconclusive"}  # every d > 0, and still no verdict
    assert simultaneous_band(rows[:1] and [paired_difference([1.0], [0.0])]) is None  # one seed: no band
    with pytest.raises(ValueError, match="same >= 2 seeds"):
        simultaneous_critical([[1.0, 2.0], [1.0]])


def test_the_sign_flip_critical_value_against_brute_force() -> None:
    """6 seeds, 3 grid points: all 64 sign patterns of the residuals (d - mean at each point) by itertools and scipy's
    one-sample t; the critical value is the 4th largest max-|t| (at most 3, 5% of 64, lie above it), and it does not
    move when the differences are shifted (so that mean -+ c SE is a band)."""
    d = [[0.3, -0.1, 0.5, 0.2, 0.9, 0.4], [0.1, 0.2, 0.25, -0.3, 0.6, 0.35], [1.0, 0.7, 0.2, 0.4, 0.1, 0.5]]
    residuals = [[x - sum(row) / 6 for x in row] for row in d]
    maxima = sorted((max(abs(scipy_stats.ttest_1samp([s * x for s, x in zip(signs, row, strict=True)], 0.0).statistic)
                         for row in residuals) for signs in itertools.product((1, -1), repeat=6)), reverse=True)
    c, method = simultaneous_critical(d)
    assert method == SIGN_FLIP and c == pytest.approx(maxima[3], rel=1e-9)
    assert simultaneous_critical([[x - 5.0 for x in row] for row in d])[0] == pytest.approx(c, rel=1e-9)


def _null_rates(seeds: int, studies: int, effect: float = 0.0, points: int = 20) -> tuple[float, float]:
    """(share of studies with a band verdict anywhere, share with a pointwise one) for paired differences that drift
    smoothly along the grid (a seed's level and slope, plus noise), mean `effect` at every point."""
    rng = np.random.default_rng(seeds)
    x = np.linspace(0.0, 1.0, points)
    crit_t = scipy_stats.t.ppf(0.975, seeds - 1)
    band = pointwise = 0
    for _ in range(studies):
        d = effect + rng.normal(size=(seeds, 1)) + rng.normal(size=(seeds, 1)) * x
        d = d + 0.3 * rng.normal(size=(seeds, points))
        t = np.abs(d.mean(0)) / (d.std(0, ddof=1) / math.sqrt(seeds))
        band += bool(t.max() > simultaneous_critical(d.T.tolist())[0])
        pointwise += bool(t.max() > crit_t)
    return band / studies, pointwise / studies


@pytest.mark.parametrize("seeds", [5, 8])  # Bonferroni, sign flips
def test_the_band_keeps_the_family_wise_error_at_5_percent_under_the_null(seeds: int) -> None:
    studies = 300
    band, pointwise = _null_rates(seeds, studies)
    assert band <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / studies)  # 5% + 3 Monte Carlo SE
    assert pointwise > 0.10  # the pointwise intervals claim a difference somewhere far more often
    assert _null_rates(seeds, 50, effect=-8.0)[0] == 1.0  # a clear effect is found in every study


def test_the_band_rejects_a_clear_effect_at_every_point_and_names_the_lower_model() -> None:
    rng = np.random.default_rng(0)
    rows = [paired_difference(list(-0.05 + 0.005 * rng.normal(size=6)), [0.0] * 6) for _ in range(10)]
    band = simultaneous_band(rows)
    assert band["method"] == SIGN_FLIP and band["outcome"] == ["NDM lower"] * 10 and band["seeds"] == 6
    assert all(lo < r["ci"][0] and r["ci"][1] < hi < 0 for (lo, hi), r in zip(band["ci"], rows, strict=True))
