"""The sampler table's statistics on hand cases (means over training seeds, t-intervals against scipy, the paired
difference to the reference, "inside the reference's interval", Holm across a model's samplers) and its outputs."""

from pathlib import Path

import pytest
from scipy import stats as scipy_stats

from latent_ndm.comparison import sampler_table


def seed(values: dict[str, float], nfe: dict[str, int]) -> dict:
    return {"by_sampler": {k: {"energy_distance": v, "se": 0.01, "nfe": nfe[k], "images_per_s": 10.0,
                               "settings": {"name": k.split()[0], "grid": "uniform"}} for k, v in values.items()}}


NFE = {"euler 4 steps uniform": 4, "heun 4 steps uniform": 8, "ode": 300}
SEEDS = [seed({"euler 4 steps uniform": 2.0, "heun 4 steps uniform": 1.05, "ode": 1.0}, NFE),
         seed({"euler 4 steps uniform": 2.2, "heun 4 steps uniform": 0.98, "ode": 0.9}, NFE),
         seed({"euler 4 steps uniform": 2.4, "heun 4 steps uniform": 1.2, "ode": 1.1}, NFE)]


def test_rows_hold_the_mean_over_seeds_with_its_t_interval_and_the_paired_difference():
    m = sampler_table.summarise(SEEDS)
    rows = {r["label"]: r for r in m["rows"]}
    heun = rows["heun 4 steps uniform"]
    values = [1.05, 0.98, 1.2]
    lo, hi = scipy_stats.t.interval(0.95, 2, loc=sum(values) / 3, scale=scipy_stats.sem(values))
    assert heun["mean"] == pytest.approx(sum(values) / 3) and heun["ci"] == pytest.approx((lo, hi))
    diffs = [0.05, 0.08, 0.1]
    assert heun["vs_reference"]["differences"] == pytest.approx(diffs)
    p = scipy_stats.ttest_1samp(diffs, 0.0).pvalue
    assert heun["vs_reference"]["p"] == pytest.approx(p)
    ref_lo, ref_hi = scipy_stats.t.interval(0.95, 2, loc=1.0, scale=scipy_stats.sem([1.0, 0.9, 1.1]))
    assert bool(ref_lo <= heun["mean"] <= ref_hi) and heun["inside_reference_interval"] is True
    assert rows["euler 4 steps uniform"]["inside_reference_interval"] is False
    assert "vs_reference" not in rows["ode"]
    assert all(r["vs_reference"]["holm"]["family"] == 2 for r in m["rows"] if "vs_reference" in r)


def test_the_table_names_the_few_step_samplers_inside_the_reference_and_draws_the_chart(tmp_path: Path):
    result = sampler_table.table({"NDM": SEEDS, "LSGM": SEEDS})
    text = "\n".join(sampler_table.markdown(result, max_nfe=10))
    assert text.count("inside the reference's interval: heun 4 steps uniform") == 2
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    assert lines[1].startswith("| euler 4 steps uniform | 4 |") and "| ode | 300 |" in lines[3]
    assert "(reference)" in lines[3]
    assert "none" in "\n".join(sampler_table.markdown(result, max_nfe=5))
    path = sampler_table.chart(result, tmp_path / "samplers.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_missing_reference_is_refused():
    with pytest.raises(ValueError, match="reference sampler 'ode' is missing"):
        sampler_table.summarise([seed({"euler 4 steps uniform": 1.0}, NFE)])


def test_two_models_are_compared_per_sampler_paired_by_seed():
    shifted = [seed({k: e["energy_distance"] - 0.1 * (i + 1) for k, e in s_["by_sampler"].items()}, NFE)
               for i, s_ in enumerate(SEEDS)]
    result = sampler_table.table({"A": shifted, "B": SEEDS})
    c = sampler_table.compare(result, "A", "B")
    assert [r["label"] for r in c["rows"]] == ["euler 4 steps uniform", "heun 4 steps uniform", "ode"]
    d = c["rows"][0]["difference"]
    assert d["differences"] == pytest.approx([-0.1, -0.2, -0.3]) and d["holm"]["family"] == 3
    lo, hi = scipy_stats.t.interval(0.95, 2, loc=-0.2, scale=scipy_stats.sem([-0.1, -0.2, -0.3]))
    assert d["ci"] == pytest.approx([lo, hi])
    assert "A - B, paired by training seed" in "\n".join(sampler_table.compare_markdown(c))
    with pytest.raises(ValueError, match="same training seeds"):
        sampler_table.compare(sampler_table.table({"A": shifted[:2], "B": SEEDS}), "A", "B")
