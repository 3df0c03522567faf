"""`python -m latent_ndm.benchmark`: NDM against LSGM end to end on tiny runs (CPU, 16x16 images, 3x4x4 latents)."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from latent_ndm import progress
from latent_ndm.benchmark import run
from latent_ndm.cli import run_or_exit
from latent_ndm.comparison import measure
from latent_ndm.comparison.report import PAPER_LABEL
from latent_ndm.comparison.study import EQUAL_TIME, equal_time_steps, recorded_seconds
from latent_ndm.errors import EvaluationError
from latent_ndm.evaluation import fid
from latent_ndm.evaluation.heldout import heldout_images
from latent_ndm.evaluation.results import read_results
from latent_ndm.runs.config import compose_config
from latent_ndm.runs.load import load_run
from latent_ndm.stats import number
from latent_ndm.training.run import train
from tests.support import REPO
from tests.support.fid_stand_in import STAND_IN, register

NUM_IMAGES = 48


def tiny(data_root: Path) -> list[str]:
    """Train overrides that shrink both stages to seconds (the tiny VAE and denoiser, 16px images)."""
    return ["vae=tiny", f"data.root={data_root}", "data.resolution=16", f"data.num_images={NUM_IMAGES}",
            "data.batch_size=8", "data.shuffle_buffer=8", "data.num_workers=0", "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false", "trainer.num_sanity_val_steps=0", "logger=[csv]",
            "stage.images.num=2"]


@pytest.fixture(scope="module")
def data_root(tiny_data: Path) -> Path:
    return tiny_data


@pytest.fixture(scope="module")
def vae_export(tiny_vae_run: Path) -> Path:
    return tiny_vae_run / "export"


def bench_cfg(out: Path, *overrides: str, train_overrides: list[str] | None = None):
    cfg = compose_config("benchmark", [
        f"out={out}", "nll_limit=2", "sample_num=4", "sample_batch_size=4", "step.repeats=2", "step.batch_size=4",
        "tolerances=[1e-2,1e-3]", 'eval_overrides=["nll.rtol=1e-3","nll.atol=1e-3"]', "few_step.num=8",
        "few_step.groups=2", "few_step.nfe=[1,2]", "few_step.ode=false", *overrides])
    if train_overrides is not None:
        OmegaConf.update(cfg, "train_overrides", train_overrides)
    return cfg


def small_runs(data_root: Path) -> list[str]:
    return [*tiny(data_root), "ndm/denoiser=tiny", "ndm.latent.channels=3", "ndm.latent.resolution=4",
            "ndm.denoiser.channel_mult=[1]", "stage.images.steps=4", "stage.collapsed_vae=warn"]  # a 2-step VAE


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, data_root: Path, vae_export: Path) -> tuple[Path, dict, str]:
    """The benchmark training both priors itself (budget 2) on the tiny VAE, FID off, its output not a terminal and
    a progress line due at every step: (train_root, report, what it printed: stdout, then stderr)."""
    root = tmp_path_factory.mktemp("bench")
    cfg = bench_cfg(root / "out", f"vae_export={vae_export}", "budget=2", f"train_root={root / 'runs'}",
                    train_overrides=small_runs(data_root))
    with (contextlib.redirect_stdout(io.StringIO()) as printed, contextlib.redirect_stderr(io.StringIO()) as errors,
          pytest.MonkeyPatch.context() as patch):
        patch.setattr(progress, "INTERVAL_S", 0.0)
        report = run(cfg)
    return root, report, printed.getvalue() + errors.getvalue()


def test_benchmark_trains_both_on_the_same_vae_and_skips_fid_without_stats(trained: tuple[Path, dict, str]) -> None:
    root, report, printed = trained
    for kind, transform in (("ndm", "separable"), ("lsgm", "identity")):
        run_dir = root / "runs" / f"bench-{kind}-2"
        assert (run_dir / "export" / "ndm.safetensors").is_file()
        model = report["models"][kind.upper()]
        assert model["steps"] == 2 and model["transform"] == transform and model["run"] == str(run_dir)
    assert "fid" not in report["models"]["NDM"]["evaluation"] and report["notes"]
    table = (root / "out" / "benchmark.md").read_text()
    assert "| — |" in table and "fid.stats=STATS_DIR" in table
    assert "note: FID skipped" in printed and "| paper (Bartosh" in printed  # the table is printed at the end


def test_long_steps_print_how_far_they_are_and_the_time_left_where_no_terminal_is_attached(
        trained: tuple[Path, dict, str]) -> None:
    printed, took = trained[2], r"\d+ (s|min \d+ s|h \d+ min)"  # a duration, as `progress.duration` writes it
    for loop, unit in (("benchmark runs", "runs"), ("benchmark evaluations", "runs"), ("NELBO", "img"),
                       ("ODE sampling speed", "batch"), ("step cost", "steps"), ("few-step sampling", "runs")):
        assert re.search(rf"^{loop}: \d+/\d+ {unit} \(\d+%\), {took} elapsed, about {took} left", printed, re.M), loop
        assert re.search(rf"^{loop}: (\d+)/\1 {unit} \(100%\), done in {took}$", printed, re.M), loop
    assert "evaluating NDM seed 0" in printed and ", 1 of 2" in printed


def test_seeds_pair_the_models_reuse_finished_runs_and_report_the_paired_difference(
        trained: tuple[Path, dict, str], data_root: Path, vae_export: Path) -> None:
    root, first, _ = trained
    checkpoints = {name: root / "runs" / name / "checkpoints" / "last.ckpt"
                   for name in ("bench-ndm-2", "bench-lsgm-2", "bench-ndm-2-seed1", "bench-lsgm-2-seed1")}
    before = checkpoints["bench-ndm-2"].stat().st_mtime_ns
    cfg = bench_cfg(root / "out-seeds", f"vae_export={vae_export}", "budget=2", "seeds=2",
                    f"train_root={root / 'runs'}", train_overrides=small_runs(data_root))
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        report = run(cfg)
    assert "training NDM (seed 1)" in printed.getvalue()
    assert checkpoints["bench-ndm-2"].stat().st_mtime_ns == before  # seed 0 finished earlier: reused, not retrained
    per_seed = {name: report["models"][name]["seeds"]["per_seed"] for name in ("NDM", "LSGM")}
    assert [s["seed"] for s in per_seed["NDM"]] == [0, 1]
    assert per_seed["NDM"][1]["run"] == str(root / "runs" / "bench-ndm-2-seed1")
    assert per_seed["NDM"][0]["nelbo_bpd"] == pytest.approx(first["models"]["NDM"]["evaluation"]["nelbo"]["nelbo_bpd"])
    assert per_seed["NDM"][0]["nelbo_bpd"] != per_seed["NDM"][1]["nelbo_bpd"]  # another seed, another model
    d = [n["nelbo_bpd"] - s["nelbo_bpd"] for n, s in zip(per_seed["NDM"], per_seed["LSGM"], strict=True)]
    paired = report["paired"]["nelbo_bpd"]
    assert paired["differences"] == pytest.approx(d) and paired["mean"] == pytest.approx(sum(d) / 2)
    assert paired["se"] == pytest.approx(abs(d[0] - d[1]) / 2)  # n = 2: s = |d0 - d1| / sqrt 2, SE = s / sqrt 2
    ndm = report["models"]["NDM"]["seeds"]["nelbo_bpd"]
    values = [s["nelbo_bpd"] for s in per_seed["NDM"]]
    assert ndm["mean"] == pytest.approx(sum(values) / 2) and ndm["se"] == pytest.approx(abs(values[0] - values[1]) / 2)
    table = (root / "out-seeds" / "benchmark.md").read_text()
    assert f"{ndm['mean']:.4f} ± {number(ndm['se'])}" in table and "- paired NELBO: NDM - LSGM = " in table
    assert "seeds: 2 per model" in table and json.loads((root / "out-seeds" / "benchmark.json").read_text())["paired"]
    stamps = {name: path.stat().st_mtime_ns for name, path in checkpoints.items()}
    with contextlib.redirect_stdout(io.StringIO()):
        again = run(cfg)  # a rerun (or a killed benchmark's) trains nothing that finished
    assert {name: path.stat().st_mtime_ns for name, path in checkpoints.items()} == stamps
    assert again["paired"]["nelbo_bpd"]["differences"] == pytest.approx(d)


def test_match_time_gives_the_lsgm_the_measured_wall_clock_of_the_ndm(
        trained: tuple[Path, dict, str], data_root: Path, vae_export: Path) -> None:
    root = trained[0]
    cfg = bench_cfg(root / "out-time", f"vae_export={vae_export}", "budget=2", "match=time",
                    f"train_root={root / 'runs'}", train_overrides=small_runs(data_root))
    with contextlib.redirect_stdout(io.StringIO()):
        report = run(cfg)
    # the times the runs recorded when they were trained (finished runs are not reopened): the steps come from them
    seconds = {kind: yaml.safe_load((root / "runs" / f"bench-{kind}-2" / "export" / "metrics.yaml").read_text())[
        "train_seconds"] for kind in ("ndm", "lsgm")}
    assert seconds["ndm"] > 0 and seconds["lsgm"] > 0
    want = equal_time_steps(2, seconds["ndm"], seconds["lsgm"])
    assert want == max(1, round(2 * seconds["ndm"] / seconds["lsgm"]))
    equal = report["models"][EQUAL_TIME]
    assert equal["steps"] == want and equal["transform"] == "identity"
    assert equal["run"] == str(root / "runs" / "bench-lsgm-time-2")
    assert report["paired_equal_time"]["nelbo_bpd"]["differences"] == pytest.approx(
        [report["models"]["NDM"]["seeds"]["per_seed"][0]["nelbo_bpd"] - equal["seeds"]["per_seed"][0]["nelbo_bpd"]])
    assert report["paired_equal_time"]["nelbo_bpd"]["verdict"].startswith(f"NDM - {EQUAL_TIME} = ")
    table = (root / "out-time" / "benchmark.md").read_text()
    assert f"| {EQUAL_TIME} (F: identity, {want} steps) |" in table and "against the LSGM (equal time)" in table
    assert "training wall-clock (fit, validation included, mean over seeds): NDM " in table
    stamp = (root / "runs" / "bench-lsgm-time-2" / "checkpoints" / "last.ckpt").stat().st_mtime_ns
    with contextlib.redirect_stdout(io.StringIO()):
        again = run(cfg)  # finished runs are found, not reopened: their recorded times do not move
    assert again["models"][EQUAL_TIME]["steps"] == want
    assert {kind: yaml.safe_load((root / "runs" / f"bench-{kind}-2" / "export" / "metrics.yaml").read_text())[
        "train_seconds"] for kind in ("ndm", "lsgm")} == seconds
    assert (root / "runs" / "bench-lsgm-time-2" / "checkpoints" / "last.ckpt").stat().st_mtime_ns == stamp


def test_variants_are_compared_under_the_same_seeds_with_their_own_runs(
        trained: tuple[Path, dict, str], data_root: Path, vae_export: Path) -> None:
    root, first, _ = trained
    cfg = bench_cfg(root / "out-variants", f"vae_export={vae_export}", "budget=2", f"train_root={root / 'runs'}",
                    "nll_limit=0",
                    'variants={T10:["ndm/objective=discrete","ndm.objective.T=10"],wide:["ndm.F_size.width=1"]}',
                    train_overrides=small_runs(data_root))
    with contextlib.redirect_stdout(io.StringIO()):
        report = run(cfg)
    # a variant that changes F only trains its own NDM and is paired with the main comparison's LSGM runs
    wide = report["variants"]["wide"]["models"]
    assert wide["LSGM"]["run"] == str(root / "runs" / "bench-lsgm-2")
    assert wide["NDM"]["run"] == str(root / "runs" / "bench-ndm-wide-2")
    assert not (root / "runs" / "bench-lsgm-wide-2").exists()
    width = {run: load_run(run).config["ndm"]["transform"]["net"]["base_channels"]
             for run in (wide["NDM"]["run"], root / "runs" / "bench-ndm-2")}
    assert width[wide["NDM"]["run"]] == 2 * width[root / "runs" / "bench-ndm-2"]  # the tiny denoiser's 8 against 4
    variant = report["variants"]["T10"]
    assert variant["train_overrides"] == ["ndm/objective=discrete", "ndm.objective.T=10"]
    for name, kind in (("NDM", "ndm"), ("LSGM", "lsgm")):
        run_dir = root / "runs" / f"bench-{kind}-T10-2"
        assert variant["models"][name]["run"] == str(run_dir) and "sampling" not in variant["models"][name]
        objective = load_run(run_dir).config["ndm"]["objective"]
        assert objective["T"] == 10 and "Discrete" in objective["_target_"]
    assert variant["models"]["NDM"]["step"]["ms"] > 0 and "nelbo_bpd" in variant["paired"]
    assert "nll" not in variant["models"]["NDM"]["evaluation"] and "nll_bpd" not in variant["paired"]  # nll_limit=0
    table = (root / "out-variants" / "benchmark.md").read_text()
    assert "## Variants" in table and "| T10 | ndm/objective=discrete, ndm.objective.T=10 |" in table
    assert "### Variant T10: ndm/objective=discrete, ndm.objective.T=10" in table
    assert "| main | (the main comparison) |" in table and "(one seed: no verdict)" in table


def test_equal_time_steps_and_runs_without_a_recorded_time(tmp_path: Path) -> None:
    assert equal_time_steps(600, 156.0, 63.0) == 1486 and equal_time_steps(600, 1.0, 1e6) == 1
    with pytest.raises(EvaluationError, match=r"records no training time .* or use match=steps"):
        recorded_seconds(str(tmp_path))


def test_benchmark_of_given_runs_writes_table_json_chart_with_the_paper_row_apart(
        trained: tuple[Path, dict, str], tmp_path: Path) -> None:
    root = trained[0]
    runs = {name: root / "runs" / f"bench-{name.lower()}-2" for name in ("NDM", "LSGM")}
    register()
    images = heldout_images(load_run(runs["NDM"]), "val", None, 8)
    stats = fid.compute_stats(images, fid.load_feature_extractor(STAND_IN)).save(tmp_path / "ref")
    out = tmp_path / "out"
    cfg = bench_cfg(out, f"ndm_run={runs['NDM']}", f"lsgm_run={runs['LSGM']}", "budget=2", f"fid.stats={stats}",
                    f"fid.extractor={STAND_IN}", "fid.register=[tests.support.fid_stand_in:register]", "fid.num=8",
                    "fid.batch_size=8", "vae_export=/nowhere")  # a VAE export is needed only to train
    report = run(cfg)
    for name in ("md", "json", "png"):
        assert (out / f"benchmark.{name}").stat().st_size > 0
    assert json.loads((out / "benchmark.json").read_text()) == json.loads(json.dumps(report))
    table = (out / "benchmark.md").read_text()
    rows = [line for line in table.split("## Few-step")[0].splitlines() if line.startswith("| ")]
    assert len(rows) == 5 and rows[1].startswith("| NDM (F: separable") and rows[2].startswith("| LSGM (F: identity")
    assert all(row.startswith(f"| {PAPER_LABEL}: ") for row in rows[3:])
    assert "≤ 0.65 | 7.18" in rows[3] and "≤ 0.70 | 7.22" in rows[4]
    assert "paper" not in "".join(rows[1:3])
    for i, name in ((1, "NDM"), (2, "LSGM")):
        written = read_results(runs[name] / "export")  # the run's evaluation.json holds the table's numbers
        cells = [c.strip() for c in rows[i].strip("|").split("|")]
        subset = report["models"][name]["evaluation"]["nelbo_nll_images"]
        assert cells[1:5] == [f"{written['nelbo']['nelbo_bpd']:.4f}", f"{subset['nelbo_bpd']:.4f}",
                              f"{written['nll']['nll_bpd']:.4f}", f"{written['fid']['fid']:.2f}"]
        assert subset["count"] == written["nll"]["count"]  # the NELBO beside the NLL is of the same images
        model = report["models"][name]
        for metric in ("nelbo", "nll", "fid"):
            assert {k: v for k, v in written[metric].items() if k != "time"} == \
                {k: v for k, v in model["evaluation"][metric].items() if k != "time"}
        assert cells[5:7] == [f"{s['nfe']:.0f}" for s in model["sampling"]]
        assert cells[9] == f"{model['step']['ms']:.1f}" and model["step"]["memory_mib"] > 0
    assert report["ratios"]["step_time"] == pytest.approx(
        report["models"]["NDM"]["step"]["ms"] / report["models"]["LSGM"]["step"]["ms"])
    assert "budget: 2 optimizer steps" in table and "hardware: CPU" in table


def test_few_step_section_compares_nfdm_and_straight_runs_by_sample_quality(
        trained: tuple[Path, dict, str], data_root: Path, vae_export: Path, tmp_path: Path) -> None:
    """NDM, LSGM and the runs of few_step.runs at K Euler steps: the energy distance of each, the NELBO only of the
    bound-trained ones, the straight run marked as no bound; each number is the run's evaluation.json."""
    from latent_ndm.training.run import train
    from tests.support.tiny_runs import ndm_cfg

    root = trained[0]
    extra = {"NFDM": ["ndm/noise=neural"], "STRAIGHT": ["ndm/noise=neural", "ndm/objective=straight"]}
    for name, overrides in extra.items():
        train(ndm_cfg(tmp_path / name, data_root, vae_export, "trainer.max_steps=2", "trainer.val_check_interval=2",
                      *overrides))
    runs = {name: root / "runs" / f"bench-{name.lower()}-2" for name in ("NDM", "LSGM")}
    cfg = bench_cfg(tmp_path / "out", f"ndm_run={runs['NDM']}", f"lsgm_run={runs['LSGM']}", "budget=2",
                    "vae_export=/nowhere", "nll_limit=0", "tolerances=[1e-2]",
                    f"few_step.runs={{NFDM:{tmp_path / 'NFDM'},STRAIGHT:{tmp_path / 'STRAIGHT'}}}")
    report = run(cfg)
    section = report["few_step"]
    assert list(section["models"]) == ["NDM", "LSGM", "NFDM", "STRAIGHT"] and section["nfe"] == [1, 2]
    kinds = {name: m["kind"] for name, m in section["models"].items()}
    assert kinds == {"NDM": "ndm", "LSGM": "lsgm", "NFDM": "nfdm", "STRAIGHT": "nfdm-straight"}
    assert section["models"]["STRAIGHT"]["nelbo_bpd"] is None
    nfdm_nelbo = read_results(tmp_path / "NFDM" / "export")["nelbo"]  # on the main table's held-out images
    assert section["models"]["NFDM"]["nelbo_bpd"] == nfdm_nelbo["nelbo_bpd"]
    assert section["models"]["NFDM"]["nelbo_count"] == report["models"]["NDM"]["evaluation"]["nelbo"]["count"]
    table = (tmp_path / "out" / "benchmark.md").read_text().split("## Few-step")[1]
    rows = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| ")}
    assert "not a bound" in rows["STRAIGHT"] and "not a bound" not in rows["NFDM"]
    for name in ("NFDM", "STRAIGHT"):
        written = read_results(tmp_path / name / "export")["distance"]["by_sampler"]
        for k in (1, 2):
            label = f"euler {k} step{'s' if k > 1 else ''} uniform"
            e = section["models"][name]["distance"]["by_sampler"][label]
            assert written[label]["energy_distance"] == e["energy_distance"] and e["nfe"] == k
            assert f"{number(e['energy_distance'])} ± {number(e['se'])}" in rows[name]
    assert not section["notes"]  # all on the same VAE export


