"""The sampler table: sample quality against NFE for each sampler and time grid, over training seeds.

Input: per model, the `evaluate metrics=[distance]` results of each of its training seeds (`by_sampler`: label ->
energy distance, SE over sample groups, NFE, images/s, settings), every seed swept over the same samplers, with the
adaptive ODE at a tight tolerance among them as the reference. Per model and sampler: the energy distance's mean over
training seeds with its 95% t-interval (n - 1 dof: training and sampling noise together), and the paired difference
sampler - reference over the same seeds with its verdict (`latent_ndm.stats`, Holm's correction across the samplers
of a model). "Inside the reference's interval" is the descriptive goal of issue 25: the sampler's mean lies in the
95% interval of the reference's mean.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from latent_ndm.comparison.chart import pyplot, save_png
from latent_ndm.stats import estimate, holm, number, paired_difference, short_verdict


def summarise(seeds: list[dict[str, Any]], reference: str = "ode") -> dict[str, Any]:
    """One model's rows from its seeds' distance results (each with `by_sampler`), in the first seed's order: the
    labels every seed has; `reference` must be one of them."""
    if not seeds:
        raise ValueError("a model needs the distance results of at least one training seed")
    labels = [k for k in seeds[0]["by_sampler"] if all(k in s["by_sampler"] for s in seeds)]
    if reference not in labels:
        raise ValueError(f"the reference sampler {reference!r} is missing from some seed's results")
    ref = [s["by_sampler"][reference]["energy_distance"] for s in seeds]
    ref_ci = estimate(ref).interval()
    rows = []
    for label in labels:
        entries = [s["by_sampler"][label] for s in seeds]
        values = [e["energy_distance"] for e in entries]
        est = estimate(values)
        row = {"label": label, "settings": entries[0].get("settings", {}), "values": values,
               "mean": est.mean, "se": est.se, "n": est.n, "ci": est.interval(),
               "nfe": sum(e["nfe"] for e in entries) / len(entries),
               "images_per_s": sum(e["images_per_s"] for e in entries) / len(entries)}
        if label != reference:
            row["vs_reference"] = paired_difference(values, ref, unit="", baseline=reference, name=label)
            row["inside_reference_interval"] = None if ref_ci is None else ref_ci[0] <= est.mean <= ref_ci[1]
        rows.append(row)
    holm([r["vs_reference"] for r in rows if "vs_reference" in r])
    return {"seeds": len(seeds), "reference": reference, "rows": rows}


def table(models: dict[str, list[dict[str, Any]]], reference: str = "ode") -> dict[str, Any]:
    """`summarise` for each model."""
    return {name: summarise(seeds, reference) for name, seeds in models.items()}


def compare(result: dict[str, Any], name: str, baseline: str) -> dict[str, Any]:
    """`name` - `baseline` per sampler both have, paired by training seed (the i-th run of each: same seed, VAE and
    data), with verdicts under Holm's correction across the samplers."""
    a, b = ({r["label"]: r for r in result[m]["rows"]} for m in (name, baseline))
    if result[name]["seeds"] != result[baseline]["seeds"]:
        raise ValueError(f"{name} and {baseline} need the same training seeds to be paired, got "
                         f"{result[name]['seeds']} and {result[baseline]['seeds']}")
    rows = [{"label": k, "nfe": a[k]["nfe"],
             "difference": paired_difference(a[k]["values"], b[k]["values"], unit="", baseline=baseline, name=name)}
            for k in a if k in b]
    holm([r["difference"] for r in rows])
    return {"name": name, "baseline": baseline, "rows": sorted(rows, key=lambda r: (r["nfe"], r["label"]))}


def compare_markdown(c: dict[str, Any]) -> list[str]:
    """One row per sampler: the paired difference with its interval and verdict."""
    lines = ["", f"### {c['name']} - {c['baseline']}, paired by training seed (Holm across the samplers)", "",
             "| sampler | NFE | difference: mean ± SE [95% CI]: verdict |", "|---|---:|---|"]
    lines += [f"| {r['label']} | {r['nfe']:.0f} | {short_verdict(r['difference'])} |" for r in c["rows"]]
    return lines


def _interval(row: dict[str, Any]) -> str:
    ci = row["ci"]
    head = number(row["mean"]) if row["se"] is None else f"{number(row['mean'])} ± {number(row['se'])}"
    return head if ci is None else f"{head} [{number(ci[0])}, {number(ci[1])}]"


def markdown(result: dict[str, Any], max_nfe: int = 10) -> list[str]:
    """Per model: one row per sampler (NFE ascending, the reference last), and which samplers at <= `max_nfe`
    evaluations have their mean inside the reference's interval."""
    lines: list[str] = []
    for name, m in result.items():
        lines += ["", f"### {name} ({m['seeds']} training seeds; reference: {m['reference']})", "",
                  "| sampler | NFE | energy distance, mean ± SE [95% CI] | images/s | - reference: mean ± SE [95% CI]: "
                  "verdict | mean inside the reference's CI |", "|---|---:|---:|---:|---|---|"]
        rows = sorted(m["rows"], key=lambda r: (r["label"] == m["reference"], r["nfe"], r["label"]))
        for r in rows:
            diff = short_verdict(r["vs_reference"]) if "vs_reference" in r else "(reference)"
            inside = {True: "yes", False: "no", None: "—"}[r.get("inside_reference_interval")]
            lines.append(f"| {r['label']} | {r['nfe']:.0f} | {_interval(r)} | {r['images_per_s']:.0f} | {diff} | "
                         f"{'' if 'vs_reference' not in r else inside} |")
        hits = [r["label"] for r in rows if r.get("inside_reference_interval") and r["nfe"] <= max_nfe]
        lines += ["", f"- at <= {max_nfe} NFE, inside the reference's interval: "
                  + (", ".join(hits) if hits else "none")]
    return lines


def chart(result: dict[str, Any], path: Path) -> Path:
    """Energy distance against NFE (log axis), one panel per model, one line per sampler and grid with its 95%
    interval as error bars, and the reference's interval as a band."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(result), figsize=(5.5 * len(result), 4.2), squeeze=False)
    for ax, (name, m) in zip(axes[0], result.items(), strict=True):
        series: dict[str, list[dict[str, Any]]] = {}
        for r in m["rows"]:
            if r["label"] == m["reference"]:
                ref = r
                continue
            s = r["settings"]
            series.setdefault(f"{s.get('name', r['label'])} {s.get('grid', '')}".strip(), []).append(r)
        for key, rows in series.items():
            rows = sorted(rows, key=lambda r: r["nfe"])
            err = [[r["mean"] - r["ci"][0] for r in rows], [r["ci"][1] - r["mean"] for r in rows]] \
                if all(r["ci"] for r in rows) else None
            ax.errorbar([r["nfe"] for r in rows], [r["mean"] for r in rows], yerr=err, marker="o", capsize=3,
                        label=key)
        if ref["ci"]:
            ax.axhspan(ref["ci"][0], ref["ci"][1], color="grey", alpha=0.25,
                       label=f"{m['reference']} ({ref['nfe']:.0f} NFE), 95% CI")
        ax.axhline(ref["mean"], color="grey", lw=1)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("network evaluations per sample (NFE)")
        ax.set_ylabel("energy distance to held-out images")
        ax.set_title(f"{name}: {m['seeds']} training seeds")
        ax.legend(fontsize=7)
    return save_png(fig, path)
