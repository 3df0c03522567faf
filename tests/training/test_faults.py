"""Faults lose nothing: a run killed at any moment (also while it writes a checkpoint) and rerun ends with the
numbers of the uninterrupted run; a full disk stops with one line and keeps the checkpoint; a damaged checkpoint
falls back to the one before; a killed process of a two-process run stops the other within a bounded time."""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from data_tools.files import DiskFullError
from latent_ndm.cli import run_or_exit
from latent_ndm.errors import TrainingError
from latent_ndm.runs import checkpoints
from latent_ndm.training.run import train
from tests.support import REPO
from tests.support.tiny_runs import ndm_cfg, vae_cfg

LONG = ("trainer.max_steps=12", "trainer.val_check_interval=4", "stage.images.every_n_steps=0")  # 3 epochs of 4
KILL_AT = random.Random(2026).sample(range(5, 12), 2)  # two moments inside the run, drawn once

CHILD = """
import json, os, signal, sys
from pathlib import Path
from latent_ndm.runs import checkpoints
from latent_ndm.training import ndm_module, vae_module
from latent_ndm.training.run import train
from tests.support.tiny_runs import ndm_cfg, vae_cfg

args = json.loads(sys.argv[1])
kill = args["kill"]
if "step" in kill:  # SIGKILL in the middle of a training step
    for cls in (vae_module.VAEModule, ndm_module.NDMModule):
        def step(self, batch, batch_idx, real=cls.training_step):
            out = real(self, batch, batch_idx)
            if self.global_step == kill["step"]:
                os.kill(os.getpid(), signal.SIGKILL)
            return out
        cls.training_step = step
else:  # SIGKILL in the middle of writing last.ckpt
    real_save, calls = checkpoints.torch.save, [0]
    def dying(obj, f):
        calls[0] += Path(f.name).name.startswith(".last.ckpt.")
        if calls[0] == kill["save"] and Path(f.name).name.startswith(".last.ckpt."):
            f.write(b"PK" + bytes(5000))
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        real_save(obj, f)
    checkpoints.torch.save = dying
run, data, vae = Path(args["run"]), Path(args["data"]), Path(args["vae"])
if args["stage"] == "vae":
    train(vae_cfg(run, data, *args["overrides"]))
else:
    train(ndm_cfg(run, data, vae, *args["overrides"]))
"""


def config(stage: str, run: Path, data: Path, vae: Path, *overrides: str):
    return vae_cfg(run, data, *overrides) if stage == "vae" else ndm_cfg(run, data, vae, *overrides)


def metrics_of(result) -> dict[str, float]:
    m = result.report["metrics"] or result.report["ndm_metrics"]
    return {k: v for k, v in m.items() if k != "step"}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory, tiny_data: Path, tiny_vae_run: Path) -> dict:
    out = {}
    for stage in ("vae", "ndm"):
        result = train(config(stage, tmp_path_factory.mktemp(stage) / "run", tiny_data, tiny_vae_run / "export",
                              *LONG))
        out[stage] = metrics_of(result)
    return out


@pytest.mark.parametrize(("stage", "kill"), [("vae", {"step": KILL_AT[0]}), ("vae", {"save": 2}),
                                             ("ndm", {"step": KILL_AT[1]}), ("ndm", {"save": 3})])
def test_a_run_killed_at_any_moment_resumes_to_the_same_numbers(tmp_path: Path, tiny_data: Path, tiny_vae_run: Path,
                                                               uninterrupted: dict, stage: str, kill: dict) -> None:
    run = tmp_path / "run"
    args = {"stage": stage, "run": str(run), "data": str(tiny_data), "vae": str(tiny_vae_run / "export"),
            "overrides": list(LONG), "kill": kill}
    child = subprocess.run([sys.executable, "-c", CHILD, json.dumps(args)], cwd=REPO, capture_output=True, text=True,
                           timeout=300)
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    resumed = train(config(stage, run, tiny_data, tiny_vae_run / "export", *LONG))  # the same command again
    assert resumed.trainer.global_step == 12
    assert metrics_of(resumed) == pytest.approx(uninterrupted[stage], rel=1e-6, abs=1e-9)


