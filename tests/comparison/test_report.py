"""The benchmark report's chart helpers: the zoomed bits/dim axis and the list of paired comparisons."""

from __future__ import annotations

import pytest

from latent_ndm.comparison.chart import comparisons, symlog_threshold, zoomed_range
from latent_ndm.comparison.report import EQUAL_TIME, Comparison
from latent_ndm.stats import paired_difference


def test_the_bpd_axis_is_zoomed_onto_the_bars_and_keeps_their_errors() -> None:
    lo, hi = zoomed_range([4.6095 - 0.0027, 4.6250 - 0.0046], [4.6095 + 0.0027, 4.6250 + 0.0046])
    assert 4.55 < lo < 4.6068 and 4.6296 < hi < 4.70         # a 0.02 difference fills the axis instead of 0.4%
    lo, hi = zoomed_range([1.0], [1.0])                        # one bar: a fixed minimum margin
    assert lo == pytest.approx(0.99) and hi == pytest.approx(1.02)


def comparison(paired: dict, step_time: float, **more: object) -> Comparison:
    return Comparison(budget=2, seeds=3, match="steps", margin=None, paired=paired, command="", hardware="CPU",
                      tolerances=[], notes=[], models={}, ratios={"step_time": step_time}, time="", **more)


def report_with_variants() -> Comparison:
    main = paired_difference([4.61, 4.60, 4.61], [4.63, 4.62, 4.62])
    equal = paired_difference([4.61, 4.60, 4.61], [4.58, 4.57, 4.57], baseline=EQUAL_TIME)
    half = paired_difference([4.62, 4.61, 4.62], [4.63, 4.62, 4.62])
    return comparison({"nelbo_bpd": main}, 2.8, paired_equal_time={"nelbo_bpd": equal},
                      variants={"half": comparison({"nelbo_bpd": half}, 1.9), "nll_only": comparison({}, 1.0)})


def test_comparisons_list_every_paired_nelbo_difference_with_its_step_ratio() -> None:
    rows = comparisons(report_with_variants())
    assert [r["label"] for r in rows] == ["main", f"vs {EQUAL_TIME}", "half"]
    assert [r["step_ratio"] for r in rows] == [2.8, None, 1.9]
    assert rows[0]["mean"] == pytest.approx(-0.0166667, abs=1e-6) and rows[0]["n"] == 3
    assert rows[1]["mean"] == pytest.approx(0.0333333, abs=1e-6)


def test_a_symlog_axis_only_when_one_difference_dwarfs_the_others() -> None:
    """The reach of a difference is the far end of its 95% interval (no interval: its mean)."""
    rows = [{"mean": -0.0079, "ci": [-0.0122, -0.0036]}, {"mean": -0.0154, "ci": [-0.0317, 0.0009]}]
    assert symlog_threshold(rows) is None
    rows.append({"mean": -2.25, "ci": [-2.68, -1.82]})       # a T = 10 variant beside the F sizes
    assert symlog_threshold(rows) == pytest.approx(2 * 0.0122)
    assert symlog_threshold([{"mean": 0.0, "ci": None}, {"mean": 1.0, "ci": [0.6, 1.4]}]) is None


def test_rows_carry_the_interval_and_the_outcome() -> None:
    rows = comparisons(report_with_variants())
    main = report_with_variants().paired["nelbo_bpd"]
    assert rows[0]["ci"] == pytest.approx(main["ci"]) and rows[0]["outcome"] == main["outcome"]


def test_the_paired_and_trade_off_panels_draw() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from latent_ndm.comparison.chart import _paired_panel, _tradeoff_panel

    rows = comparisons(report_with_variants())
    fig, axes = plt.subplots(1, 2)
    _paired_panel(axes[0], rows)
    _tradeoff_panel(axes[1], rows)
    assert len(axes[0].get_yticklabels()) == 3 and axes[1].get_xlabel().startswith("training step time")
    plt.close(fig)


def test_a_report_with_variants_decides_its_comparisons_together() -> None:
    from latent_ndm.comparison.report import holm_lines
    from latent_ndm.comparison.study import decide_together

    report = report_with_variants()
    alone = {label: p["outcome"] for label, p in (("main", report.paired["nelbo_bpd"]),
                                                  ("equal", report.paired_equal_time["nelbo_bpd"]),
                                                  ("half", report.variants["half"].paired["nelbo_bpd"]))}
    decide_together(report)
    assert report.holm == {"nelbo_bpd": ["main", f"main vs {EQUAL_TIME}", "half"]}
    family = [report.paired["nelbo_bpd"], report.paired_equal_time["nelbo_bpd"],
              report.variants["half"].paired["nelbo_bpd"]]
    assert all(p["holm"]["family"] == 3 for p in family)
    thresholds = sorted(p["holm"]["alpha"] for p in family)
    assert thresholds == pytest.approx([0.05 / 3, 0.05 / 2, 0.05])
    for p, before in zip(family, alone.values(), strict=True):  # Holm can only make a verdict more cautious
        assert p["outcome"] == before or p["outcome"] == "inconclusive"
    assert holm_lines(report)[0].startswith("- Holm's correction: the 3 paired NELBO differences (main, main vs")
