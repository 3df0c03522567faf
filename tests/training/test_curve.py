"""The learning curve every run records (`<run>/curve.json`, `LearningCurve`): a point per validation of the EMA
weights, its step and times; a resumed run repeats the points after its checkpoint instead of keeping stale ones."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from latent_ndm.training.callbacks.curve import CURVE_FILE, read_curve, write_curve
from latent_ndm.training.run import train
from tests.support.tiny_runs import ndm_cfg

COMMON = ("trainer.val_check_interval=2", "trainer.limit_val_batches=1", "stage.images.every_n_steps=0")


def test_a_point_per_validation_with_its_step_times_and_ema_metrics(tmp_path: Path, tiny_data: Path,
                                                                    tiny_vae_run: Path) -> None:
    run = tmp_path / "run"
    result = train(ndm_cfg(run, tiny_data, tiny_vae_run / "export", "trainer.max_steps=6",
                           "trainer.num_sanity_val_steps=1", *COMMON))
    points = read_curve(run)
    assert [p["step"] for p in points] == [2, 4, 6]  # the sanity check records nothing
    assert result.report["curve"] == run / CURVE_FILE
    for earlier, later in zip(points, points[1:], strict=False):
        for key in ("train_seconds", "val_seconds", "step_seconds"):
            assert later[key] > earlier[key] > 0
    last = points[-1]
    assert last["step_seconds"] + last["val_seconds"] <= last["train_seconds"]
    record = yaml.safe_load((run / "export" / "metrics.yaml").read_text())  # the EMA weights' last validation
    assert last["nelbo_bpd"] == pytest.approx(record["nelbo_bpd"]) and last["step"] == record["val_step"]
    assert last["train_seconds"] <= record["train_seconds"]


def test_a_resumed_run_replaces_the_points_after_its_checkpoint(tmp_path: Path, tiny_data: Path,
                                                                tiny_vae_run: Path) -> None:
    full, cut = tmp_path / "full", tmp_path / "cut"
    train(ndm_cfg(full, tiny_data, tiny_vae_run / "export", "trainer.max_steps=6", *COMMON))
    train(ndm_cfg(cut, tiny_data, tiny_vae_run / "export", "trainer.max_steps=4", *COMMON))
    stale = [*read_curve(cut), {"step": 6, "nelbo_bpd": 99.0}, {"step": 8, "nelbo_bpd": 99.0}]
    write_curve(cut / CURVE_FILE, stale)  # as if a run had gone on past its checkpoint at step 4 and been killed
    before = read_curve(cut)[:2]
    train(ndm_cfg(cut, tiny_data, tiny_vae_run / "export", "trainer.max_steps=6", *COMMON))
    points = read_curve(cut)
    assert [p["step"] for p in points] == [2, 4, 6] and points[:2] == before
    assert points[2]["nelbo_bpd"] == pytest.approx(read_curve(full)[2]["nelbo_bpd"], rel=1e-5)  # the exact resume
    assert points[2]["step_seconds"] > points[1]["step_seconds"]  # summed over the resume
    train(ndm_cfg(cut, tiny_data, tiny_vae_run / "export", "trainer.max_steps=2", "resume=never", *COMMON))
    assert [p["step"] for p in read_curve(cut)] == [2]  # started over: the old timeline is gone
