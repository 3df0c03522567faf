"""The learning-curve comparison (`latent_ndm.comparison.curve`) against hand-computed values: interpolation between
checkpoints, the equal-FLOP axis, no extrapolation beyond the shortest curve, the paired interval at a grid point
against scipy, where the verdict changes; and the FLOPs of a training step (`step_cost.step_flops`) by hand."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from scipy import stats as scipy_stats
from torch import nn

from latent_ndm.comparison.curve import (
    Curve,
    axis_comparison,
    common_range,
    compare_curves,
    curve_from_points,
    even_grid,
    interpolate,
    markdown,
)
from latent_ndm.comparison.curve_chart import write_curve_chart
from latent_ndm.comparison.step_cost import TrainStep, step_flops


def curve(steps: list[int], nelbo: list[float], seconds_per_step: float = 1.0) -> Curve:
    return Curve(tuple(steps), tuple(s * seconds_per_step for s in steps), tuple(nelbo))


def test_linear_interpolation_between_checkpoints_and_never_beyond() -> None:
    xs, ys = [10.0, 20.0, 30.0], [3.0, 2.0, 1.5]
    assert interpolate(xs, ys, 25.0) == pytest.approx(1.75)  # halfway between 2.0 and 1.5
    assert interpolate(xs, ys, 12.5) == pytest.approx(2.75)  # a quarter of the way from 3.0 to 2.0
    assert interpolate(xs, ys, 20.0) == 2.0 and interpolate(xs, ys, 10.0) == 3.0 and interpolate(xs, ys, 30.0) == 1.5
    for outside in (9.99, 30.01):
        with pytest.raises(ValueError, match="no extrapolation"):
            interpolate(xs, ys, outside)
    assert even_grid(2.0, 8.0, 4) == [2.0, 4.0, 6.0, 8.0] and even_grid(3.0, 3.0, 5) == [3.0]
    assert common_range([[1.0, 5.0], [2.0, 9.0]]) == (2.0, 5.0) and common_range([[1.0, 2.0], [3.0, 4.0]]) is None


def test_equal_flops_means_different_steps() -> None:
    """NDM costs 300 FLOPs a step, LSGM 200: at 6000 FLOPs NDM has taken 20 steps, LSGM 30."""
    steps = [10, 20, 30, 40]
    ndm, lsgm = curve(steps, [4.0, 3.0, 2.5, 2.2]), curve(steps, [3.8, 3.2, 2.6, 2.4])
    r = axis_comparison({"NDM": [ndm], "LSGM": [lsgm]}, {"NDM": 300.0, "LSGM": 200.0}, "flops", points=11)
    # from NDM's first checkpoint (10 x 300) to LSGM's last (40 x 200): neither is extrapolated
    assert r["range"] == [3000.0, 8000.0] and r["grid"] == pytest.approx([3000.0 + 500 * i for i in range(11)])
    at = {row["x"]: row["models"] for row in r["rows"]}
    assert at[6000.0]["NDM"]["steps"] == pytest.approx(20) and at[6000.0]["LSGM"]["steps"] == pytest.approx(30)
    assert at[6000.0]["NDM"]["mean"] == pytest.approx(3.0) and at[6000.0]["LSGM"]["mean"] == pytest.approx(2.6)
    # 4500 FLOPs: NDM at step 15 (between 4.0 and 3.0), LSGM at step 22.5 (a quarter from 3.2 to 2.6)
    assert at[4500.0]["NDM"]["steps"] == pytest.approx(15) and at[4500.0]["NDM"]["mean"] == pytest.approx(3.5)
    assert at[4500.0]["LSGM"]["steps"] == pytest.approx(22.5) and at[4500.0]["LSGM"]["mean"] == pytest.approx(3.05)
    paired = {row["x"]: row["paired"] for row in r["rows"]}
    assert paired[6000.0]["mean"] == pytest.approx(0.4) and paired[6000.0]["outcome"] == "one seed"
    steps_axis = axis_comparison({"NDM": [ndm], "LSGM": [lsgm]}, {"NDM": 300.0, "LSGM": 200.0}, "steps")
    assert steps_axis["grid"] == [10.0, 20.0, 30.0, 40.0] and not steps_axis["interpolated"]
    assert [row["paired"]["mean"] for row in steps_axis["rows"]] == pytest.approx([0.2, -0.2, -0.1, -0.2])


def test_no_axis_reaches_beyond_the_shortest_curve() -> None:
    """Seed 1's LSGM stopped at step 30 (its run was cut) and runs at 2 s a step; the others run to step 40 at 1 s."""
    runs = {"NDM": [curve([10, 20, 30, 40], [3.0, 2.5, 2.2, 2.0]), curve([10, 20, 30, 40], [3.1, 2.6, 2.3, 2.1])],
            "LSGM": [curve([10, 20, 30, 40], [3.0, 2.6, 2.4, 2.2]), curve([10, 20, 30], [3.2, 2.7, 2.5], 2.0)]}
    flops = {"NDM": 1.0, "LSGM": 1.0}
    section = compare_curves(runs, flops, points=5)
    assert section["axes"]["steps"]["grid"] == [10.0, 20.0, 30.0]  # the checkpoints every run has
    assert section["axes"]["seconds"]["range"] == [20.0, 40.0]  # seed 1's LSGM: 20 s at its first, 60 s at its last
    assert section["axes"]["flops"]["range"] == [10.0, 30.0]
    for axis in ("seconds", "flops"):
        grid = section["axes"][axis]["grid"]
        assert grid[0] == section["axes"][axis]["range"][0] and grid[-1] == section["axes"][axis]["range"][1]
    lsgm_at_40s = section["axes"]["seconds"]["rows"][-1]["models"]["LSGM"]
    assert lsgm_at_40s["steps"] == pytest.approx((40 + 20) / 2)  # seed 0 at step 40, seed 1 at step 20
    assert lsgm_at_40s["mean"] == pytest.approx((2.2 + 2.7) / 2)
    apart = {"NDM": [curve([10, 20], [3.0, 2.0])], "LSGM": [curve([30, 40], [3.0, 2.0])]}
    r = axis_comparison(apart, flops, "seconds")
    assert r["rows"] == [] and r["summary"].startswith("no common range")


