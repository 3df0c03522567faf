"""The ODE NLL bound of held-out images in bits/dim: the prior term from the probability-flow ODE (docs/MATH.md
section 6), at the training cut-off and (labelled) at another one."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from omegaconf import DictConfig, OmegaConf

from latent_ndm.evaluation.bounds import TermSums, nll_terms
from latent_ndm.evaluation.heldout import batch_generator, heldout_images, limited, num_dims, timed
from latent_ndm.evaluation.metrics.base import ChartView, Column, Metric, ModelResults, Panel, Row, value_of
from latent_ndm.evaluation.metrics.nelbo import bound_parts
from latent_ndm.evaluation.processes import Processes
from latent_ndm.runs.load import LoadedRun


def nll_cutoffs(run: LoadedRun, nll: DictConfig) -> tuple[float | None, float | None]:
    """(t_eps of the reported NLL, t_eps of the one reported beside it or None): `nll.t_eps` null means the prior's
    training t_eps, where the NELBO is taken too, so that the two bounds compare; `nll.other_t_eps` adds the NLL at
    that cut-off, labelled (a VAE run's N(0, I) prior has no cut-off: None, None)."""
    trained = getattr(run.model.prior, "t_eps", None)
    if trained is None:
        return None, None
    main = float(trained if nll.t_eps is None else nll.t_eps)
    other = nll.get("other_t_eps")
    return main, (None if other is None or float(other) == main else float(other))


def _nll_pass(run: LoadedRun, procs: Processes, cfg: DictConfig, solver: dict[str, Any]) -> dict[str, Any]:
    sums, start = TermSums(), timed(procs)
    loader = heldout_images(run, cfg.split, cfg.shards, cfg.batch_size)
    for batch_idx, x in limited(loader, cfg.limit, procs, f"NLL (ODE, t_eps {solver['t_eps']})", cfg.progress):
        terms, nfe = nll_terms(run.model, x, cfg.k, batch_generator(cfg.seed, batch_idx, procs.device),
                               **solver)
        sums.update(terms, nfe)
    out = sums.compute(num_dims(run), procs.sum)
    out.update(seconds=timed(procs) - start,
               settings={"k": cfg.k, "split": cfg.split, "limit": cfg.limit, "seed": cfg.seed, **solver})
    return out


def eval_nll(run: LoadedRun, procs: Processes, cfg: DictConfig) -> dict[str, Any]:
    """The probability-flow ODE's bound at the cut-off of `nll_cutoffs` (and, under `at_other_t_eps`, the same at
    the other cut-off), on the same images and noise as the NELBO."""
    solver = {k: v for k, v in OmegaConf.to_container(cfg.nll, resolve=True).items() if k != "other_t_eps"}
    main, other = nll_cutoffs(run, cfg.nll)
    out = _nll_pass(run, procs, cfg, {**solver, "t_eps": main})
    if other is not None:
        out["at_other_t_eps"] = _nll_pass(run, procs, cfg, {**solver, "t_eps": other})
    return out


def bounds_panel(ax: Any, view: ChartView) -> None:
    """NELBO (solid) and ODE NLL (hatched) bars per model, in the model's colour, both on the NLL's images; the axis
    zoomed onto the bars (it does not start at 0), the paper's bounds drawn only where they fall inside it."""
    models, names = view.models, view.names
    x, width = [float(i) for i in range(len(names))], 0.38
    nelbo = "nelbo_nll_images" if all(value_of(models[m], "nelbo_nll_images", "nelbo_bpd") is not None
                                      for m in names) else "nelbo"
    summary_key = {"nelbo_nll_images": "nelbo_nll_images_bpd", "nelbo": "nelbo_bpd", "nll": "nll_bpd"}
    lows, highs = [], []
    for shift, (name, key, hatch) in zip((-width / 2, width / 2), ((nelbo, "nelbo_bpd", ""),
                                                                 ("nll", "nll_bpd", "//")), strict=True):
        for i, m in enumerate(names):
            value = value_of(models[m], name, key)
            summary = models[m].seeds.get(summary_key[name])
            se = None
            if summary is not None and summary["n"] > 1:  # the mean over seeds, with its standard error
                value, se = summary["mean"], summary["se"]
            if value is not None:
                ax.bar(x[i] + shift, value, width, color=view.colors[m], hatch=hatch, edgecolor="white",
                       yerr=se, capsize=4 if se is not None else 0)
                label = f"{value:.4f}" + (f"\n±{se:.4f}" if se is not None else "")
                ax.annotate(label, (x[i] + shift, value + (se or 0)), ha="center", va="bottom", fontsize=7)
                lows.append(value - (se or 0))
                highs.append(value + (se or 0))
    ax.set_xticks(x, [f"{m}\nNELBO | NLL (ours)" for m in names], fontsize=8)
    ax.set_ylabel("bits/dim (axis zoomed, not from 0)")
    if lows:
        ax.set_ylim(*view.zoomed_range(lows, highs))
    first = models[view.pair[0]]
    count = int(first.evaluation.get("nll", {}).get("count", 0))
    same = f", same {count} images" if nelbo == "nelbo_nll_images" else ""
    seeds = first.seeds.get("nelbo_bpd", {}).get("n", 1)
    over = f"\nmean ± SE over {seeds} seeds" if seeds > 1 else ""
    ax.set_title(f"NELBO (solid), ODE NLL (hatched){same}; lower is better{over}", fontsize=9)
    view.paper_lines(ax, "nll_bpd_upper_bound", ".2f")


class NLL(Metric):
    """The ODE NLL bound: the NELBO with the prior's term from the probability-flow ODE, on the NELBO's images and
    encoder noise."""

    name: ClassVar[str] = "nll"
    section: ClassVar[str | None] = "nll"
    needs_bound: ClassVar[bool] = True
    benchmark_pass: ClassVar[int | None] = 1
    beside: ClassVar[Mapping[str, str]] = {"nelbo": "nelbo_nll_images"}  # the NELBO of the NLL's images (same z)
    paired: ClassVar[tuple[str, ...]] = ("nll_bpd",)

    def compute(self, run: LoadedRun, procs: Processes) -> dict[str, Any]:
        return eval_nll(run, procs, self.cfg)

    @classmethod
    def rows(cls, result: dict[str, Any]) -> list[Row]:
        rows = []
        for label, entry in (("NLL (ODE)", result), ("NLL (ODE), other t_eps", result.get("at_other_t_eps"))):
            if entry is None:
                continue
            s = entry["settings"]
            cut = f", t_eps {s['t_eps']:g}" if s.get("t_eps") is not None else ""
            rows.append((label, f"{entry['nll_bpd']:.4f}", "bits/dim",
                         f"{bound_parts(entry, 'nll')}; {s['method']} tol {s['rtol']:g}{cut}; {int(entry['count'])} "
                         "images"))
        return rows

    @classmethod
    def in_benchmark(cls, bench: DictConfig) -> bool:
        return bool(bench.nll_limit)

    @classmethod
    def per_seed(cls, evaluation: Mapping[str, dict[str, Any]]) -> dict[str, float]:
        out = {"nll_bpd": evaluation["nll"]["nll_bpd"]} if "nll" in evaluation else {}
        if "nelbo_nll_images" in evaluation:
            out["nelbo_nll_images_bpd"] = evaluation["nelbo_nll_images"]["nelbo_bpd"]
        return out

    @classmethod
    def columns(cls) -> list[Column]:
        return [Column("NELBO bpd (NLL images)", "nelbo_nll_images", "nelbo_bpd", seeds="nelbo_nll_images_bpd"),
                Column("NLL bpd", "nll", "nll_bpd", seeds="nll_bpd", paper="≤ {nll_bpd_upper_bound:.2f}")]

    @classmethod
    def measured(cls, models: Mapping[str, ModelResults]) -> str | None:
        nll = next(iter(models.values())).evaluation.get("nll", {})
        return (f"NLL (probability-flow ODE) on the first {int(nll.get('count', 0))}, beside the NELBO of the same "
                "images and encoder samples")

    @classmethod
    def notes(cls, models: Mapping[str, ModelResults], names: list[str]) -> list[str]:
        """The NLL at the other cut-off (`nll.other_t_eps`), seed 0, beside the table's (at the training t_eps)."""
        parts, t_eps = [], None
        for name in names:
            other = models[name].evaluation.get("nll", {}).get("at_other_t_eps")
            if other is not None:
                t_eps = other["settings"]["t_eps"]
                parts.append(f"{name} {other['nll_bpd']:.4f}")
        if not parts:
            return []
        main = next(iter(models.values())).evaluation["nll"]["settings"]["t_eps"]
        return [f"- NLL bpd at t_eps {t_eps:g} instead of the training t_eps {main:g} (the table's; the priors were "
                f"not trained below it), seed 0: {', '.join(parts)}"]

    @classmethod
    def panels(cls) -> list[Panel]:
        return [bounds_panel]
