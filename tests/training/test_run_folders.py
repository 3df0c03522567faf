"""Run folders you can trust: each sweep job has its own, a resume only continues the same configuration,
fast_dev_run never touches a run, a failed start leaves nothing, and every run records how it was started."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from latent_ndm.cli import run_or_exit
from latent_ndm.errors import TrainingError
from latent_ndm.runs.folders import LOCK_NAME
from latent_ndm.training.run import train
from tests.support import REPO
from tests.support.tiny_runs import NUM_IMAGES, vae_cfg


def snapshot(folder: Path) -> dict[str, str]:
    """Every file below `folder` with the sha256 of its bytes; the run's lock file only records who last held it."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != LOCK_NAME}


def cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "latent_ndm.train", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def tiny_args(data: Path, run_dir: Path) -> list[str]:
    return ["stage=vae", "vae=tiny", f"data.root={data}", "data.resolution=16", f"data.num_images={NUM_IMAGES}",
            "data.batch_size=8", "data.shuffle_buffer=8", f"run_dir={run_dir}", "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false", "trainer.num_sanity_val_steps=0", "logger=[csv]",
            "stage.images.num=2", "trainer.max_steps=2", "trainer.val_check_interval=2"]


def test_each_job_of_a_sweep_has_its_own_folder(tmp_path: Path, tiny_data: Path) -> None:
    proc = cli("-m", *tiny_args(tiny_data, tmp_path / "sweep"), "optim.optimizer.lr=1e-3,2e-3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    lrs = []
    for job in ("0", "1"):
        run = tmp_path / "sweep" / job
        ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
        lrs.append(ckpt["config"]["optim"]["optimizer"]["lr"])
        assert ckpt["global_step"] == 2 and ckpt["config"]["run_dir"] == str(run)
        overrides = yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text())
        assert [float(o.split("=")[1]) for o in overrides if o.startswith("optim.optimizer.lr=")] == [lrs[-1]]
        assert (run / "train.log").is_file()
    assert sorted(lrs) == [1e-3, 2e-3]  # neither job resumed the other


def test_a_resume_with_another_model_is_one_line(tmp_path: Path, tiny_data: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    train(vae_cfg(run, tiny_data))
    before = snapshot(run)
    with pytest.raises(SystemExit):
        run_or_exit(train, vae_cfg(run, tiny_data, "vae.encoder.base_channels=16", "trainer.max_steps=4"))
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith(f"error: cannot resume from {run / 'checkpoints' / 'last.ckpt'}: it was trained with "
                             "another configuration (vae.decoder.base_channels: 8 -> 16, vae.encoder.base_channels: 8")
    assert "start a new run with name=<new name>, or start this one over with resume=never" in err[0]
    assert snapshot(run) == before  # the run, its record and its log untouched


def test_fast_dev_run_never_touches_a_finished_run(tmp_path: Path, tiny_data: Path) -> None:
    run = tmp_path / "run"
    train(vae_cfg(run, tiny_data))
    before = snapshot(run)
    proc = cli(*tiny_args(tiny_data, run), "trainer.fast_dev_run=true")  # the README's smoke test, after a run
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert snapshot(run) == before


def test_a_failed_start_leaves_no_folder(tmp_path: Path, tiny_data: Path) -> None:
    args = [a for a in tiny_args(tiny_data, tmp_path / "run") if not a.startswith(("stage=", "stage."))]
    proc = cli("stage=ndm", f"vae_export={tmp_path / 'nowhere'}", *args, cwd=tmp_path)
    assert proc.returncode == 1 and "nowhere does not exist" in proc.stderr and "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no run folder, no outputs/, no log
    proc = cli("-m", *tiny_args(tiny_data, tmp_path / "sweep"), "stage.kl_warmup.anneal_portion=-1,0.5", cwd=tmp_path)
    assert proc.returncode == 1 and "the KL warm-up is given in shares of the run" in proc.stderr
    assert not (tmp_path / "sweep" / "0").exists()  # the job that failed to start left nothing


def test_a_run_records_its_config_and_logs_its_hyperparameters(tmp_path: Path, tiny_data: Path) -> None:
    run = tmp_path / "run"
    result = train(vae_cfg(run, tiny_data, "checkpoints.every_n_steps=1", "checkpoints.keep=2",
                           "trainer.max_steps=4"))
    assert yaml.safe_load((run / ".hydra" / "config.yaml").read_text())["stage"]["name"] == "vae"
    hparams = yaml.safe_load(next((run / "csv").glob("version_*/hparams.yaml")).read_text())
    assert hparams["optim"]["optimizer"]["lr"] == pytest.approx(3e-3) and hparams["seed"] == 0
    kept = sorted(p.name for p in (run / "checkpoints").glob("*.ckpt"))
    assert kept == ["best.ckpt", "last.ckpt", "previous.ckpt", "step000003.ckpt", "step000004.ckpt"]
    best = torch.load(run / "checkpoints" / "best.ckpt", weights_only=False)
    assert best["global_step"] in (2, 4) and result.trainer.global_step == 4


def test_loggers_are_a_config_group(tmp_path: Path, tiny_data: Path) -> None:
    result = train(vae_cfg(tmp_path / "a", tiny_data, "logger=[]"))
    assert result.trainer.loggers == [] and not (tmp_path / "a" / "csv").exists()
    result = train(vae_cfg(tmp_path / "b", tiny_data, "logger=[tensorboard,csv]"))
    assert sorted(type(lg).__name__ for lg in result.trainer.loggers) == ["CSVLogger", "TensorBoardLogger"]
    try:  # wandb is optional; without it, logger=[wandb] is one clear error
        import wandb  # noqa: F401
    except ImportError:
        with pytest.raises(TrainingError, match=r"a logger of logger=\['wandb'\] cannot be built .*install"):
            train(vae_cfg(tmp_path / "c", tiny_data, "logger=[wandb]"))
        assert not (tmp_path / "c").exists()
