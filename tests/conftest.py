"""Fixtures shared across the test packages: the tiny synthetic dataset and a tiny trained VAE run, made once per
session (each in its own temporary folder; tests read them and write only into their own folders)."""

from __future__ import annotations

from pathlib import Path

import pytest

from latent_ndm.training.run import train
from tests.support.tiny_runs import make_data, vae_cfg


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """48 synthetic 16x16 faces in shards of 12: 36 train images (4 batches of 8 per epoch), 12 validation images."""
    return make_data(tmp_path_factory.mktemp("data") / "synthetic-16")


@pytest.fixture(scope="session")
def tiny_vae_run(tmp_path_factory: pytest.TempPathFactory, tiny_data: Path) -> Path:
    """A tiny VAE trained for 2 steps on `tiny_data`: (3, 16, 16) images -> (3, 4, 4) latents; the run folder."""
    run = tmp_path_factory.mktemp("vae") / "run"
    train(vae_cfg(run, tiny_data))
    return run
