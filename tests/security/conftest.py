"""What the security tests share: one trained NDM run (1 step on the tiny VAE) whose export and checkpoint the tests
copy and make hostile; the run itself is only read (sampling it writes into its own samples/ folder)."""

from __future__ import annotations

from pathlib import Path

import pytest

from latent_ndm.training.run import train
from tests.support.tiny_runs import ndm_cfg


@pytest.fixture(scope="session")
def ndm_run(tmp_path_factory: pytest.TempPathFactory, tiny_data: Path, tiny_vae_run: Path) -> Path:
    run = tmp_path_factory.mktemp("security-ndm") / "ndm"
    train(ndm_cfg(run, tiny_data, tiny_vae_run / "export", "trainer.max_steps=1", "trainer.val_check_interval=1",
                  "stage.images.every_n_steps=0"))
    return run
