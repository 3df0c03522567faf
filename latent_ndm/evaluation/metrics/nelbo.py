"""The NELBO of held-out images in bits/dim (with the collapse watch of the run's VAE on them)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from omegaconf import DictConfig

from latent_ndm.evaluation.bounds import TermSums, nelbo_terms
from latent_ndm.evaluation.heldout import batch_generator, heldout_images, limited, num_dims, timed
from latent_ndm.evaluation.metrics.base import Column, Metric, ModelResults, Row
from latent_ndm.evaluation.processes import Processes
from latent_ndm.runs.load import LoadedRun
from vae import VAE
from vae.diagnostics import LatentUsage, collapse_verdict


@torch.no_grad()
def update_latent_usage(usage: LatentUsage, vae: VAE, x: torch.Tensor) -> None:
    """Add a batch of images to the collapse watch of `vae` (posterior statistics, decoder-mean reconstruction)."""
    x = vae.quantize(x)
    q = vae.encode(x)
    usage.update(q, x, vae.decode(q.mode()).mean(), decode=lambda z: vae.decode(z).mean())


def eval_nelbo(run: LoadedRun, procs: Processes, cfg: DictConfig) -> dict[str, Any]:
    """The NELBO of the held-out images, and the collapse watch of the run's VAE on them (`latent`, and `collapse`:
    a sentence when the latent carries almost nothing, else None)."""
    sums, usage, start = TermSums(), LatentUsage(), timed(procs)
    loader = heldout_images(run, cfg.split, cfg.shards, cfg.batch_size)
    for batch_idx, x in limited(loader, cfg.limit, procs, "NELBO", cfg.progress):
        sums.update(nelbo_terms(run.model, x, cfg.k, batch_generator(cfg.seed, batch_idx, procs.device)))
        update_latent_usage(usage, run.model.vae, x)
    out = sums.compute(num_dims(run), procs.sum)
    out["latent"] = usage.compute(procs.sum)
    verdict = collapse_verdict(out["latent"])
    out["collapse"] = verdict.sentence(f"the VAE of {cfg.ckpt}") if verdict else None
    t_eps = getattr(run.model.prior, "eval_t_eps", None)
    out.update(seconds=timed(procs) - start, settings={"k": cfg.k, "split": cfg.split, "limit": cfg.limit,
                                                       "seed": cfg.seed, "t_eps": t_eps})
    return out


def bound_parts(r: dict[str, Any], name: str) -> str:
    """The terms of a bound's result `r` (of metric `name`) for evaluate's table."""
    parts = [f"rec {r['rec_bpd']:.4f}", f"neg. entropy {r['neg_entropy_bpd']:.4f}",
             f"cross-entropy {r['cross_entropy_bpd']:.4f}"]
    if f"{name}_iw_bpd" in r:  # with a stochastic prior bound inside (the NELBO of an NDM) it is an estimate only
        label = "IW" if name == "nll" else "IW estimate"
        parts.append(f"k={r['settings']['k']} {label} {r[f'{name}_iw_bpd']:.4f}")
    if "nfe" in r:
        parts.append(f"NFE {r['nfe']:.0f}")
    return ", ".join(parts)


class NELBO(Metric):
    """The NELBO: reconstruction + negative entropy + the prior's cross-entropy bound, per held-out image."""

    name: ClassVar[str] = "nelbo"
    needs_bound: ClassVar[bool] = True
    benchmark_pass: ClassVar[int | None] = 0
    paired: ClassVar[tuple[str, ...]] = ("nelbo_bpd",)

    def compute(self, run: LoadedRun, procs: Processes) -> dict[str, Any]:
        return eval_nelbo(run, procs, self.cfg)

    @classmethod
    def rows(cls, result: dict[str, Any]) -> list[Row]:
        r = result
        rows = [("NELBO", f"{r['nelbo_bpd']:.4f}", "bits/dim", f"{bound_parts(r, 'nelbo')}; {int(r['count'])} images")]
        if r.get("latent"):
            u = r["latent"]
            checked = u.get("units_checked", u["latent_units"])
            rows.append(("VAE latent", f"{u.get('active_units', float('nan')):.0f}/{checked:.0f}", "used",
                         f"units the decoder uses (of {checked:.0f} checked, {u['latent_units']:.0f} in all; "
                         f"{u['varying_units']:.0f} vary); KL {u['kl_unit_nats']:.3f} nats/unit; decoder-mean PSNR "
                         f"{u['psnr']:.2f} dB; explains {100 * u['explained']:.0f}% of the variation within the "
                         "images"))
        return rows

    @classmethod
    def per_seed(cls, evaluation: dict[str, dict[str, Any]]) -> dict[str, float]:
        return {"nelbo_bpd": evaluation["nelbo"]["nelbo_bpd"]} if "nelbo" in evaluation else {}

    @classmethod
    def columns(cls) -> list[Column]:
        return [Column("NELBO bpd", "nelbo", "nelbo_bpd", seeds="nelbo_bpd")]

    @classmethod
    def measured(cls, models: dict[str, ModelResults]) -> str | None:
        nelbo = next(iter(models.values())).evaluation.get("nelbo", {})
        return f"NELBO on {int(nelbo.get('count', 0))} held-out images"