def test_a_full_disk_stops_in_one_line_and_keeps_the_checkpoint(tmp_path: Path, tiny_data: Path,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    real, calls = checkpoints.torch.save, []

    def full_on_the_second(obj: object, f: object) -> None:
        calls.append(Path(f.name).name.startswith(".last.ckpt."))
        if calls.count(True) == 2 and calls[-1]:
            f.write(bytes(1000))
            raise OSError(errno.ENOSPC, "No space left on device")
        real(obj, f)

    monkeypatch.setattr(checkpoints.torch, "save", full_on_the_second)
    with pytest.raises(SystemExit):
        run_or_exit(train, vae_cfg(tmp_path / "run", tiny_data, *LONG))
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith(f"error: no space left in {tmp_path / 'run' / 'checkpoints'} to write last.ckpt (about ")
    assert "MiB needed" in err[0] and "the previous last.ckpt is intact" in err[0] and len(err) == 1
    kept = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    assert kept["global_step"] == 4
    with pytest.raises(DiskFullError):  # not swallowed by Lightning: the caller sees the cause
        calls.clear()
        train(vae_cfg(tmp_path / "run", tiny_data, *LONG))


def test_an_out_of_memory_step_is_one_sentence_with_the_switches_that_help(tmp_path: Path, tiny_data: Path,
                                                                            tiny_vae_run: Path,
                                                                            monkeypatch: pytest.MonkeyPatch,
                                                                            capsys: pytest.CaptureFixture[str]) -> None:
    from latent_ndm.training import ndm_module

    real, calls = ndm_module.NDMModule.training_step, []

    def oom_on_the_third(self, batch, batch_idx):  # noqa: ANN001, ANN202 - the module's own signature
        calls.append(batch_idx)
        if len(calls) == 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.50 GiB. GPU 0 has a total capacity")
        return real(self, batch, batch_idx)

    monkeypatch.setattr(ndm_module.NDMModule, "training_step", oom_on_the_third)
    cfg = ndm_cfg(tmp_path / "run", tiny_data, tiny_vae_run / "export", "trainer.max_steps=6",
                  "trainer.val_check_interval=2", "data.batch_size=8")
    with pytest.raises(SystemExit):
        run_or_exit(train, cfg)
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("error: out of memory at step 2 with data.batch_size=8 per device, asking for 2.50 GiB; ")
    assert "data.batch_size=4 trainer.accumulate_grad_batches=2 (the same effective batch)" in err[0]
    assert "ndm.denoiser.checkpointing=true" in err[0] and "bf16" not in err[0]  # precision auto: bf16 on a GPU
    assert err[0].endswith("last.ckpt is kept (a rerun resumes from it)") and len(err) == 1


def test_a_damaged_checkpoint_falls_back_then_says_how_to_start_over(tmp_path: Path, tiny_data: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    run = tmp_path / "run"
    train(vae_cfg(run, tiny_data, *LONG[1:], "trainer.max_steps=8"))  # checkpoints at steps 4 and 8
    last = run / "checkpoints" / "last.ckpt"
    os.truncate(last, last.stat().st_size // 2)
    resumed = train(vae_cfg(run, tiny_data, *LONG))
    assert "does not load" in caplog.text and "previous.ckpt (step 4)" in caplog.text
    assert resumed.trainer.global_step == 12 and (run / "checkpoints" / "last.ckpt.damaged").is_file()
    for name in ("last.ckpt", "previous.ckpt"):
        os.truncate(run / "checkpoints" / name, 100)
    with pytest.raises(TrainingError, match=r"cannot resume: no checkpoint in .*checkpoints loads \(last.ckpt: .*; "
                                            r"previous.ckpt: .*\); start this run over with resume=never"):
        train(vae_cfg(run, tiny_data, *LONG[1:], "trainer.max_steps=16"))


def test_a_killed_process_stops_the_other_within_bounded_time(tmp_path: Path, tiny_data: Path) -> None:
    """Two CPU processes launched as torchrun launches them (gloo); one is SIGKILLed mid-run, the other exits with
    one clear line well before the DDP timeout."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = tmp_path / "run"
    overrides = [f"{k}={v}" for k, v in {"trainer.accelerator": "cpu", "trainer.devices": 2, "trainer.strategy": "ddp",
                                          "trainer.max_steps": 100000, "trainer.val_check_interval": 2,
                                          "trainer.limit_val_batches": 1, "stage.images.every_n_steps": 0}.items()]
    args = [f"{k}={v}" for k, v in {"stage": "vae", "vae": "tiny", "data.root": tiny_data, "data.resolution": 16,
                                     "data.num_images": 48, "data.batch_size": 8, "data.shuffle_buffer": 8,
                                     "run_dir": run, "logger": "[csv]", "ddp_timeout_s": 600,
                                     "trainer.enable_progress_bar": "false"}.items()] + overrides
    procs = []
    for rank in range(2):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2",
               "RANK": str(rank), "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": "2", "NODE_RANK": "0",
               "GROUP_RANK": "0", "TORCHELASTIC_RUN_ID": "test", "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, "-m", "latent_ndm.train", *args], cwd=REPO, env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    try:
        deadline = time.monotonic() + 240
        while not (run / "checkpoints" / "last.ckpt").is_file():  # both are training
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs), procs[0].stderr.read()
            time.sleep(0.5)
        procs[1].send_signal(signal.SIGKILL)
        start = time.monotonic()
        _, err = procs[0].communicate(timeout=120)
        assert time.monotonic() - start < 60
    finally:
        for p in procs:
            p.kill()
    assert procs[0].returncode == 1, err[-3000:]
    assert "error: another process of this distributed run stopped or stopped answering" in err
    assert "rerun the same command on every node to resume" in err
