"""The embedded synthetic dataset and the inspect CLI."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_tools import inspect as inspect_cli
from data_tools import synthetic
from data_tools.faces import draw_parameters, render_faces
from tests.support.data_fixtures import read_shards, tiny_synthetic


def test_faces_are_deterministic_prefix_stable_and_varied() -> None:
    a = render_faces(draw_parameters(64, seed=0), 32)
    b = render_faces(draw_parameters(16, seed=0), 32)
    c = render_faces(draw_parameters(16, seed=1), 32)
    assert a.shape == (64, 32, 32, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a[:16], b)
    assert np.abs(a[:16].astype(int) - c).mean() > 20
    assert a.std(axis=0).mean() > 30  # images differ from one another
    centre, corner = a[:, 12:20, 12:20].astype(float), a[:, :4, :4].astype(float)
    assert np.abs(centre.mean((1, 2)) - corner.mean((1, 2))).mean() > 20  # a face in front of a background


def test_rendering_is_fast_enough() -> None:
    params = draw_parameters(512, seed=0)
    start = time.perf_counter()
    for i in range(0, 512, 128):
        render_faces(params[i:i + 128], 64)
    assert time.perf_counter() - start < 10.0  # 4096 at 64 px is about 8x this


def test_synthetic_shards_and_idempotent_ensure(tmp_path: Path) -> None:
    root = tiny_synthetic(tmp_path / "syn", n=40, resolution=16, shard_size=8)
    samples = read_shards(sorted(root.glob("*.tar")))
    assert len(samples) == 40 and all(s["pixels"].shape == (16, 16, 3) for s in samples.values())
    source = synthetic.SyntheticSource(40, 16)
    for s in list(samples.values())[:5]:
        index = int(Path(s["file"]).stem)
        np.testing.assert_array_equal(s["pixels"], np.asarray(source.load([index])[0]))
    mtimes = {p.name: p.stat().st_mtime_ns for p in root.iterdir()}
    synthetic.ensure_default_dataset(root, n=40, resolution=16)
    assert {p.name: p.stat().st_mtime_ns for p in root.iterdir()} == mtimes


def test_ensure_default_dataset_creates_on_first_use(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(synthetic, "default_workers", lambda: 1)
    root = synthetic.ensure_default_dataset(tmp_path / "default", n=24, resolution=16)
    assert (root / "manifest.json").is_file() and len(list(root.glob("synthetic-*.tar"))) == 3  # 22 + 2, 16 per shard


def test_inspect_reports_verifies_and_writes_a_grid(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    root = tiny_synthetic(tmp_path / "syn", n=40, resolution=16, shard_size=8)
    grid = tmp_path / "grid.png"
    assert inspect_cli.main([str(root), "--preview", str(grid), "--preview-images", "16"]) == 0
    out = capsys.readouterr().out
    assert "train: 30 samples in 4 shards (manifest: 30)" in out and "6/6 shards match the manifest" in out
    assert "resolution: 16" in out and Image.open(grid).size == (4 * 18 + 2, 4 * 18 + 2)
    victim = root / "synthetic-val-000000.tar"
    data = bytearray(victim.read_bytes())
    data[600] ^= 0xFF  # inside the first member's data
    victim.write_bytes(bytes(data))
    before = sorted(p.name for p in root.iterdir())
    monkeypatch.chdir(tmp_path)
    assert inspect_cli.main([str(root / "*-val-*.tar"), "--preview-images", "4"]) == 0  # a flipped byte: same size
    assert (tmp_path / "preview.png").is_file() and sorted(p.name for p in root.iterdir()) == before
    capsys.readouterr()
    assert inspect_cli.main([str(root / "*-val-*.tar"), "--preview-images", "0", "--verify"]) == 1
    assert "sha256 mismatch" in capsys.readouterr().out
    cut = root / "synthetic-train-000001.tar"
    cut.write_bytes(cut.read_bytes()[:1536])  # cut inside the second sample
    assert inspect_cli.main([str(root / "*-train-*.tar"), "--preview-images", "0"]) == 1
    assert "synthetic-train-000001.tar: unreadable" in capsys.readouterr().out
    assert inspect_cli.main([str(tmp_path / "nothing-*.tar")]) == 1
    assert "python -m data_tools.synthetic" in capsys.readouterr().err


def test_synthetic_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = [str(tmp_path / "cli"), "--num-images", "20", "--resolution", "16", "--workers", "0", "--quiet"]
    assert synthetic.main(argv) == 0
    assert "train=18, val=2" in capsys.readouterr().out
