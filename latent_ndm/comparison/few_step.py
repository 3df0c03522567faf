"""The benchmark's few-step section: sample quality of the few-step samplers (fixed steps of the probability-flow ODE
at each NFE budget) for seed 0's NDM and LSGM and any other runs on the same VAE (NFDM, NFDM-straight), measured
by `evaluate metrics=[distance]` (`measure.few_step`), and its table for benchmark.md."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from latent_ndm.comparison import measure
from latent_ndm.progress import progress
from latent_ndm.stats import grouped, number, t_critical


def section(cfg: DictConfig, pair: dict[str, str]) -> dict[str, Any]:
    """Few-step sampling quality of seed 0's NDM and LSGM and of the `few_step.runs` (e.g. NFDM, NFDM-straight: runs
    on the same VAE export), each with `few_step.samplers` at the budgets `few_step.nfe`: energy distance to
    held-out images +- SE over sample groups (one training seed each), images/s, and the held-out NELBO of the
    bound-trained ones."""
    runs = {**pair, **{str(k): str(v) for k, v in (cfg.few_step.runs or {}).items()}}
    models = {}
    with progress(total=len(runs), desc="few-step sampling", unit="runs", enabled=cfg.progress) as bar:
        for i, (name, ckpt) in enumerate(runs.items(), 1):
            print(f"few-step sampling {name} ({ckpt}) at NFE {list(cfg.few_step.nfe)}, {i} of {len(runs)}", flush=True)
            models[name] = measure.few_step(ckpt, cfg, nelbo=name not in pair)  # the pair's NELBO is the main table's
            bar.update(1)
    vae = models["NDM"]["vae_export"]
    notes = [f"{name} ({r['run']}) was trained on another VAE export ({r['vae_export']} vs {vae}); its row does not "
             "compare like for like" for name, r in models.items() if r["vae_export"] != vae]
    return {"nfe": [int(k) for k in cfg.few_step.nfe], "num": int(cfg.few_step.num),
            "groups": int(cfg.few_step.groups), "models": models, "notes": notes}


def _interval(entry: dict[str, Any], groups: int) -> str:
    """"mean ± SE [lo, hi]" of an energy distance over `groups` sample groups (t with groups - 1 dof)."""
    e = grouped(entry["energy_distance"], entry["se"], groups)
    ci = e.interval()
    return e.text() if ci is None else f"{e.text()} [{number(ci[0])}, {number(ci[1])}]"


def markdown(section: dict[str, Any] | None) -> list[str]:
    """The few-step table: per model its forward process, held-out NELBO (bound-trained runs), and for each K the
    energy distance to held-out images ± SE and images/s; then how it was measured."""
    if not section:
        return []
    models = section["models"]
    labels = list(next(iter(models.values()))["distance"]["by_sampler"])
    cols = ["model", "forward process", "steps", "NELBO (bits/dim)",
            *[f"ED, {'adaptive ODE' if k == 'ode' else k}" for k in labels]]
    lines = ["", "## Few-step sampling: energy distance to held-out images (lower is better)", "",
             "| " + " | ".join(cols) + " |", "|" + "|".join(["---", "---", "---:"] + ["---:"] * (len(cols) - 3)) + "|"]
    for name, r in models.items():
        by = r["distance"]["by_sampler"]
        if r["kind"].endswith("straight"):
            nelbo = "not a bound"
        elif name in ("NDM", "LSGM"):
            nelbo = "(table above)"
        else:
            nelbo = "—" if r.get("nelbo_bpd") is None else f"{r['nelbo_bpd']:.4f}"
        cells = [f"{_interval(by[k], section['groups'])} ({by[k]['images_per_s']:.0f}/s, NFE {by[k]['nfe']:.0f})"
                 for k in labels]
        lines.append("| " + " | ".join([name, r["kind"], str(r.get("steps") or "—"), nelbo, *cells]) + " |")
    d = next(iter(models.values()))["distance"]
    lines += [
        "",
        f"- energy distance between {d['num']} decoded samples and {d['num']} held-out images "
        f"({d['settings']['split']} split), flattened pixels in [-1, 1], U-statistic; ± is the standard error over "
        f"{section['groups']} disjoint groups of samples and [lo, hi] its 95% interval (t with {section['groups'] - 1} "
        f"dof: ± {t_critical(section['groups'] - 1):.2f} SE); sampling noise only, one training seed per model, so "
        "these intervals say nothing about training noise; images/s include decoding",
        "- each column a sampler of the probability-flow ODE (fixed steps on a time grid, or the adaptive ODE), from "
        "the same initial noise for every sampler and model (`python -m latent_ndm.sample sampler=euler "
        "sampler.steps=K`); a straight-mode run is judged only here, never by a bound",
        "- two models differ here only where the interval of their difference excludes 0; with one training seed per "
        "model no row is a verdict on the training method (the benchmark's seeds=3 study pairs seeds)",
    ]
    lines += [f"- note: {note}" for note in section.get("notes", [])]
    return lines
