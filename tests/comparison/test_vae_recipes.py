"""The VAE recipe table: means with t-intervals per set x recipe x budget, paired recipe differences by seed with
Holm's correction, and the study's override filling."""

from __future__ import annotations

import pytest
from scipy import stats as scipy_stats

from benchmarks.vae_recipes import RECIPES, filled
from latent_ndm.comparison.vae_recipes import markdown, summarise


def record(set_: str, recipe: str, seed: int, nelbo: float, explained: float = 0.5, budget: float = 1.0) -> dict:
    metrics = {"nelbo_bpd": nelbo, "kl_share": 0.05, "psnr": 25.0, "explained": explained, "active_fraction": 0.5}
    return {"set": set_, "recipe": recipe, "budget": budget, "seed": seed, "metrics": metrics,
            "collapsed": explained < 0.2, "seconds": 100.0}


def test_rows_carry_t_intervals_and_the_paired_differences_are_holm_corrected() -> None:
    new = [4.00, 4.10, 3.95]
    old = [4.75, 4.80, 4.70]
    records = [record("textures", "default", s, v) for s, v in enumerate(new)]
    records += [record("textures", "fixed600", s, v, explained=-1.0) for s, v in enumerate(old)]
    records += [record("faces", "default", s, v) for s, v in enumerate([2.40, 2.42, 2.38])]
    records += [record("faces", "fixed600", s, v) for s, v in enumerate([2.41, 2.40, 2.40])]
    records.append(record("faces", "default", 0, 2.30, budget=2.0))  # no baseline at 2x: no comparison
    result = summarise(records, baseline="fixed600")
    rows = {(r["set"], r["recipe"], r["budget"]): r for r in result["rows"]}
    row = rows[("textures", "default", 1.0)]
    sample = scipy_stats.tstd(new) / len(new) ** 0.5
    half = scipy_stats.t.ppf(0.975, 2) * sample
    assert row["mean"] == pytest.approx(sum(new) / 3) and row["se"] == pytest.approx(sample)
    assert row["ci"] == pytest.approx((row["mean"] - half, row["mean"] + half))
    assert rows[("textures", "fixed600", 1.0)]["collapsed"] == 3 and row["collapsed"] == 0
    assert rows[("faces", "default", 2.0)]["ci"] is None  # one seed: no interval
    (tex, faces) = result["comparisons"]
    d = [a - b for a, b in zip(new, old, strict=True)]
    assert tex["mean"] == pytest.approx(sum(d) / 3) and tex["holm"]["family"] == 2
    t = scipy_stats.ttest_rel(new, old)
    assert tex["p"] == pytest.approx(t.pvalue) and tex["outcome"] == "default lower"
    assert faces["outcome"] == "inconclusive"
    text = markdown(result, base_steps=1500)
    assert "| textures | fixed600 | 1500 | 3 | 4.7500 ± 0.0289 [4.6258, 4.8742] |" in text
    assert "| faces | default | 3000 | 1 |" in text and "Holm's correction across the 2 comparisons" in text
    assert "inconclusive" in text and "default lower" in text


def test_recipe_overrides_take_shares_of_each_run() -> None:
    assert filled(RECIPES["fixed600"], 1500) == ["stage.kl_warmup.anneal_portion=0.4",
                                                 "stage.kl_warmup.const_portion=0"]
    assert filled(RECIPES["fixed600"], 3000)[0] == "stage.kl_warmup.anneal_portion=0.2"
    assert filled(["trainer.val_check_interval={max_steps}"], 300) == ["trainer.val_check_interval=300"]
