"""Deterministic train/val/test splits: a seeded permutation of the sorted file list, cut into parts."""

from __future__ import annotations

import math
import re

import numpy as np

from data_tools.errors import DataToolError

DEFAULT_SPLIT = "train=0.9,val=0.1"  # 27,000 / 3,000 for CelebA-HQ-256, as in LSGM / NVAE
_NAME = re.compile(r"^[A-Za-z0-9_]+$")


def parse_split(spec: str) -> list[tuple[str, float]]:
    """Parse ``train=27000,val=3000`` (counts) or ``train=0.9,val=0.1`` (fractions summing to 1)."""
    parts: list[tuple[str, float]] = []
    for item in spec.split(","):
        name, sep, value = item.strip().partition("=")
        if not sep or not _NAME.match(name):
            raise DataToolError(f"bad split entry {item!r}; expected NAME=COUNT or NAME=FRACTION, e.g. {DEFAULT_SPLIT}")
        try:
            number = float(value)
        except ValueError:
            raise DataToolError(f"bad split value {value!r} for {name!r}; expected a count or a fraction") from None
        if number < 0 or not math.isfinite(number):
            raise DataToolError(f"split {name!r} must be non-negative, got {value}")
        parts.append((name, number))
    names = [n for n, _ in parts]
    if len(set(names)) != len(names):
        raise DataToolError(f"split names must be unique, got {spec!r}")
    return parts


def resolve_split(parts: list[tuple[str, float]], n: int) -> dict[str, int]:
    """Counts per split for `n` files: fractions are floored and the remainder goes to the first split."""
    values = [v for _, v in parts]
    if all(v <= 1 for v in values) and abs(sum(values) - 1.0) < 1e-6:
        counts = [math.floor(v * n + 1e-9) for v in values]
        counts[0] += n - sum(counts)
    elif all(v == int(v) for v in values):
        counts = [int(v) for v in values]
        if sum(counts) != n:
            raise DataToolError(f"split counts add up to {sum(counts)} but the source has {n} image files; "
                                "use fractions (e.g. train=0.9,val=0.1) or matching counts")
    else:
        raise DataToolError(f"split values must be counts or fractions adding up to 1, got {values}")
    return {name: c for (name, _), c in zip(parts, counts, strict=True)}


def assign_split(n: int, counts: dict[str, int], seed: int) -> dict[str, list[int]]:
    """Indices (into the sorted file list) of each split, in the order they are written.

    One permutation of ``range(n)`` drawn from ``numpy.random.default_rng(seed)`` is cut into consecutive
    parts; the result depends only on `n`, `counts` (in order) and `seed`.
    """
    order = np.random.default_rng(seed).permutation(n)
    result: dict[str, list[int]] = {}
    start = 0
    for name, count in counts.items():
        result[name] = [int(i) for i in order[start:start + count]]
        start += count
    return result
