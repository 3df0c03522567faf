"""Seed statistics of the comparison against hand-computed answers."""

from __future__ import annotations

import math

import pytest

from latent_ndm.stats import estimate, paired_difference, short_verdict


def test_mean_and_standard_error_of_known_values() -> None:
    e = estimate([4.60, 4.62, 4.64])  # mean 4.62, sample sd 0.02, SE 0.02 / sqrt(3)
    assert e.mean == pytest.approx(4.62) and e.se == pytest.approx(0.02 / math.sqrt(3)) and e.n == 3
    assert e.text() == "4.6200 ± 0.0115"
    one = estimate([4.5])
    assert one.se is None and one.text() == "4.5000"
    with pytest.raises(ValueError):
        estimate([])
    with pytest.raises(ValueError):
        estimate([1.0, math.nan])


def test_pairing_removes_the_noise_both_models_share() -> None:
    """Seeds move both models by the same large amount; NDM is 0.01 lower on every seed (+- 0.001)."""
    shared = [0.0, 0.30, -0.25, 0.10]
    lsgm = [4.60 + s for s in shared]
    ndm = [4.59 + s + e for s, e in zip(shared, [0.001, -0.001, 0.0, 0.0005], strict=True)]
    unpaired_se = math.hypot(estimate(ndm).se, estimate(lsgm).se)
    assert unpaired_se > 0.1  # compared model by model, 0.01 drowns in the seed noise ...
    p = paired_difference(ndm, lsgm)
    diffs = [-0.009, -0.011, -0.010, -0.0095]
    assert p["differences"] == pytest.approx(diffs)
    mean = sum(diffs) / 4
    se = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 3 / 4)
    assert p["mean"] == pytest.approx(mean) and p["se"] == pytest.approx(se) and p["n"] == 4
    assert "NDM is lower, by more than 2 standard errors" in p["verdict"]  # ... paired, it is clear


def test_a_difference_within_two_standard_errors_is_no_difference() -> None:
    p = paired_difference([4.60, 4.62, 4.58], [4.61, 4.60, 4.60])  # d = -0.01, +0.02, -0.02
    assert p["mean"] == pytest.approx(-0.01 / 3) and "no difference (within 2 standard errors)" in p["verdict"]
    lsgm_wins = paired_difference([4.70, 4.71, 4.72], [4.60, 4.60, 4.61])
    assert "LSGM is lower" in lsgm_wins["verdict"]
    single = paired_difference([4.61], [4.63])
    assert single["se"] is None and "from one seed: no error estimate" in single["verdict"]
    tiny = paired_difference([1.0, 1.0 + 3e-6], [1.00002, 1.00002])
    assert "NDM - LSGM = -1.85e-05 ± 1.50e-06" in tiny["verdict"]  # not "-0.0000 ± 0.0000"
    assert short_verdict(lsgm_wins).endswith(": LSGM lower") and short_verdict(p).endswith(": no difference")
    assert short_verdict(single) == "-0.0200 (one seed: no error estimate)"
    other = paired_difference([4.70, 4.71, 4.72], [4.60, 4.60, 4.61], baseline="LSGM (equal time)")
    assert "LSGM (equal time) is lower" in other["verdict"] and other["verdict"].startswith("NDM - LSGM (equal time)")
    assert short_verdict(other).endswith(": LSGM (equal time) lower")
    with pytest.raises(ValueError, match="same seeds"):
        paired_difference([1.0, 2.0], [1.0])


def test_the_unit_and_the_baseline_are_named_in_the_verdict() -> None:
    worse = paired_difference([2.1, 2.11, 2.09], [2.0, 2.0, 2.01], unit="nats", baseline="baseline")
    assert worse["baseline"] == "baseline" and "nats" in worse["verdict"] and "baseline is lower" in worse["verdict"]
    assert "use 3 seeds or more" in paired_difference([2.0], [1.0], unit="nats")["verdict"]
