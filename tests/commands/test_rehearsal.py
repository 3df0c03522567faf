"""The 256-pixel rehearsal (benchmarks/rehearsal_256.py) at its smallest: 48 real 256x256 crops through shard,
stage=vae and stage=ndm with the paper's architectures at an eighth of their width, one step each, sample and
evaluate; every stage reports its peak memory, the samples are 256x256, and the FLOP counts at the paper's width
match the README's estimates."""

from pathlib import Path

import pytest

from benchmarks import rehearsal_256


def test_the_256px_path_runs_and_reports_memory_and_flops(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    result = rehearsal_256.main(["--width", "0.125", "--steps", "1", "--samples", "1", "--out", str(tmp_path)])
    stages = {s["stage"]: s for s in result["stages"]}
    assert list(stages) == ["photos", "shard", "vae", "ndm", "sample", "evaluate"]
    assert all(s["peak_rss_mib"] and s["peak_rss_mib"] > 0 for s in stages.values())
    assert result["sample_grid_px"] == [256, 256] and result["nelbo_bpd"] > 0
    assert len(list((tmp_path / "photos-256").rglob("*.png"))) == 48
    f, est = result["flops"], rehearsal_256.README_ESTIMATES
    assert f["paper_vae_forward_gflop"] == pytest.approx(est["vae_forward_gflop"], rel=0.05)
    assert f["paper_denoiser_forward_gflop"] == pytest.approx(est["denoiser_forward_gflop"], rel=0.05)
    assert f["rehearsal_vae_forward_gflop"] < f["paper_vae_forward_gflop"] / 10
