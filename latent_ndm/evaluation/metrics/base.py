"""A metric: one class per choice, registered by `name` (like the samplers), that says everything about itself.

How it is computed for `python -m latent_ndm.evaluate metrics=[...]` (`compute`, after `prepare` checked what it
needs), its rows in evaluate's table (`rows`), and for the benchmark: whether and in which evaluation pass it runs
(`benchmark_pass`, `in_benchmark`), its per-seed values (`per_seed`; `paired`: those compared NDM - baseline by
seed), its columns in the table (`columns`), its lines under it (`notes`, `measured`) and its chart panels
(`panels`). A metric's settings are the section `section` of configs/evaluate.yaml over its `defaults`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from omegaconf import DictConfig, OmegaConf

from latent_ndm.errors import EvaluationError

DASH = "—"
Row = tuple[str, str, str, str]  # evaluate's table: metric, value, unit, details


class ModelResults(Protocol):
    """What the benchmark's report holds of one model that a metric reads: its evaluations by metric (seed 0) and
    its per-seed summary ({"per_seed": [...], key: {"mean", "se", "n"}, ...})."""

    evaluation: dict[str, dict[str, Any]]
    seeds: dict[str, Any]


class ChartView(Protocol):
    """What a metric's chart panel is given: the models (in table order `names`, the compared pair `pair`), their
    colours, and the chart's drawing helpers."""

    models: Mapping[str, ModelResults]
    names: list[str]
    pair: tuple[str, ...]
    colors: Mapping[str, str]

    def bars(self, ax: Any, values: Mapping[str, float | None], ylabel: str, title: str) -> None: ...

    def paper_lines(self, ax: Any, key: str, fmt: str) -> None: ...

    def zoomed_range(self, lows: list[float], highs: list[float]) -> tuple[float, float]: ...


Panel = Callable[[Any, ChartView], None]


@dataclass(frozen=True)
class Column:
    """A column of the benchmark's table: `title`; a model's cell is `result[key]` of its `metric` formatted by
    `spec`, or with `seeds` (a per-seed key) the mean ± SE over the seeds when there are several; the paper's row
    shows `paper` formatted with the paper's numbers of that model (None: a dash)."""

    title: str
    metric: str
    key: str
    spec: str = ".4f"
    seeds: str | None = None
    paper: str | None = None


def fmt(value: float | None, spec: str) -> str:
    """`value` formatted by `spec`, a dash when it is missing or not finite."""
    return DASH if value is None or not math.isfinite(value) else format(value, spec)


def value_of(model: ModelResults, name: str, key: str) -> float | None:
    """A number of the model's evaluation (None when that metric was not computed)."""
    entry = model.evaluation.get(name)
    return None if entry is None else float(entry[key])


class Metric:
    """One metric of `evaluate` and the benchmark. A subclass with a `name` is a choice of `metrics=[...]` and
    registers itself."""

    name: ClassVar[str] = ""
    registry: ClassVar[dict[str, type[Metric]]] = {}
    section: ClassVar[str | None] = None  # its settings: this section of configs/evaluate.yaml
    defaults: ClassVar[Mapping[str, Any]] = {}  # settings the YAML does not give (a section it lacks)
    needs_bound: ClassVar[bool] = False  # only runs trained on a likelihood bound have it
    benchmark_pass: ClassVar[int | None] = None  # 0: on the `limit` images; 1: on the `nll_limit` ones; None: not run
    beside: ClassVar[Mapping[str, str]] = {}  # in the benchmark: metric -> the key its result of this pass is kept as
    paired: ClassVar[tuple[str, ...]] = ()  # per-seed keys the benchmark compares NDM - baseline by seed

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("name"):
            Metric.registry[cls.name] = cls

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg
        self.settings = self.settings_of(cfg)

    @classmethod
    def settings_of(cls, cfg: DictConfig) -> Any:
        """Its section of `cfg` over its `defaults` (None without a section)."""
        if cls.section is None:
            return None
        given = cfg.get(cls.section)
        if not cls.defaults:
            return given
        return OmegaConf.merge(OmegaConf.create(dict(cls.defaults)), given or {})

    def prepare(self) -> None:
        """Check and load what it needs before any model is evaluated (one-sentence errors)."""

    def compute(self, run: Any, procs: Any) -> dict[str, Any]:
        """Its result on the loaded run, on the processes `procs` (a JSON-able dict)."""
        raise NotImplementedError

    @classmethod
    def rows(cls, result: dict[str, Any]) -> list[Row]:
        """Its rows in evaluate's table."""
        raise NotImplementedError

    @classmethod
    def in_benchmark(cls, bench: DictConfig) -> bool:
        """Whether the benchmark (configs/benchmark.yaml) evaluates it in its main table."""
        return cls.benchmark_pass is not None

    @classmethod
    def benchmark_config(cls, bench: DictConfig, cfg: DictConfig) -> DictConfig:
        """The evaluate config `cfg` with its settings from the benchmark's config."""
        return cfg

    @classmethod
    def per_seed(cls, evaluation: Mapping[str, dict[str, Any]]) -> dict[str, float]:
        """Its numbers in one seed's evaluation (by metric), by the key they are summarised under."""
        return {}

    @classmethod
    def columns(cls) -> list[Column]:
        """Its columns in the benchmark's table."""
        return []

    @classmethod
    def measured(cls, models: Mapping[str, ModelResults]) -> str | None:
        """How it was measured, a clause of the line under the benchmark's table (None: nothing to say)."""
        return None

    @classmethod
    def notes(cls, models: Mapping[str, ModelResults], names: list[str]) -> list[str]:
        """Lines under the benchmark's table (`names`: the models in table order)."""
        return []

    @classmethod
    def panels(cls) -> list[Panel]:
        """Its panels in the benchmark's chart."""
        return []


def check_metrics(metrics: list[str]) -> list[str]:
    """`metrics` without repeats, each a registered metric (else one EvaluationError naming the choices)."""
    unknown = [m for m in metrics if m not in Metric.registry]
    if unknown or not metrics:
        raise EvaluationError(f"metrics must be a non-empty list drawn from {list(Metric.registry)}, got "
                              f"{list(metrics)}")
    return list(dict.fromkeys(metrics))
