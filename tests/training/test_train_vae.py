"""`python -m latent_ndm.train stage=vae`: runs of a tiny VAE on a tiny synthetic set (CPU, 16x16 images)."""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from PIL import Image

from data_tools.synthetic import write_synthetic
from latent_ndm.cli import one_line
from latent_ndm.errors import NonFiniteLossError, TrainingError
from latent_ndm.runs.config import compose_config
from latent_ndm.runs.export import METRICS as METRICS_NAME
from latent_ndm.runs.export import TRAIN_CONFIG as TRAIN_CONFIG_NAME
from latent_ndm.runs.export import VAE_CONFIG as CONFIG_NAME
from latent_ndm.runs.export import VAE_WEIGHTS as WEIGHTS_NAME
from latent_ndm.runs.export import load_vae
from latent_ndm.training import vae_module
from latent_ndm.training.run import train
from tests.support import REPO

NUM_IMAGES = 48


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data") / "synthetic-16"
    return write_synthetic(root, n=NUM_IMAGES, resolution=16, shard_size=16, split="train=0.75,val=0.25",
                           workers=0, progress=False)


def tiny_cfg(run_dir: Path, data_root: Path, *overrides: str, data: str = "synthetic"):
    """The default config shrunk to seconds: tiny VAE, 16x16 images, no progress bar, no TensorBoard.
    `data="shards"` reads the shards in `data_root` instead of the synthetic set there."""
    base = [
        "stage=vae", "vae=tiny", f"data={data}", f"data.root={data_root}", "data.resolution=16",
        "data.batch_size=8", "data.shuffle_buffer=8", "data.num_workers=0", f"run_dir={run_dir}",
        "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "trainer.num_sanity_val_steps=0",
        "trainer.log_every_n_steps=1", "logger=[csv]", "stage.images.num=4",
        "stage.kl_warmup.anneal_portion=0.5",
    ]
    if data == "synthetic":
        base.append(f"data.num_images={NUM_IMAGES}")
    return compose_config("train", [*base, *overrides])


