"""The VAE recipe table (issue 24): how `stage=vae` recipes (KL warm-up and budget) do on several image sets over
seeds.

Input: one record per run, {set, recipe, budget (a multiple of the default max_steps), seed, metrics (the run's
last validation: `nelbo_bpd`, `kl_share`, `psnr`, `explained`, `active_units`, `units_checked`, ...), collapsed
(the watch's verdict), seconds}. Per set, recipe and budget: the validation NELBO's mean over seeds with its 95%
t-interval (n - 1 dof), the means of the other numbers, and how many seeds collapsed. Per set and budget, each recipe
against the baseline recipe: the paired NELBO difference over the seeds both ran (same seed, same data order and
initial weights), with its verdict from `latent_ndm.stats`; Holm's correction across all the comparisons of the
table, as one family.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from latent_ndm.stats import estimate, holm, number, paired_difference, short_verdict

KEY = ("set", "recipe", "budget")


def _mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return math.fsum(finite) / len(finite) if finite else float("nan")


def summarise(records: list[dict[str, Any]], baseline: str | None = None) -> dict[str, Any]:
    """{"rows": one per (set, recipe, budget) in first-seen order, "comparisons": recipe - baseline per (set,
    budget), Holm-corrected}."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        groups[tuple(r[k] for k in KEY)].append(r)
    rows = []
    for key, runs in groups.items():
        runs = sorted(runs, key=lambda r: r["seed"])
        m = [r["metrics"] for r in runs]
        est = estimate([x["nelbo_bpd"] for x in m])
        rows.append({**dict(zip(KEY, key, strict=True)), "seeds": [r["seed"] for r in runs],
                     "nelbo": [x["nelbo_bpd"] for x in m], "mean": est.mean, "se": est.se, "n": est.n,
                     "ci": est.interval(),
                     "kl_share": _mean([x["kl_share"] for x in m]), "psnr": _mean([x["psnr"] for x in m]),
                     "explained": _mean([x["explained"] for x in m]),
                     "explained_min": min(x["explained"] for x in m),
                     "active_fraction": _mean([x.get("active_fraction", float("nan")) for x in m]),
                     "collapsed": sum(bool(r["collapsed"]) for r in runs),
                     "seconds": _mean([float(r.get("seconds") or float("nan")) for r in runs])})
    comparisons = []
    if baseline is not None:
        by_key = {tuple(r[k] for k in KEY): r for r in rows}
        for row in rows:
            base = by_key.get((row["set"], baseline, row["budget"]))
            if row["recipe"] == baseline or base is None:
                continue
            seeds = sorted(set(row["seeds"]) & set(base["seeds"]))
            if not seeds:
                continue
            a = [row["nelbo"][row["seeds"].index(s)] for s in seeds]
            b = [base["nelbo"][base["seeds"].index(s)] for s in seeds]
            comparisons.append({"set": row["set"], "budget": row["budget"], "seeds": seeds,
                                **paired_difference(a, b, baseline=baseline, name=row["recipe"])})
        holm(comparisons)
    return {"baseline": baseline, "rows": rows, "comparisons": comparisons}


def markdown(result: dict[str, Any], base_steps: int) -> str:
    """The table and the comparisons as Markdown."""
    lines = ["| set | recipe | steps | seeds | val NELBO (bits/dim), mean ± SE [95% CI] | KL share | PSNR (dB) | "
             "explains (mean, lowest) | decoder uses | collapsed |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        ci = "" if r["ci"] is None else f" [{number(r['ci'][0])}, {number(r['ci'][1])}]"
        se = "" if r["se"] is None else f" ± {number(r['se'])}"
        lines.append(f"| {r['set']} | {r['recipe']} | {round(r['budget'] * base_steps)} | {r['n']} | "
                     f"{number(r['mean'])}{se}{ci} | {100 * r['kl_share']:.1f}% | {r['psnr']:.2f} | "
                     f"{100 * r['explained']:.0f}%, {100 * r['explained_min']:.0f}% | "
                     f"{100 * r['active_fraction']:.0f}% | {r['collapsed']} of {r['n']} |")
    if result["comparisons"]:
        family = len([c for c in result["comparisons"] if c.get("p") is not None])
        lines += ["", f"Paired by seed, recipe - {result['baseline']} (val NELBO, bits/dim; lower is better; Holm's "
                  f"correction across the {family} comparisons):", "",
                  "| set | steps | recipe | difference, mean ± SE [95% CI]: verdict |", "|---|---|---|---|"]
        for c in result["comparisons"]:
            lines.append(f"| {c['set']} | {round(c['budget'] * base_steps)} | {c['name']} | {short_verdict(c)} |")
    return "\n".join(lines) + "\n"
