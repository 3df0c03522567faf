"""Sample quality without a feature network: the energy distance between generated and held-out samples.

    ED(P, Q) = 2 E||X - Y|| - E||X - X'|| - E||Y - Y'||   (X, X' ~ P; Y, Y' ~ Q; Euclidean norm),

(Szekely and Rizzo) is >= 0 and 0 only for P = Q; it needs no kernel bandwidth, no density and no pretrained
features. `energy_distance` is its U-statistic estimate (the within-set means leave out the pairs of a point with
itself), so its expectation is exactly ED. For images it is taken on the flattened pixels in [-1, 1]: a documented,
fixed metric for sets without FID reference statistics (it sees colour and layout, not perceptual detail).

`grouped_energy_distance` splits both sets into G disjoint groups and estimates ED on each pair: their mean is still
unbiased, and their spread gives an honest standard error (the G estimates are independent).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def energy_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    """The U-statistic estimate of ED between samples x (n, ...) and y (m, ...), flattened per sample, float64."""
    x, y = x.reshape(x.shape[0], -1).double(), y.reshape(y.shape[0], -1).double()
    n, m = x.shape[0], y.shape[0]
    if n < 2 or m < 2:
        raise ValueError(f"the energy distance needs at least 2 points per set, got {n} and {m}")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"the two sets have samples of different sizes: {x.shape[1]} and {y.shape[1]}")
    between = torch.cdist(x, y).mean()
    within_x = torch.cdist(x, x).sum() / (n * (n - 1))
    within_y = torch.cdist(y, y).sum() / (m * (m - 1))
    return (2 * between - within_x - within_y).item()


@dataclass(frozen=True)
class GroupedDistance:
    """The mean of the per-group estimates, its standard error (None for one group) and the estimates."""

    mean: float
    se: float | None
    groups: list[float]


def grouped_energy_distance(x: torch.Tensor, y: torch.Tensor, groups: int = 4) -> GroupedDistance:
    """ED between x and y from `groups` disjoint, equal-sized slices of each (samples beyond a multiple of
    `groups` are left out); each slice needs at least 2 samples."""
    if groups < 1:
        raise ValueError(f"groups must be >= 1, got {groups}")
    per_x, per_y = x.shape[0] // groups, y.shape[0] // groups
    if per_x < 2 or per_y < 2:
        raise ValueError(f"{groups} groups of {x.shape[0]} and {y.shape[0]} samples leave fewer than 2 per group")
    values = [energy_distance(x[g * per_x:(g + 1) * per_x], y[g * per_y:(g + 1) * per_y]) for g in range(groups)]
    mean = sum(values) / groups
    se = None if groups == 1 else math.sqrt(sum((v - mean) ** 2 for v in values) / (groups - 1) / groups)
    return GroupedDistance(mean, se, values)
