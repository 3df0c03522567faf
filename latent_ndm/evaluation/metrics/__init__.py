# ruff: noqa: I001  (the imports register the metrics in this order: nelbo, nll, fid, distance)
"""Metrics as a registry: one module per metric (nelbo, nll, fid, distance), each a `Metric` subclass registered by
its `name`, in the order of this list (evaluate's table, the benchmark's columns and chart panels follow it).
A new metric is a module with a subclass: `evaluate`, the benchmark, its table, JSON and chart loop over
`Metric.registry`."""

from latent_ndm.evaluation.metrics.base import DASH, Column, Metric, check_metrics
from latent_ndm.evaluation.metrics.nelbo import NELBO
from latent_ndm.evaluation.metrics.nll import NLL
from latent_ndm.evaluation.metrics.fid import FID
from latent_ndm.evaluation.metrics.distance import Distance

__all__ = ["DASH", "FID", "NELBO", "NLL", "Column", "Distance", "Metric", "check_metrics"]