def test_the_paired_interval_at_a_grid_point_is_scipys_t_with_n_minus_1_dof() -> None:
    lsgm = [[3.0, 2.0], [3.3, 2.2], [2.9, 2.1]]
    ndm = [[3.1, 1.90], [3.35, 2.08], [3.0, 1.98]]
    runs = {"NDM": [curve([10, 20], y) for y in ndm], "LSGM": [curve([10, 20], y) for y in lsgm]}
    r = axis_comparison(runs, {"NDM": 2.0, "LSGM": 1.0}, "seconds", points=5)
    row = next(row for row in r["rows"] if row["x"] == 15.0)  # halfway between the checkpoints
    d = [(n[0] + n[1]) / 2 - (b[0] + b[1]) / 2 for n, b in zip(ndm, lsgm, strict=True)]
    mean, sd = sum(d) / 3, math.sqrt(sum((x - sum(d) / 3) ** 2 for x in d) / 2)
    half = scipy_stats.t.ppf(0.975, 2) * sd / math.sqrt(3)
    p = row["paired"]
    assert p["differences"] == pytest.approx(d) and p["mean"] == pytest.approx(mean) and p["dof"] == 2
    assert p["ci"] == pytest.approx([mean - half, mean + half])
    assert p["p"] == pytest.approx(scipy_stats.ttest_rel([(n[0] + n[1]) / 2 for n in ndm],
                                                         [(b[0] + b[1]) / 2 for b in lsgm]).pvalue)
    band = row["models"]["LSGM"]
    values = [(b[0] + b[1]) / 2 for b in lsgm]
    se = scipy_stats.sem(values)
    assert band["mean"] == pytest.approx(sum(values) / 3) and band["se"] == pytest.approx(se)
    assert band["ci"] == pytest.approx([band["mean"] - scipy_stats.t.ppf(0.975, 2) * se,
                                        band["mean"] + scipy_stats.t.ppf(0.975, 2) * se])


