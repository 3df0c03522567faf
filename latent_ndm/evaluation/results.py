"""Evaluation results: merged into `evaluation.json` beside the checkpoint (atomically), and printed as a table."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from data_tools.files import atomic_write_text
from latent_ndm.evaluation.metrics import Metric

RESULTS_NAME = "evaluation.json"


def write_results(out_dir: Path, results: dict[str, dict[str, Any]], info: dict[str, Any]) -> Path:
    """Merge `results` (by metric) into `<out_dir>/evaluation.json`; other metrics already there are kept."""
    path = Path(out_dir) / RESULTS_NAME
    existing: dict[str, Any] = {}
    if path.is_file():
        try:
            existing = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            existing = {}  # a corrupt file is replaced, not merged
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    metrics = dict(existing.get("metrics", {}))
    for name, value in results.items():
        metrics[name] = {**value, **info, "time": stamp}
    atomic_write_text(path, json.dumps({"metrics": metrics}, indent=2, sort_keys=True) + "\n")
    return path


def read_results(out_dir: Path) -> dict[str, dict[str, Any]]:
    """The metrics of `<out_dir>/evaluation.json` ({} when there is none)."""
    path = Path(out_dir) / RESULTS_NAME
    if not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8")).get("metrics", {})


def format_table(results: dict[str, dict[str, Any]], title: str) -> str:
    """A plain-text table: metric, value, unit, details; each metric's rows (`Metric.rows`) in registry order."""
    rows = [row for name, cls in Metric.registry.items() if name in results for row in cls.rows(results[name])]
    width = max(len(row[0]) for row in rows)
    lines = [title] + [f"  {m:<{width}}  {v:>8} {u:<8}  {d}" for m, v, u, d in rows]
    return "\n".join(lines)
