"""Per-image likelihood bounds of a VAE with a prior over its latents (docs/MATH.md sections 6-7), in nats.

NELBO(x) = rec + neg_entropy + cross_entropy, with rec = -log p(x|z), neg_entropy = log q(z|x) and the
cross-entropy bounded by the prior (for the NDM: its NELBO at z; for N(0, I): exact).
NLL(x) <= the same with -log p(z) from the probability-flow ODE (`Prior.ode_nll`).
With k = 1 one z ~ q(z|x) is drawn and the entropy is exact; with k > 1 the importance-weighted estimate
-log p(x) ~ -(logsumexp_j log w_j - log k), log w_j = log p(x|z_j) + log p(z_j) - log q(z_j|x), is reported as
`<name>_iw` beside the k-sample average of -log w_j. With an exact log p(z) (N(0, I); the ODE up to its
dequantisation) that is LSGM's importance-weighted bound; with the NDM's one-sample NELBO in place of log p(z) the
noise of that bound biases the logsumexp low, so `nelbo_iw` of an NDM is an estimate, not a bound.
The random draws happen in a fixed order (z, then the prior's noise), so with the same generator the NELBO of an
NDM run equals its training-time validation NELBO, and that of a VAE run the VAE stage's.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from latent_ndm.common.running_sums import RunningSums
from latent_ndm.model import LatentModel, PriorBound
from vae import DiagonalGaussian, nats_to_bpd

Terms = dict[str, torch.Tensor]  # name -> (B,) nats per image
PriorTerm = Callable[[DiagonalGaussian | None, torch.Tensor], tuple[PriorBound, int]]


@torch.no_grad()
def _bound(model: LatentModel, x: torch.Tensor, k: int, name: str, generator: torch.Generator | None,
           prior_term: PriorTerm) -> tuple[Terms, int]:
    """The bound `name` with the prior term `prior_term(q or None, z) -> (PriorBound, nfe)`; q is None for the
    importance-weighted samples (which need -log p(z) at z, not an expectation over q)."""
    if k < 1:
        raise ValueError(f"k (importance samples) must be >= 1, got {k}")
    x = model.quantize(x)
    q = model.vae.encode(x)
    nfe = 0
    if k == 1:
        z = q.sample(generator)
        rec = model.reconstruction(z, x)
        ce, nfe = prior_term(q, z)
        neg_entropy = -q.entropy()
        total = rec + neg_entropy + ce.nll
        return {"rec": rec, "neg_entropy": neg_entropy, "cross_entropy": ce.nll, **ce.parts, name: total}, nfe
    samples: list[Terms] = []
    for _ in range(k):
        z = q.sample(generator)
        rec = model.reconstruction(z, x)
        ce, n = prior_term(None, z)
        nfe += n
        samples.append({"rec": rec, "neg_entropy": q.log_prob(z), "cross_entropy": ce.nll, **ce.parts})
    out = {key: torch.stack([s[key] for s in samples]).mean(0) for key in samples[0]}
    neg_log_w = torch.stack([s["rec"] + s["neg_entropy"] + s["cross_entropy"] for s in samples])
    out[name] = neg_log_w.mean(0)
    out[f"{name}_iw"] = -(torch.logsumexp(-neg_log_w, dim=0) - math.log(k))
    return out, nfe // k


def nelbo_terms(model: LatentModel, x: torch.Tensor, k: int = 1, generator: torch.Generator | None = None) -> Terms:
    """NELBO parts of images x in [-1, 1] (B, C, H, W): rec, neg_entropy, cross_entropy (+ the prior's own parts),
    nelbo (and nelbo_iw when k > 1). With k = 1 these are `LatentModel.nelbo`'s terms."""

    def term(q: DiagonalGaussian | None, z: torch.Tensor) -> tuple[PriorBound, int]:
        return (model.cross_entropy(q, z, generator) if q is not None else model.prior_nll(z, generator)), 0

    return _bound(model, x, k, "nelbo", generator, term)[0]


def nll_terms(model: LatentModel, x: torch.Tensor, k: int = 1, generator: torch.Generator | None = None,
              **solver: Any) -> tuple[Terms, int]:
    """(NLL-bound parts of images x with the prior term from the probability-flow ODE, mean NFE per solve).

    `solver`: t_eps, rtol, atol, method, probe, exact (see `ode_nll_bound`)."""

    def term(q: DiagonalGaussian | None, z: torch.Tensor) -> tuple[PriorBound, int]:
        return model.ode_nll(z, generator, **dict(solver))

    return _bound(model, x, k, "nll", generator, term)


class TermSums(RunningSums):
    """Sums of per-image terms over an evaluation (float64), reduced across processes by `compute`."""

    COUNTERS = ("_count", "_nfe", "_solves")

    def update(self, terms: Terms, nfe: int = 0) -> None:
        for name, value in terms.items():
            self.add(name, value.cpu())
        self.add("_count", float(next(iter(terms.values())).shape[0]))
        self.add("_nfe", float(nfe))
        self.add("_solves", 1.0 if nfe else 0.0)

    def compute(self, num_dims: int, reduce_sum: Callable[[torch.Tensor], torch.Tensor] = lambda t: t
                ) -> dict[str, float]:
        """{<term>_bpd: mean bits/dim over the D = num_dims image dimensions, count, nfe (mean per solve)}."""
        s = self.reduced(reduce_sum)
        count, nfe, solves = (float(s.pop(n, torch.zeros(()))) for n in self.COUNTERS)
        if count == 0:
            raise ValueError("no images were evaluated (empty split or limit=0)")
        out = {f"{n}_bpd": float(nats_to_bpd(v / count, num_dims)) for n, v in s.items()}
        out["count"] = count
        if solves:
            out["nfe"] = nfe / solves
        return out
