"""A full disk while a checkpoint is written is one sentence and a non-zero exit, the previous checkpoint kept, also
when the failure comes through torch's own zip writer (which reports it as an opaque RuntimeError); and the
non-finite guard names the checkpoint it keeps, or says that there is none."""

from __future__ import annotations

import errno
import io
import os
import subprocess
from pathlib import Path

import pytest
import torch

from data_tools.files import DiskFullError
from latent_ndm.errors import NonFiniteLossError
from latent_ndm.runs import checkpoints
from latent_ndm.runs.checkpoints import save_checkpoint
from latent_ndm.training import vae_module
from latent_ndm.training.callbacks.non_finite import check_finite_metrics
from latent_ndm.training.run import train
from tests.support.hostile import error_lines
from tests.support.tiny_runs import base_overrides, command, vae_cfg


class FillsUp(io.FileIO):
    """A file on a disk with `room` bytes left: writes beyond it fail with ENOSPC, as the kernel's would."""

    room = 2000

    def write(self, data: object) -> int:
        if self.tell() + len(memoryview(data)) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().write(data)


def _disk_with_room(monkeypatch: pytest.MonkeyPatch, room: int) -> None:
    FillsUp.room = room
    monkeypatch.setattr(checkpoints, "open", lambda path, mode: FillsUp(path, mode.replace("b", "")), raising=False)


def test_enospc_inside_torch_save_is_one_sentence_and_keeps_the_previous(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    last = tmp_path / "last.ckpt"
    save_checkpoint({"global_step": 1, "state_dict": {"w": torch.zeros(10)}}, last)
    _disk_with_room(monkeypatch, 2000)
    with pytest.raises(DiskFullError, match=rf"^no space left in {tmp_path} to write last.ckpt \(about 0.4 MiB "
                                            r"needed, .*\); the previous last.ckpt is intact"):
        save_checkpoint({"global_step": 2, "state_dict": {"w": torch.zeros(100_000)}}, last)
    assert torch.load(last, weights_only=True)["global_step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left


def test_a_run_whose_disk_fills_up_stops_in_one_line(tmp_path: Path, tiny_data: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    _disk_with_room(monkeypatch, 2000)
    code = command("train", train, ["stage=vae", *base_overrides(tmp_path / "run", tiny_data),
                                    "trainer.max_steps=2", "trainer.val_check_interval=2"])
    lines = error_lines(capsys.readouterr().err)
    assert code == 1 and len(lines) == 1, lines
    assert lines[0].startswith(f"error: no space left in {tmp_path / 'run' / 'checkpoints'} to write last.ckpt")
    assert "nothing was written: free some space and rerun the same command" in lines[0]


def _can_mount() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0 and Path("/proc/mounts").is_file()


def test_a_real_full_filesystem(tmp_path: Path) -> None:
    """The same on a real 256 KiB tmpfs, where the machine lets the tests mount one (root in a container)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if not _can_mount() or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)],
                                          capture_output=True).returncode != 0:
        pytest.skip("this machine does not let the tests mount a small tmpfs (the ENOSPC tests above cover it)")
    try:
        last = disk / "checkpoints" / "last.ckpt"
        save_checkpoint({"global_step": 1, "state_dict": {"w": torch.zeros(10)}}, last)
        with pytest.raises(DiskFullError, match="the previous last.ckpt is intact"):
            save_checkpoint({"global_step": 2, "state_dict": {"w": torch.zeros(200_000)}}, last)
        assert torch.load(last, weights_only=True)["global_step"] == 1
        assert [p.name for p in last.parent.iterdir()] == ["last.ckpt"]
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_the_guard_says_when_no_checkpoint_exists(tmp_path: Path, tiny_data: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    real_loss = vae_module.vae_loss

    def poisoned(*args: object, **kwargs: object) -> object:
        out = real_loss(*args, **kwargs)
        out.rec, out.loss = out.rec * float("nan"), out.loss * float("nan")
        return out

    monkeypatch.setattr(vae_module, "vae_loss", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"step 0: .* no checkpoint had been written yet, so there is none"):
        train(vae_cfg(tmp_path / "run", tiny_data))
    assert not (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()


def test_a_non_finite_validation_names_the_kept_checkpoint_or_none(tmp_path: Path) -> None:
    kept = tmp_path / "last.ckpt"
    with pytest.raises(NonFiniteLossError, match="no checkpoint had been written yet"):
        check_finite_metrics({"nelbo_bpd": float("nan")}, 3, kept)
    kept.write_bytes(b"x")
    with pytest.raises(NonFiniteLossError, match=rf"nelbo_bpd; the last good checkpoint {kept} is kept"):
        check_finite_metrics({"nelbo_bpd": float("nan")}, 3, kept)