def test_user_errors_are_one_sentence(tmp_path: Path, trained: tuple[Path, dict, str]) -> None:
    with pytest.raises(EvaluationError, match=r"budget .* must be >= 1, got 0"):
        run(bench_cfg(tmp_path, "budget=0"))
    with pytest.raises(EvaluationError, match=r"match must be one of \['steps', 'time'\], got 'hours'"):
        run(bench_cfg(tmp_path, "match=hours"))
    with pytest.raises(EvaluationError, match=r"variants maps a name .* to a list of train overrides, got 'T-10'"):
        run(bench_cfg(tmp_path, 'variants={T-10:["ndm.objective.T=10"]}'))
    with pytest.raises(EvaluationError, match=r"jobs is the number of runs trained at a time .* got 0"):
        run(bench_cfg(tmp_path, "jobs=0"))
    with pytest.raises(EvaluationError, match=r"seeds is the number of training seeds .* got 0"):
        run(bench_cfg(tmp_path, "seeds=0"))
    with pytest.raises(EvaluationError, match=r"seeds=3 trains one run per seed here; leave ndm_run and lsgm_run"):
        run(bench_cfg(tmp_path, "seeds=3", f"ndm_run={tmp_path}"))
    with pytest.raises(EvaluationError, match=r"no NDM run at .*nowhere \(ndm_run\)"):
        run(bench_cfg(tmp_path, f"ndm_run={tmp_path / 'nowhere'}"))
    lsgm = trained[0] / "runs" / "bench-lsgm-2"
    with pytest.raises(EvaluationError, match=r"ndm_run=.* has F = identity"):
        run(bench_cfg(tmp_path, f"ndm_run={lsgm}", f"lsgm_run={lsgm}"))
    with pytest.raises(EvaluationError, match=r"no run at .*nfdm \(few_step.runs.NFDM\)"):
        run(bench_cfg(tmp_path, f"few_step.runs={{NFDM:{tmp_path / 'nfdm'}}}"))
    with pytest.raises(SystemExit):
        run_or_exit(run, bench_cfg(tmp_path, f"vae_export={tmp_path / 'novae'}"))