def test_where_the_verdict_changes_along_an_axis() -> None:
    """NDM is 0.05 above LSGM at step 10, level at 20, 0.05 below at 30 (on every seed, +- 0.001)."""
    shift, noise = {10: 0.05, 20: 0.0, 30: -0.05}, [0.0, 0.001, -0.001]
    lsgm = [[2.0 + s, 1.8 + s, 1.7 + s] for s in (0.0, 0.1, 0.2)]
    ndm = [[y + shift[step] + e for step, y in zip((10, 20, 30), ys, strict=True)] for ys, e in zip(lsgm, noise,
                                                                                                     strict=True)]
    runs = {"NDM": [curve([10, 20, 30], y) for y in ndm], "LSGM": [curve([10, 20, 30], y) for y in lsgm]}
    section = compare_curves(runs, {"NDM": 1.0, "LSGM": 1.0}, points=3)
    r = section["axes"]["steps"]
    assert [row["paired"]["outcome"] for row in r["rows"]] == ["LSGM lower", "inconclusive", "NDM lower"]
    assert [(c["x"], c["from"], c["to"]) for c in r["changes"]] == [
        (20.0, "LSGM lower", "inconclusive"), (30.0, "inconclusive", "NDM lower")]
    assert r["changes"][1]["ci"] == pytest.approx(r["rows"][2]["paired"]["ci"]) and r["changes"][1]["ci"][1] < 0
    assert r["summary"].startswith("LSGM lower at 10 steps") and "NDM lower from 30 steps on (after 20 steps" in \
        r["summary"]
    steady = compare_curves({"NDM": [curve([10, 20], [y[0] - 0.05, y[1] - 0.05]) for y in lsgm],
                             "LSGM": [curve([10, 20], y[:2]) for y in lsgm]}, {"NDM": 1.0, "LSGM": 1.0}, points=3)
    assert steady["axes"]["steps"]["summary"].endswith("the verdict does not change within the budget")
    one = compare_curves({"NDM": [runs["NDM"][0]], "LSGM": [runs["LSGM"][0]]}, {"NDM": 1.0, "LSGM": 1.0}, points=3)
    assert one["axes"]["steps"]["summary"].startswith("one seed: no verdict")
    text = "\n".join(markdown({**section, "every": 10, "flops_batch_size": 8}))
    assert "## Learning curves" in text and "interpolated between checkpoints" in text and "no extrapolation" in text
    assert "### At equal FLOPs" in text and "validation not counted" in text
    assert "NDM lower" in text and "95% CI" in text


def test_a_curve_from_its_recorded_points_and_malformed_curves() -> None:
    points = [{"step": 2, "step_seconds": 0.5, "nelbo_bpd": 3.0}, {"step": 4, "step_seconds": 1.1, "nelbo_bpd": 2.5}]
    assert curve_from_points(points) == Curve((2, 4), (0.5, 1.1), (3.0, 2.5))
    with pytest.raises(ValueError, match=r"no nelbo_bpd or step_seconds at steps \[4\]"):
        curve_from_points([points[0], {"step": 4, "step_seconds": 1.0}])
    with pytest.raises(ValueError, match="steps must increase"):
        Curve((4, 2), (1.0, 2.0), (1.0, 1.0))
    with pytest.raises(ValueError, match="paired curves need the same seeds"):
        compare_curves({"NDM": [curve([1, 2], [1, 1])], "LSGM": []}, {"NDM": 1.0, "LSGM": 1.0})


