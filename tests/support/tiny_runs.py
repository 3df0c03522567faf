"""Tiny runs shared by the stage and evaluation tests: 16x16 synthetic faces, a 2-step VAE, seconds-long NDMs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

from data_tools.synthetic import write_synthetic
from latent_ndm.runs.config import compose_config
from latent_ndm.training import ndm_module

NUM_IMAGES = 48  # 36 train images (4 batches of 8 per epoch) and 12 val images


def make_data(root: Path) -> Path:
    return write_synthetic(root, n=NUM_IMAGES, resolution=16, shard_size=12, split="train=0.75,val=0.25",
                           workers=0, progress=False)


def base_overrides(run_dir: Path, data_root: Path | str) -> list[str]:
    """The tiny runs' overrides; a URL `data_root` (the tiny dataset served over HTTP) selects ``data=shards``."""
    data = ([f"data.num_images={NUM_IMAGES}"] if "://" not in str(data_root) else
            ["data=shards", "data.read.timeout=5", "data.read.retries=1", "data.read.backoff=0.01"])
    return [
        *data, "vae=tiny", f"data.root={data_root}", "data.resolution=16",
        "data.batch_size=8", "data.shuffle_buffer=8", "data.num_workers=0", f"run_dir={run_dir}",
        "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "trainer.num_sanity_val_steps=0",
        "trainer.log_every_n_steps=1", "logger=[csv]",
    ]


def vae_cfg(run_dir: Path, data_root: Path | str, *overrides: str) -> DictConfig:
    """A tiny VAE for 2 steps: (3, 16, 16) images -> (3, 4, 4) latents."""
    return compose_config("train", ["stage=vae", *base_overrides(run_dir, data_root), "trainer.max_steps=2",
                           "trainer.val_check_interval=2", "stage.images.num=2", *overrides])


def ndm_cfg(run_dir: Path, data_root: Path | str, vae_export: Path | None, *overrides: str,
            time: str = "continuous") -> DictConfig:
    """stage=ndm shrunk to seconds: a tiny denoiser (and F_phi of its sizes) on 3x4x4 latents, 4-step sample grids;
    `time="discrete"` uses T = 10 steps. The 2-step VAE is collapsed by design, so the stage warns instead of
    refusing it (tests of that refusal override `stage.collapsed_vae`)."""
    return compose_config("train", [
        "stage=ndm", *base_overrides(run_dir, data_root), f"vae_export={vae_export}", "ndm/denoiser=tiny",
        "ndm.latent.channels=3", "ndm.latent.resolution=4", "ndm.denoiser.channel_mult=[1]",
        "stage.images.num=2", "stage.images.steps=4", "stage.collapsed_vae=warn", f"ndm/objective={time}",
        *(["ndm.objective.T=10"] if time == "discrete" else []), *overrides,
    ])


def command(name: str, run: object, overrides: list[str]) -> int:
    """Run a command's `run(cfg)` in-process on `configs/<name>.yaml` with `overrides`, as its `main` does: the
    exit status (0, or 1 for a one-line user error)."""
    from latent_ndm.cli import run_or_exit

    try:
        run_or_exit(run, compose_config(name, overrides))
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


def record_ndm_losses(monkeypatch: pytest.MonkeyPatch) -> dict[int, float]:
    """Patch the NDM training step to record its loss by global step; the returned dict fills as runs train."""
    losses: dict[int, float] = {}
    real_step = ndm_module.NDMModule.training_step

    def recording(self: ndm_module.NDMModule, batch: object, batch_idx: int) -> torch.Tensor:
        loss = real_step(self, batch, batch_idx)
        losses[self.global_step] = loss.item()
        return loss

    monkeypatch.setattr(ndm_module.NDMModule, "training_step", recording)
    return losses