def test_jobs_train_the_runs_in_processes_of_their_own_that_the_benchmark_then_reuses(
        tmp_path: Path, trained: tuple[Path, dict, str], data_root: Path, vae_export: Path) -> None:
    """jobs=2: the same two runs as the in-process benchmark (same numbers), each trained by `python -m
    latent_ndm.train` with its output in <out>/logs/; a rerun trains nothing; the report says how they were timed."""
    _, first, _ = trained
    cfg = bench_cfg(tmp_path / "out", f"vae_export={vae_export}", "budget=2", "jobs=2",
                    f"train_root={tmp_path / 'runs'}", train_overrides=small_runs(data_root))
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        report = run(cfg)
    assert "training 2 runs, 2 at a time" in printed.getvalue()
    logs = tmp_path / "out" / "logs"
    assert sorted(p.name for p in logs.iterdir()) == ["bench-lsgm-2.log", "bench-ndm-2.log"]
    assert (logs / "bench-ndm-2.log").read_text().startswith("$ python -m latent_ndm.train stage=ndm ")
    for name in ("NDM", "LSGM"):
        got, want = (r["models"][name]["evaluation"]["nelbo"]["nelbo_bpd"] for r in (report, first))
        assert got == pytest.approx(want, rel=1e-6)
        assert report["models"][name]["run"] == str(tmp_path / "runs" / f"bench-{name.lower()}-2")
    assert ("jobs=2: 2 runs were trained here 2 at a time, so their wall-clocks were measured beside each other on "
            "the same machine") in report["notes"]
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").glob("*/checkpoints/last.ckpt")}
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        again = run(cfg)
    assert "at a time" not in printed.getvalue() and not any(n.startswith("jobs=") for n in again["notes"])
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_jobs_name_every_run_that_failed_and_its_log(tmp_path: Path, data_root: Path, vae_export: Path) -> None:
    broken = tmp_path / "broken-vae"
    shutil.copytree(vae_export, broken)
    for weights in broken.glob("*.safetensors"):
        weights.write_bytes(b"not a safetensors file")
    cfg = bench_cfg(tmp_path / "out", f"vae_export={broken}", "budget=2", "jobs=2", f"train_root={tmp_path / 'runs'}",
                    train_overrides=small_runs(data_root))
    with pytest.raises(EvaluationError) as err, contextlib.redirect_stdout(io.StringIO()):
        run(cfg)
    message = str(err.value)
    assert message.startswith("2 of 2 runs failed to train: ") and message.count("\n") == 0
    for kind in ("ndm", "lsgm"):
        assert f"{tmp_path / 'runs' / f'bench-{kind}-2'} (exit 1, output in {tmp_path / 'out' / 'logs'}" in message
    assert message.endswith("rerun the same command (finished runs are reused, cut ones resume)")
    assert "error:" in (tmp_path / "out" / "logs" / "bench-ndm-2.log").read_text()


