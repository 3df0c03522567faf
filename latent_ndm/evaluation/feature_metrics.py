"""KID and precision/recall from torch-fidelity on the features FID uses (`latent_ndm.evaluation.fid`), and the three
together (`fidelity_metrics`). Unlike FID they need the features themselves, not only their mean and covariance: a
reference keeps them when `python -m latent_ndm.fid_stats` runs with features=true (the default)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from latent_ndm.evaluation import fid

KID_SUBSETS = 100  # torch-fidelity's defaults
KID_SUBSET_SIZE = 1000
KID_SEED = 2020
PRC_NEIGHBORHOOD = 3


def kid_from_features(generated: np.ndarray, reference: np.ndarray, subsets: int = KID_SUBSETS,
                      subset_size: int = KID_SUBSET_SIZE, seed: int = KID_SEED) -> dict[str, float]:
    """KID (torch-fidelity's): the unbiased MMD^2 with the cubic polynomial kernel, averaged over `subsets` random
    subsets of min(`subset_size`, both N) features of each set; {"kid", "kid_std" (over the subsets),
    "kid_subset_size", "kid_subsets"}."""
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

    size = min(int(subset_size), len(generated), len(reference))
    if size < 2:
        raise ValueError(f"KID needs at least 2 features in each set, got {len(generated)} and {len(reference)}")
    out = kid_features_to_metric(torch.from_numpy(np.asarray(generated)), torch.from_numpy(np.asarray(reference)),
                                 kid_subsets=int(subsets), kid_subset_size=size, rng_seed=int(seed), verbose=False)
    return {"kid": out[KEY_METRIC_KID_MEAN], "kid_std": out[KEY_METRIC_KID_STD], "kid_subset_size": size,
            "kid_subsets": int(subsets)}


def precision_recall(generated: np.ndarray, reference: np.ndarray,
                     neighborhood: int = PRC_NEIGHBORHOOD) -> dict[str, float]:
    """Precision and recall (Kynkaanniemi et al., torch-fidelity's): the share of generated features inside the
    k-NN balls of the reference features, and the converse; {"precision", "recall", "f_score"}."""
    from torch_fidelity import metric_prc

    if min(len(generated), len(reference)) <= neighborhood:
        raise ValueError(f"precision/recall with neighborhood {neighborhood} needs more features than that in each "
                         f"set, got {len(generated)} and {len(reference)}")
    out = metric_prc.prc_features_to_metric(
        torch.from_numpy(np.asarray(generated, np.float32)), torch.from_numpy(np.asarray(reference, np.float32)),
        prc_neighborhood=int(neighborhood), prc_batch_size=10000, save_cpu_ram=True, verbose=False)
    return {"precision": float(out[metric_prc.KEY_METRIC_PRECISION]),
            "recall": float(out[metric_prc.KEY_METRIC_RECALL]), "f_score": float(out[metric_prc.KEY_METRIC_F_SCORE])}


def fidelity_metrics(generated: fid.FeatureStats, reference: fid.FeatureStats, kid_subsets: int = KID_SUBSETS,
                     kid_subset_size: int = KID_SUBSET_SIZE, prc: bool = True,
                     neighborhood: int = PRC_NEIGHBORHOOD) -> dict[str, float]:
    """FID from the statistics, and KID and (with `prc`) precision/recall from the features of both sets (None
    where the reference kept no features), on the same features."""
    out: dict[str, Any] = {"fid": fid.fid_from_stats(generated, reference)}
    if generated.features is None or reference.features is None:
        return {**out, "kid": None, "kid_std": None, "precision": None, "recall": None}
    out.update(kid_from_features(generated.features, reference.features, kid_subsets, kid_subset_size))
    if prc:
        out.update(precision_recall(generated.features, reference.features, neighborhood))
    return out