def test_fast_dev_run_writes_an_export_that_reloads_identically(tmp_path: Path, data_root: Path) -> None:
    result = train(tiny_cfg(tmp_path / "run", data_root, "trainer.fast_dev_run=true"))
    assert not (tmp_path / "run").exists() and result.run_dir != tmp_path / "run"  # a throwaway folder
    export = result.run_dir / "export"
    for name in (WEIGHTS_NAME, CONFIG_NAME, TRAIN_CONFIG_NAME, METRICS_NAME):
        assert (export / name).is_file(), name
    assert (result.run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (result.run_dir / "images" / "recon_final.png").is_file()
    ema, loaded = result.module.ema.module.eval(), load_vae(export)
    assert loaded.latent_scale.item() == pytest.approx(result.report["metrics"]["latent_scale"])
    assert loaded.latent_scale.item() != 1.0
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        q_a, q_b = ema.encode(x), loaded.encode(x)
        assert torch.equal(q_a.mean, q_b.mean) and torch.equal(q_a.logvar, q_b.logvar)
        assert torch.equal(ema.decoder(q_a.mean), loaded.decoder(q_b.mean))
    ckpt = torch.load(result.run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["config"]["vae"]["bits"] == 8 and ckpt["vae_config"] == loaded.config()


def test_resume_from_last_ckpt_continues_at_the_same_step(tmp_path: Path, data_root: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    first = train(tiny_cfg(run, data_root, "trainer.max_steps=4", "trainer.val_check_interval=2"))
    assert first.trainer.global_step == 4
    seconds = yaml.safe_load((run / "export" / METRICS_NAME).read_text())["train_seconds"]
    assert 0 < seconds < first.wall_s  # the fit's wall-clock (Lightning's Timer), within the whole command's
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 4
    starts: list[int] = []
    monkeypatch.setattr(vae_module.VAEModule, "on_train_start", lambda self: starts.append(self.global_step),
                        raising=False)
    second = train(tiny_cfg(run, data_root, "trainer.max_steps=8", "trainer.val_check_interval=2"))
    assert starts == [4] and second.trainer.global_step == 8
    assert yaml.safe_load((run / "export" / METRICS_NAME).read_text())["train_seconds"] > seconds  # summed over resumes
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 8 and int(ckpt["state_dict"]["ema.num_updates"]) == 8
    third = train(tiny_cfg(run, data_root, "trainer.max_steps=8"))  # a finished run: nothing to do, same report
    assert third.trainer.global_step == 8 and third.report["metrics"] == second.report["metrics"]
    assert "nelbo_bpd" in yaml.safe_load((run / "export" / METRICS_NAME).read_text())
    with pytest.raises(TrainingError, match=r"another configuration \(vae.decoder.latent_channels: 3 -> 2, "
                                            r"vae.encoder.latent_channels: 3 -> 2\); start a new run with name="):
        train(tiny_cfg(run, data_root, "trainer.max_steps=10", "vae.encoder.latent_channels=2"))
    for changed in ("optim.optimizer.lr=1e-4", "data.batch_size=4", "seed=1", "stage.kl_warmup.anneal_portion=0.25"):
        with pytest.raises(TrainingError, match=rf"another configuration \(.*{changed.split('=')[0]}: "):
            train(tiny_cfg(run, data_root, "trainer.max_steps=10", changed))


def test_non_finite_loss_stops_naming_the_term_and_keeps_the_last_checkpoint(
    tmp_path: Path, data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_loss, calls = vae_module.vae_loss, []

    def poisoned(*args, **kwargs):
        out = real_loss(*args, **kwargs)
        calls.append(1)
        if len(calls) == 5:  # the 5th training step: after the checkpoint of step 4
            out.rec, out.loss = out.rec * float("nan"), out.loss * float("nan")
        return out

    monkeypatch.setattr(vae_module, "vae_loss", poisoned)
    run = tmp_path / "run"
    with pytest.raises(NonFiniteLossError, match=r"step 4: the reconstruction term .*\('rec'\) is nan") as info:
        train(tiny_cfg(run, data_root, "trainer.max_steps=8", "trainer.val_check_interval=2"))
    assert str(run / "checkpoints" / "last.ckpt") in str(info.value)
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 4
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    assert load_vae(run / "export").latent_scale.isfinite()


def test_a_collapsed_vae_is_named_as_collapsed_at_the_end_of_its_run(tmp_path: Path, data_root: Path) -> None:
    """Two steps teach the decoder nothing: the run's last lines say the latent is collapsed and how to fix it,
    the export records the per-unit watch, and the old counts ("4 of 4 active" channels, units whose posterior mean
    merely varies) are gone from the sentence."""
    from latent_ndm.train import format_report

    cfg = tiny_cfg(tmp_path / "run", data_root, "trainer.max_steps=2", "trainer.val_check_interval=2")
    result = train(cfg)
    m = yaml.safe_load((tmp_path / "run" / "export" / METRICS_NAME).read_text())
    assert {"active_units", "latent_units", "kl_unit_nats", "kl_share", "explained"} <= set(m)
    assert "active_channels" not in m and m["latent_units"] == 3 * 4 * 4
    printed = format_report(cfg, result)
    assert "WARNING: this VAE has a collapsed latent (" in printed and "stage.free_bits" in printed
    assert f"the decoder uses {m['active_units']:.0f} of 48 latent units" in printed
    assert "active latent units" not in printed


def test_the_export_records_the_trained_step_and_the_step_its_metrics_are_from(tmp_path: Path,
                                                                               data_root: Path) -> None:
    """3 steps, validation every 2: the weights are of step 3, the validation metrics of step 2; both are said."""
    train(tiny_cfg(tmp_path / "run", data_root, "trainer.max_steps=3", "trainer.val_check_interval=2"))
    m = yaml.safe_load((tmp_path / "run" / "export" / METRICS_NAME).read_text())
    assert (m["step"], m["val_step"]) == (3, 2)


def test_the_recipe_knobs_compose_into_the_module(tmp_path: Path, data_root: Path) -> None:
    """The collapse remedies are plain Hydra keys that reach the training loss."""
    from latent_ndm.data.datasets import synthetic_datamodule
    from latent_ndm.training.vae_stage import build_model

    cfg = tiny_cfg(tmp_path / "run", data_root, "stage.free_bits=0.1", "stage.kl_balance=true",
                   "trainer.max_steps=20", "stage.kl_warmup.anneal_portion=0.35", "stage.kl_warmup.const_portion=0.15")
    dm = synthetic_datamodule(data_root, num_images=NUM_IMAGES, resolution=16, batch_size=8)
    module = build_model(cfg, dm)
    assert (module.free_bits, module.kl_balance) == (0.1, True)
    assert (module.kl_warmup.warmup_steps, module.kl_warmup.hold_steps) == (7, 3)  # shares of the 20-step run
    default = build_model(tiny_cfg(tmp_path / "run", data_root), dm)
    assert (default.free_bits, default.kl_balance) == (0.0, False)


def test_unknown_config_key_is_one_clear_error(tmp_path: Path, data_root: Path) -> None:
    with pytest.raises(ConfigCompositionException, match="Could not override 'vae.encoder.bse_channels'"):
        tiny_cfg(tmp_path, data_root, "vae.encoder.bse_channels=3")
    proc = subprocess.run([sys.executable, "-m", "latent_ndm.train", "stage=vae", "foo=1"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert proc.stderr.startswith("error: foo is not a key of configs/train.yaml") and "Traceback" not in proc.stderr


def test_a_shard_path_without_shards_fails_before_training(tmp_path: Path, data_root: Path) -> None:
    (tmp_path / "empty").mkdir()
    cfg = tiny_cfg(tmp_path / "run", tmp_path / "empty", data="shards")
    with pytest.raises(TrainingError, match=r"no shards match .*empty/\*-train-\*\.tar; create shards with"):
        train(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_images_of_the_wrong_size_are_named(tmp_path: Path, data_root: Path) -> None:
    with pytest.raises(TrainingError, match="are 16px but data.resolution=32; reshard them, or set data.resolution=16"):
        train(tiny_cfg(tmp_path / "a", data_root, "data.resolution=32", data="shards"))
    shards = tmp_path / "shards"
    _write_tar(shards / "x-train-000000.tar", [16, 16, 16, 24, 16, 16, 16, 16])
    _write_tar(shards / "x-val-000000.tar", [16] * 4)
    cfg = tiny_cfg(tmp_path / "b", shards, "data.shuffle_buffer=0", "trainer.max_steps=2", data="shards")
    with pytest.raises(ValueError, match=r"sample 000003 in shard .*x-train-000000.tar is 24x24, expected 16x16") as e:
        train(cfg)
    assert "\n" not in one_line(e.value)


def test_lpips_term_trains_and_is_reported_separately(tmp_path: Path, data_root: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(TrainingError, match=r"alexnet-owt-7be5be79\.pth.*stage\.lpips\.backbone_path"):
        train(tiny_cfg(tmp_path / "a", data_root, "stage.lpips.weight=0.5", f"stage.lpips.backbone_path={missing}"))
    result = train(tiny_cfg(tmp_path / "b", data_root, "trainer.fast_dev_run=true", "stage.lpips.weight=0.5",
                            "stage.lpips.random_backbone=true"))
    metrics = result.report["metrics"]
    assert metrics["lpips"] > 0
    assert metrics["nelbo_bpd"] == pytest.approx(metrics["rec_bpd"] + metrics["kl_bpd"])
    assert not any(k.startswith("lpips") for k in result.module.state_dict())


def test_paper_experiment_composes() -> None:
    cfg = compose_config("train", ["stage=vae", "experiment=celebahq256", "data.root=/data/celebahq256",
                                   "vae.encoder.base_channels=32"])
    assert (cfg.data.resolution, cfg.vae.bits, cfg.vae.likelihood_kwargs.num_mix) == (256, 5, 10)
    assert cfg.data.batch_size * cfg.trainer.devices == 64 and cfg.optim.optimizer.lr == 1e-2
    assert cfg.run_dir == "runs/vae/celebahq256" and cfg.stage.kl_warmup.anneal_portion == 1.0
    vae = instantiate(cfg.vae, _convert_="all")
    assert vae.latent_shape(256) == (8, 32, 32) and vae.bits == 5


def _write_tar(path: Path, sides: list[int]) -> None:
    """A webdataset tar of random PNGs with the given sides (no manifest)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    with tarfile.open(path, "w") as tar:
        for i, side in enumerate(sides):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(buf, format="PNG")
            info = tarfile.TarInfo(f"{i:06d}.png")
            info.size = len(buf.getvalue())
            tar.addfile(info, io.BytesIO(buf.getvalue()))


@pytest.mark.slow
def test_two_process_ddp_run_on_cpu(tmp_path: Path, data_root: Path) -> None:
    """The multi-GPU code path (rank-0 exports, reduced validation metrics) with two CPU processes."""
    cmd = [sys.executable, "-m", "latent_ndm.train", "stage=vae", "vae=tiny", f"data.root={data_root}",
           f"data.num_images={NUM_IMAGES}", "data.resolution=16", "data.batch_size=4", f"run_dir={tmp_path / 'run'}",
           "trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp", "trainer.max_steps=4",
           "trainer.val_check_interval=2", "trainer.enable_progress_bar=false", "logger=[csv]", "ddp_timeout_s=120"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "finished at step 4" in proc.stdout
    metrics = yaml.safe_load((tmp_path / "run" / "export" / METRICS_NAME).read_text())
    assert metrics["step"] == 4 and metrics["latent_scale"] > 0
    exported = load_vae(tmp_path / "run" / "export")
    assert exported.latent_scale.item() == pytest.approx(metrics["latent_scale"])
