"""FID of generated samples against precomputed reference statistics (`latent_ndm.evaluation.fid`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from omegaconf import DictConfig, OmegaConf

from latent_ndm.errors import EvaluationError
from latent_ndm.evaluation import fid
from latent_ndm.evaluation.generation import batches, generate, rank_indices
from latent_ndm.evaluation.heldout import configured_sampler
from latent_ndm.evaluation.metrics.base import ChartView, Column, Metric, Panel, Row, value_of
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
    return FIDSetup(reference, weights)


def eval_fid(run: LoadedRun, procs: Processes, cfg: DictConfig, setup: FIDSetup) -> dict[str, Any]:
    """FID of `fid.num` samples (split across processes by index) against the reference, with NFE and images/s."""
    f = cfg.fid
    extractor = fid.load_feature_extractor(f.extractor, f.layer, setup.weights, procs.device)
    setup.reference.check_compatible(extractor.feature_space())
    spec = configured_sampler(f.sampler, "fid.sampler")
    moments, nfe, calls, seconds, image_size = fid.RunningMoments(), 0, 0, 0.0, None
    indices = rank_indices(f.num, procs.rank, procs.world)
    with progress(total=len(indices), desc="FID samples", unit="img", enabled=cfg.progress and procs.is_main) as bar:
        for chunk in batches(indices, f.batch_size):
            out = generate(run, chunk, spec, cfg.seed, procs.device)
            nfe, calls, seconds = nfe + out.nfe, calls + 1, seconds + out.seconds
            image_size = tuple(out.images.shape[2:])
            moments.update(extractor(fid.to_uint8(out.images)))
            bar.update(len(chunk))
    totals = procs.sum(torch.tensor([float(nfe), float(calls), seconds, float(len(indices))], dtype=torch.float64))
    moments = procs.merge_moments(moments)
    stats = fid.FeatureStats(mu=moments.mean.numpy(), sigma=moments.covariance().numpy(), n=moments.n,
                             image_size=image_size, **extractor.feature_space())
    value = fid.fid_from_stats(stats, setup.reference)
    nfe_mean = float(totals[0] / max(totals[1].item(), 1.0))
    images_per_s = float(totals[3] / max(totals[2].item(), 1e-9))  # summed over processes: per-process rate
    return {"fid": value, "num": int(moments.n), "nfe": nfe_mean, "images_per_s": images_per_s * procs.world,
            "settings": {"sampler": spec.describe(), "t_end": spec.t_end, "extractor": extractor.name,
                         "layer": extractor.layer, "reference": str(f.stats), "reference_n": setup.reference.n,
                         "seed": cfg.seed}}


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

    def prepare(self) -> None:
        self.setup = prepare_fid(self.settings)

    def compute(self, run: LoadedRun, procs: Processes) -> dict[str, Any]:
        return eval_fid(run, procs, self.cfg, self.setup)

    @classmethod
    def rows(cls, result: dict[str, Any]) -> list[Row]:
        r = result
        return [("FID", f"{r['fid']:.2f}", "", f"{r['num']} samples, {r['settings']['sampler']}, NFE "
                 f"{r['nfe']:.0f}, {r['images_per_s']:.2f} images/s, {r['settings']['extractor']}")]

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
        return [Column("FID", "fid", "fid", spec=".2f", paper="{fid:.2f}")]

    @classmethod
    def panels(cls) -> list[Panel]:
        return [fid_panel]