def test_step_flops_of_a_tiny_linear_model_by_hand() -> None:
    """z (b, m) -> F: Linear(m, k) -> denoiser: Linear(k, n). Forward: 2bmk + 2bkn. Backward: F's weight gradient
    2bmk (z needs none), the denoiser's weight gradient 2bkn and its input's 2bkn. Biases and sums are not counted."""
    b, m, k, n = 4, 3, 5, 2
    torch.manual_seed(0)
    transform, denoiser = nn.Linear(m, k), nn.Linear(k, n)
    before = [p.detach().clone() for p in (*transform.parameters(), *denoiser.parameters())]
    params, z = [*denoiser.parameters(), *transform.parameters()], torch.randn(b, m)
    step = TrainStep(lambda: denoiser(transform(z)).mean(), params, torch.optim.SGD(params, lr=0.1), [z])
    assert step_flops(step) == 2 * b * m * k + 2 * b * k * n + 2 * b * m * k + 2 * (2 * b * k * n) == 480
    after = [*transform.parameters(), *denoiser.parameters()]
    assert all(torch.equal(x, y) and y.grad is None for x, y in zip(before, after, strict=True))  # no update


def test_the_chart_draws_one_seed_and_an_axis_without_a_common_range(tmp_path: Path) -> None:
    runs = {"NDM": [curve([10, 20], [3.0, 2.0], 2.0)], "LSGM": [curve([10, 20], [3.1, 2.2], 0.5)]}
    section = compare_curves(runs, {"NDM": 2.0, "LSGM": 1.0}, points=3)  # seconds: NDM 20-40 s, LSGM 5-10 s
    assert section["axes"]["seconds"]["rows"] == [] and section["axes"]["steps"]["rows"][0]["paired"]["ci"] is None
    assert write_curve_chart(tmp_path / "curve.png", section).stat().st_size > 0


def test_where_a_verdict_holds_comes_from_the_simultaneous_band_not_the_pointwise_intervals(tmp_path: Path) -> None:
    """5 seeds, 4 checkpoints: NDM is 0.01 lower at the last one with t = 3.5 (pointwise: 95% t 2.78, so "NDM
    lower"; Bonferroni over 4 points: t_{1 - 0.05/8, 4} = 4.31, so inconclusive) and 0.05 lower with t = 141 at the
    one before."""
    shared = [0.0, 0.2, -0.1, 0.3, 0.1]
    noise = [0.004, -0.004, 0.002, -0.002, 0.0]
    lsgm = [[3.0 + s, 2.5 + s, 2.2 + s, 2.0 + s] for s in shared]
    ndm = [[y[0] + 2 * e, y[1] + e, y[2] - 0.05 + e / 4, y[3] - 0.01 + 2 * e] for y, e in zip(lsgm, noise, strict=True)]
    runs = {"NDM": [curve([10, 20, 30, 40], y) for y in ndm], "LSGM": [curve([10, 20, 30, 40], y) for y in lsgm]}
    section = compare_curves(runs, {"NDM": 1.0, "LSGM": 1.0}, points=4)
    r = section["axes"]["steps"]
    assert [row["paired"]["outcome"] for row in r["rows"]] == ["inconclusive", "inconclusive", "NDM lower",
                                                                 "NDM lower"]
    assert [row["band"]["outcome"] for row in r["rows"]] == ["inconclusive", "inconclusive", "NDM lower",
                                                               "inconclusive"]
    assert r["band"]["method"] == "Bonferroni" and r["band"]["points"] == 4
    assert r["band"]["critical"] == pytest.approx(scipy_stats.t.ppf(1 - 0.05 / 8, 4))
    last = r["rows"][3]
    assert last["band"]["ci"][0] < last["paired"]["ci"][0] < last["paired"]["ci"][1] < 0 < last["band"]["ci"][1]
    assert [(c["x"], c["to"]) for c in r["changes"]] == [(30.0, "NDM lower")]  # pointwise: lower from 30 on
    assert [(c["x"], c["to"]) for c in r["band_changes"]] == [(30.0, "NDM lower"), (40.0, "inconclusive")]
    assert "NDM lower from 30 steps on" in r["summary"] and "inconclusive from 40 steps on" in r["summary"]
    assert "95% simultaneous band [" in r["summary"]
    text = "\n".join(markdown(section))
    assert "| 95% simultaneous band |" in text and "Bonferroni" in text
    assert "for statements about one grid point" in text
    assert write_curve_chart(tmp_path / "curve.png", section).stat().st_size > 0
