"""The 256-pixel rehearsal (benchmarks/rehearsal_256.py) at its smallest: 48 real 256x256 crops through shard,
stage=vae and stage=ndm with the paper's architectures at an eighth of their width, one step each, sample and
evaluate; every stage reports its peak memory, the samples are 256x256, the FLOP counts at the paper's width
match the README's estimates, and while a stage runs, a progress line says which stage of how many, for how long."""

import re
from pathlib import Path

import pytest

from benchmarks import rehearsal_256
from latent_ndm import progress


def test_the_256px_path_runs_and_reports_memory_and_flops(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("sklearn")
    monkeypatch.setattr(progress, "INTERVAL_S", 0.0)  # a progress line at every heartbeat (its output is no terminal)
    result = rehearsal_256.main(["--width", "0.125", "--steps", "1", "--samples", "1", "--out", str(tmp_path)])
    printed = capsys.readouterr()
    assert all(f"stage {i} of 6 ({name}): python -m" in printed.out
               for i, name in enumerate(["photos", "shard", "vae", "ndm", "sample", "evaluate"], 1))
    assert re.search(r"^rehearsal: \d+% done, \d+ s elapsed, about .+ left; stage 3 of 6 \(vae\): "
                     r"\d+ s in", printed.err, re.M)  # a heartbeat while the VAE trains
    assert printed.err.rstrip().splitlines()[-1].startswith("rehearsal: done in ")
    stages = {s["stage"]: s for s in result["stages"]}
    assert list(stages) == ["photos", "shard", "vae", "ndm", "sample", "evaluate"]
    assert all(s["peak_rss_mib"] and s["peak_rss_mib"] > 0 for s in stages.values())
    assert result["sample_grid_px"] == [256, 256] and result["nelbo_bpd"] > 0
    assert len(list((tmp_path / "photos-256").rglob("*.png"))) == 48
    f, est = result["flops"], rehearsal_256.README_ESTIMATES
    assert f["paper_vae_forward_gflop"] == pytest.approx(est["vae_forward_gflop"], rel=0.05)
    assert f["paper_denoiser_forward_gflop"] == pytest.approx(est["denoiser_forward_gflop"], rel=0.05)
    assert f["rehearsal_vae_forward_gflop"] < f["paper_vae_forward_gflop"] / 10