def test_a_finished_run_is_found_when_the_resolution_came_from_the_shards_and_a_rerun_keeps_its_export(
        trained: tuple[Path, dict, str], data_root: Path, vae_export: Path) -> None:
    """data=shards leaves data.resolution to the manifest (null): the finished run filled it in, so it is found, not
    resumed; and a rerun of a finished run's own command trains nothing and leaves its export's record as it was."""
    root = trained[0]
    overrides = measure.train_overrides("ndm", str(vae_export), 2, small_runs(data_root), str(root / "runs"), 0)
    run_dir = root / "runs" / "bench-ndm-2"
    assert measure.finished_run(compose_config("train", [*overrides, "data.resolution=null"])) == run_dir
    assert measure.finished_run(compose_config("train", [*overrides, "data.resolution=8"])) is None
    record = (run_dir / "export" / "metrics.yaml").read_text()
    assert "nelbo_bpd" in record
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        train(compose_config("train", overrides))
    assert (run_dir / "export" / "metrics.yaml").read_text() == record


def test_cli_missing_vae_export_says_how_to_make_one(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "latent_ndm.benchmark", f"vae_export={tmp_path / 'novae'}",
                           f"out={tmp_path / 'out'}"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.startswith(f"error: no VAE export at {tmp_path / 'novae'} (vae_export) to train the priors "
                                  "on: run `python -m latent_ndm.train stage=vae` first")
    assert not (tmp_path / "out").exists()


def test_curve_mode_compares_learning_curves_at_equal_steps_wall_clock_and_flops(
        tmp_path: Path, data_root: Path, vae_export: Path) -> None:
    """curve=true: NDM and LSGM per seed, each validated every budget / curve_points steps into its curve.json; the
    report's curve section (paired intervals along steps, seconds and FLOPs) and curve.png."""
    cfg = bench_cfg(tmp_path / "out", f"vae_export={vae_export}", "budget=4", "seeds=2", "curve=true",
                    "curve_points=2", "curve_grid=5", f"train_root={tmp_path / 'runs'}", "nll_limit=0",
                    "tolerances=[1e-2]", "few_step.nfe=[]", train_overrides=small_runs(data_root))
    with contextlib.redirect_stdout(io.StringIO()):
        report = run(cfg)
    names = ["bench-ndm-curve-4", "bench-lsgm-curve-4", "bench-ndm-curve-4-seed1", "bench-lsgm-curve-4-seed1"]
    for name in names:
        points = json.loads((tmp_path / "runs" / name / "curve.json").read_text())
        assert [p["step"] for p in points] == [2, 4] and all(p["nelbo_bpd"] > 0 for p in points)
    assert report["models"]["NDM"]["run"] == str(tmp_path / "runs" / names[0])  # the final runs: evaluated as before
    assert report["paired"]["nelbo_bpd"]["n"] == 2
    section = report["curve"]
    assert section["seeds"] == 2 and section["every"] == 2
    flops = section["flops_per_step"]
    assert flops["NDM"] > flops["LSGM"] > 0  # F's forward, its jvp and their backward
    steps = section["axes"]["steps"]
    assert steps["grid"] == [2.0, 4.0]
    last = json.loads((tmp_path / "runs" / names[0] / "curve.json").read_text())[-1]
    assert steps["rows"][-1]["models"]["NDM"]["n"] == 2
    ndm_final = [json.loads((tmp_path / "runs" / n / "curve.json").read_text())[-1]["nelbo_bpd"] for n in names[::2]]
    lsgm_final = [json.loads((tmp_path / "runs" / n / "curve.json").read_text())[-1]["nelbo_bpd"] for n in names[1::2]]
    paired = steps["rows"][-1]["paired"]
    assert paired["differences"] == pytest.approx([a - b for a, b in zip(ndm_final, lsgm_final, strict=True)])
    assert paired["ci"] is not None and paired["dof"] == 1 and last["nelbo_bpd"] == ndm_final[0]
    flops_axis = section["axes"]["flops"]
    lo, hi = max(2 * flops["NDM"], 2 * flops["LSGM"]), min(4 * flops["NDM"], 4 * flops["LSGM"])
    assert flops_axis["range"] == ([lo, hi] if lo <= hi else None)
    for axis in ("seconds", "flops"):
        r = section["axes"][axis]
        assert r["interpolated"] and all(row["paired"]["ci"] is not None for row in r["rows"]) and r["summary"]
    table = (tmp_path / "out" / "benchmark.md").read_text()
    assert "## Learning curves" in table and "### At equal wall-clock" in table and "### At equal FLOPs" in table
    assert "interpolated between checkpoints" in table and "95% CI" in table
    assert json.loads((tmp_path / "out" / "benchmark.json").read_text())["curve"]["axes"]["steps"]["grid"] == [2, 4]
    assert (tmp_path / "out" / "curve.png").stat().st_size > 0


def test_curve_mode_user_errors_are_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(EvaluationError, match=r"curve_points .* divides budget=600 .*, got 7"):
        run(bench_cfg(tmp_path, "curve=true", "curve_points=7"))
    with pytest.raises(EvaluationError, match=r"curve=true .* use match=steps"):
        run(bench_cfg(tmp_path, "curve=true", "match=time"))
    with pytest.raises(EvaluationError, match=r"curve=true trains its own runs .* leave ndm_run and lsgm_run unset"):
        run(bench_cfg(tmp_path, "curve=true", f"ndm_run={tmp_path}", f"lsgm_run={tmp_path}"))
    with pytest.raises(EvaluationError, match=r"curve_grid .* >= 2, got 1"):
        run(bench_cfg(tmp_path, "curve=true", "curve_grid=1"))
