"""FID of generated samples against precomputed reference statistics (`latent_ndm.evaluation.fid`), with KID (mean and
standard deviation over subsets) and precision/recall on the same features when the reference kept its features.

FID is biased upward at small N (its bias shrinks like 1/N): below `UNBIASED_N` generated images its row says so and
gives N; KID is unbiased, so the benchmark's verdicts are drawn from KID."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from omegaconf import DictConfig, OmegaConf

from latent_ndm.errors import EvaluationError
from latent_ndm.evaluation import feature_metrics, fid
from latent_ndm.evaluation.generation import batches, generate, rank_indices
from latent_ndm.evaluation.heldout import configured_sampler
from latent_ndm.evaluation.metrics.base import DASH, ChartView, Column, Metric, ModelResults, Panel, Row, fmt, value_of
from latent_ndm.evaluation.processes import Processes
from latent_ndm.progress import progress
from latent_ndm.runs.load import LoadedRun


@dataclass
class FIDSetup:
    """What FID needs, resolved before anything runs: the reference statistics and the extractor weights."""

    reference: fid.FeatureStats
    weights: Path | None


def prepare_fid(f: DictConfig) -> FIDSetup:
    """Register extractors, then load the reference statistics and find the extractor weights (one-sentence errors)."""
    fid.call_registrations(list(f.register or []))
    if f.stats is None:
        raise EvaluationError("metrics includes fid but fid.stats is not set: precompute the reference with "
                              "`python -m latent_ndm.fid_stats shards=DATA_DIR out=STATS_DIR`, then give "
                              "fid.stats=STATS_DIR")
    weights = fid.resolve_weights(f.extractor, f.weights)
    reference = fid.FeatureStats.load(f.stats)
    if str(reference.image_format).lower() in ("jpg", "jpeg"):
        warnings.warn(f"the reference {f.stats} was built from JPEG images and the samples are lossless, so FID also "
                      "measures JPEG artefacts; build the reference from PNG shards", stacklevel=2)
    return FIDSetup(reference, weights)


def eval_fid(run: LoadedRun, procs: Processes, cfg: DictConfig, setup: FIDSetup) -> dict[str, Any]:
    """FID of `fid.num` samples (split across processes by index) against the reference, with NFE and images/s."""
    f = cfg.fid
    extractor = fid.load_feature_extractor(f.extractor, f.layer, setup.weights, procs.device)
    setup.reference.check_compatible(extractor.feature_space())
    spec = configured_sampler(f.sampler, "fid.sampler")
    moments, nfe, calls, seconds, image_size = fid.RunningMoments(), 0, 0, 0.0, None
    indices = rank_indices(f.num, procs.rank, procs.world)
    kept: list[torch.Tensor] | None = [] if setup.reference.features is not None else None
    with progress(total=len(indices), desc="FID samples", unit="img", enabled=cfg.progress and procs.is_main) as bar:
        for chunk in batches(indices, f.batch_size):
            out = generate(run, chunk, spec, cfg.seed, procs.device)
            nfe, calls, seconds = nfe + out.nfe, calls + 1, seconds + out.seconds
            image_size = tuple(out.images.shape[2:])
            features = extractor(fid.to_uint8(out.images))
            moments.update(features)
            if kept is not None:
                kept.append(features)
            bar.update(len(chunk))
    totals = procs.sum(torch.tensor([float(nfe), float(calls), seconds, float(len(indices))], dtype=torch.float64))
    moments = procs.merge_moments(moments)
    stats = fid.FeatureStats(mu=moments.mean.numpy(), sigma=moments.covariance().numpy(), n=moments.n,
                             image_size=image_size, **extractor.feature_space())
    if kept is not None:
        stats.features = gather_features(kept, indices, int(f.num), int(setup.reference.mu.shape[0]), procs)
    fm = feature_metrics
    values = fm.fidelity_metrics(stats, setup.reference, int(f.get("kid_subsets", fm.KID_SUBSETS)),
                                 int(f.get("kid_subset_size", fm.KID_SUBSET_SIZE)), bool(f.get("prc", True)),
                                 int(f.get("prc_neighborhood", fm.PRC_NEIGHBORHOOD)))
    nfe_mean = float(totals[0] / max(totals[1].item(), 1.0))
    images_per_s = float(totals[3] / max(totals[2].item(), 1e-9))  # summed over processes: per-process rate
    return {**values, "num": int(moments.n), "nfe": nfe_mean, "images_per_s": images_per_s * procs.world,
            "settings": {"sampler": spec.describe(), "t_end": spec.t_end, "extractor": extractor.name,
                         "layer": extractor.layer, "reference": str(f.stats), "reference_n": setup.reference.n,
                         "weights_sha256": extractor.weights_sha256, "resize": extractor.resize, "seed": cfg.seed}}


def gather_features(kept: list[torch.Tensor], indices: range, num: int, dim: int, procs: Processes) -> Any:
    """Every process's features, row i that of sample i (float32 numpy (num, dim)): each process fills its rows of
    a zero matrix and the matrices are summed (exact: each entry is one process's value plus zeros)."""
    every = torch.zeros(num, dim, dtype=torch.float64)
    if kept:
        every[indices.start:indices.stop] = torch.cat(kept).double()
    return procs.sum(every).float().numpy()


UNBIASED_N = 10_000  # below this many samples the report calls FID biased


def fid_label(n: int) -> str:
    """The unit cell of an FID from `n` samples: "biased (N = n)" below `UNBIASED_N`, else empty."""
    return f"biased (N = {n:,})" if n < UNBIASED_N else ""


def fid_panel(ax: Any, view: ChartView) -> None:
    """FID bars of the compared pair (or a note that it was not computed), the paper's FIDs as gray lines."""
    values = {m: value_of(view.models[m], "fid", "fid") for m in view.pair}
    if all(v is None for v in values.values()):
        ax.text(0.5, 0.6, "FID not computed\n(give fid.stats=<reference statistics>)", ha="center",
                transform=ax.transAxes, fontsize=9)
        ax.set_xticks([])
    else:
        view.bars(ax, values, "FID", "FID (lower is better)")
    ax.set_title("FID (lower is better)", fontsize=10)
    view.paper_lines(ax, "fid", ".2f")


class FID(Metric):
    """FID of `fid.num` samples of `fid.sampler`, decoded, in the extractor's feature space."""

    name: ClassVar[str] = "fid"
    section: ClassVar[str | None] = "fid"
    benchmark_pass: ClassVar[int | None] = 1
    paired: ClassVar[tuple[str, ...]] = ("kid",)  # the verdict: KID is unbiased, FID at small N is not

    def prepare(self) -> None:
        self.setup = prepare_fid(self.settings)

    def compute(self, run: LoadedRun, procs: Processes) -> dict[str, Any]:
        return eval_fid(run, procs, self.cfg, self.setup)

    @classmethod
    def rows(cls, result: dict[str, Any]) -> list[Row]:
        r, st = result, result["settings"]
        run = (f"{r['num']} generated vs {st['reference_n']} reference images, {st['sampler']}, NFE {r['nfe']:.0f}, "
               f"{r['images_per_s']:.2f} images/s, {st['extractor']}")
        rows = [("FID", f"{r['fid']:.2f}", fid_label(r['num']), run)]
        if r.get("kid") is not None:
            rows.append(("KID", f"{r['kid']:.5f}", f"± {r['kid_std']:.5f}",
                         f"unbiased MMD^2 (cubic kernel); mean ± std over {r['kid_subsets']} subsets of "
                         f"{r['kid_subset_size']}"))
        else:
            rows.append(("KID", DASH, "", "the reference kept no features: recompute it with "
                         "`python -m latent_ndm.fid_stats` (features=true)"))
        if r.get("precision") is not None:
            rows.append(("precision / recall", f"{r['precision']:.3f} / {r['recall']:.3f}", "",
                         "share of samples inside the reference's k-NN balls / of reference images inside the "
                         "samples' (k = 3)"))
        return rows

    @classmethod
    def per_seed(cls, evaluation: Mapping[str, dict[str, Any]]) -> dict[str, float]:
        r = evaluation.get("fid")
        if r is None:
            return {}
        return {"fid": r["fid"], **({"kid": r["kid"]} if r.get("kid") is not None else {})}

    @classmethod
    def in_benchmark(cls, bench: DictConfig) -> bool:
        return bench.fid.stats is not None

    @classmethod
    def benchmark_config(cls, bench: DictConfig, cfg: DictConfig) -> DictConfig:
        """The benchmark's fid section; its sampler replaced whole, not merged (another sampler's settings
        differ)."""
        settings = OmegaConf.to_container(bench.fid, resolve=True)
        cfg = OmegaConf.merge(cfg, {"fid": {k: v for k, v in settings.items() if k != "sampler"}})
        cfg.fid.sampler = settings["sampler"]
        return cfg

    @classmethod
    def columns(cls) -> list[Column]:
        return [Column("FID", "fid", "fid", spec=".2f", seeds="fid", paper="{fid:.2f}")]

    @classmethod
    def notes(cls, models: Mapping[str, ModelResults], names: list[str]) -> list[str]:
        """How FID/KID were measured, and that FID below `UNBIASED_N` samples is biased (KID decides)."""
        results = [models[m].evaluation["fid"] for m in names if "fid" in models[m].evaluation]
        if not results:
            return []
        r = results[0]
        st = r["settings"]
        return [f"- FID / KID: {r['num']} samples ({st['sampler']}, NFE {r['nfe']:.0f}) against {st['reference_n']} "
                f"reference images, {st['extractor']} layer {st['layer']} (weights sha256 "
                f"{str(st.get('weights_sha256'))[:12]}, torch-fidelity's TF1 bilinear resize to {st.get('resize')}); "
                f"FID {fid_label(r['num']) or 'unbiased enough (N >= 10,000)'}; verdicts are drawn from KID, which "
                "is unbiased", *(f"- KID of {m}: {kid_cell(models[m])}" for m in names
                                  if "fid" in models[m].evaluation)]


def kid_cell(model: ModelResults) -> str:
    """A model's KID: seed 0's mean ± std over subsets, and the mean ± SE over seeds when there are several."""
    r = model.evaluation["fid"]
    if r.get("kid") is None:
        return "not computed (the reference kept no features)"
    out = f"{r['kid']:.5f} ± {r['kid_std']:.5f} (std over {r['kid_subsets']} subsets of {r['kid_subset_size']})"
    over = model.seeds.get("kid")
    if over is not None and over["n"] > 1:
        out += f"; over {over['n']} seeds {over['mean']:.5f} ± {fmt(over['se'], '.5f')} (SE)"
    return out

    @classmethod
    def panels(cls) -> list[Panel]:
        return [fid_panel]
