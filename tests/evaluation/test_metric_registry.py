"""A metric defined here, in the test, reaches `evaluate`'s results and table, the benchmark's table, its JSON and
its chart, with no other file touched: the registry is the only place the callers learn of metrics."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from latent_ndm.comparison import chart
from latent_ndm.comparison.study import benchmark, write
from latent_ndm.diffusion.samplers import Euler
from latent_ndm.evaluation.generation import generate
from latent_ndm.evaluation.heldout import heldout_sample
from latent_ndm.evaluation.metrics import Column, Metric
from latent_ndm.evaluation.processes import Processes
from latent_ndm.evaluation.results import format_table, read_results
from latent_ndm.evaluation.runner import evaluate
from latent_ndm.runs.config import compose_config
from latent_ndm.runs.load import LoadedRun, load_run
from latent_ndm.training.run import train
from tests.support.tiny_runs import ndm_cfg

TITLE = "mean abs. pixel error"


def abs_pixel_error(run: LoadedRun, cfg: Any, num: int, procs: Processes) -> float:
    """Mean |decoded one-step Euler sample i - held-out image i| over the first `num` pairs (pixels in [-1, 1])."""
    reference = heldout_sample(run, procs, cfg, num)
    samples = generate(run, list(range(reference.shape[0])), Euler(steps=1), cfg.seed, procs.device).images.cpu()
    return float((samples - reference).abs().mean())


def panel(ax: Any, view: Any) -> None:
    view.bars(ax, {m: view.models[m].evaluation.get("abs_pixel", {}).get("abs_pixel") for m in view.pair},
              "pixels", TITLE)


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[Metric]]:
    """The registry with one more metric, restored afterwards."""
    monkeypatch.setattr(Metric, "registry", dict(Metric.registry))

    class AbsPixel(Metric):
        name: ClassVar[str] = "abs_pixel"
        section: ClassVar[str | None] = "abs_pixel"
        defaults: ClassVar[dict[str, Any]] = {"num": 4}  # configs/evaluate.yaml has no abs_pixel section
        benchmark_pass: ClassVar[int | None] = 0

        def compute(self, run: LoadedRun, procs: Processes) -> dict[str, Any]:
            return {"abs_pixel": abs_pixel_error(run, self.cfg, int(self.settings.num), procs),
                    "num": int(self.settings.num)}

        @classmethod
        def rows(cls, result: dict[str, Any]) -> list[tuple[str, str, str, str]]:
            return [(TITLE, f"{result['abs_pixel']:.4f}", "", f"{result['num']} samples")]

        @classmethod
        def per_seed(cls, evaluation: dict[str, dict[str, Any]]) -> dict[str, float]:
            return {"abs_pixel": evaluation["abs_pixel"]["abs_pixel"]} if "abs_pixel" in evaluation else {}

        @classmethod
        def columns(cls) -> list[Column]:
            return [Column(TITLE, "abs_pixel", "abs_pixel", seeds="abs_pixel")]

        @classmethod
        def panels(cls) -> list[Any]:
            return [panel]

    yield AbsPixel


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, tiny_data: Path, tiny_vae_run: Path) -> dict[str, Path]:
    """A 2-step NDM and a 2-step LSGM on the session's tiny VAE."""
    root = tmp_path_factory.mktemp("registry")
    for name, extra in (("NDM", []), ("LSGM", ["ndm/transform=identity"])):
        train(ndm_cfg(root / name, tiny_data, tiny_vae_run / "export", "trainer.max_steps=2",
                      "trainer.val_check_interval=2", *extra))
    return {"NDM": root / "NDM", "LSGM": root / "LSGM", "root": root}


def test_a_metric_defined_here_reaches_evaluate_the_benchmark_table_json_and_chart(
        registered: type[Metric], pair: dict[str, Path]) -> None:
    cfg = compose_config("evaluate", [f"ckpt={pair['NDM']}", "progress=false", "accelerator=cpu",
                                      "metrics=[abs_pixel]"])
    out = evaluate(cfg)
    value = out.results["abs_pixel"]["abs_pixel"]
    assert value == abs_pixel_error(load_run(pair["NDM"]), cfg, 4, Processes("cpu")) and 0 < value < 2
    assert format_table(out.results, "title").splitlines()[1].split() == [*TITLE.split(), f"{value:.4f}", "4",
                                                                           "samples"]

    bench = compose_config("benchmark", [
        f"out={pair['root'] / 'out'}", f"ndm_run={pair['NDM']}", f"lsgm_run={pair['LSGM']}", "budget=2",
        "vae_export=/nowhere", "nll_limit=0", "tolerances=[1e-2]", "sample_num=2", "sample_batch_size=2",
        "step.repeats=1", "step.batch_size=2", "few_step.nfe=[]", "progress=false", "device=cpu"])
    with contextlib.redirect_stdout(io.StringIO()):
        report = benchmark(bench)
        paths = write(report, pair["root"] / "out")
    ndm = read_results(pair["NDM"] / "export")["abs_pixel"]["abs_pixel"]  # the benchmark's pass 0, on its seed
    assert ndm == value
    table = paths["md"].read_text()
    header = next(line for line in table.splitlines() if line.startswith("| model"))
    row = next(line for line in table.splitlines() if line.startswith("| NDM (F:"))
    column = [c.strip() for c in header.split("|")].index(TITLE)
    assert [c.strip() for c in row.split("|")][column] == f"{ndm:.4f}"
    written = json.loads(paths["json"].read_text())["models"]["NDM"]
    assert written["evaluation"]["abs_pixel"]["abs_pixel"] == ndm
    assert written["seeds"]["per_seed"][0]["abs_pixel"] == ndm and written["seeds"]["abs_pixel"]["mean"] == ndm
    figure = chart.draw(report)
    drawn = [ax for ax in figure.axes if ax.get_title() == TITLE]
    assert len(drawn) == 1 and [p.get_height() for p in drawn[0].patches][0] == pytest.approx(ndm)
    assert paths["png"].stat().st_size > 0
