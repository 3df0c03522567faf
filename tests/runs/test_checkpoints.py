"""The resume points of a run (`latent_ndm.runs.checkpoints`): truly atomic writes that keep the one before, a full
disk that loses nothing, and damaged checkpoints named and passed over."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from data_tools.files import DiskFullError, remove_temporaries
from latent_ndm.runs import checkpoints
from latent_ndm.runs.checkpoints import PREVIOUS_CKPT, find_resume_point, save_checkpoint
from tests.support import REPO


def ckpt(step: int, size: int = 4096) -> dict:
    return {"global_step": step, "state_dict": {"w": torch.full((size,), float(step))}}


def test_each_save_keeps_the_one_before(tmp_path: Path) -> None:
    last = tmp_path / "checkpoints" / "last.ckpt"
    save_checkpoint(ckpt(1), last)
    assert not (tmp_path / "checkpoints" / PREVIOUS_CKPT).exists()
    save_checkpoint(ckpt(2), last)
    save_checkpoint(ckpt(3), last)
    assert torch.load(last, weights_only=False)["global_step"] == 3
    assert torch.load(last.with_name(PREVIOUS_CKPT), weights_only=False)["global_step"] == 2
    assert sorted(p.name for p in last.parent.iterdir()) == ["last.ckpt", PREVIOUS_CKPT]


def test_a_full_disk_keeps_both_checkpoints_and_says_what_is_needed(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    last = tmp_path / "last.ckpt"
    save_checkpoint(ckpt(1), last)
    save_checkpoint(ckpt(2), last)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def no_space(obj: object, f: object) -> None:
        f.write(b"x" * 1000)  # part of it, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoints.torch, "save", no_space)
    with pytest.raises(DiskFullError, match=rf"no space left in {tmp_path} to write last.ckpt \(about 0.0 MiB needed"
                                            r", .* MiB free\); the previous last.ckpt is intact"):
        save_checkpoint(ckpt(3, size=1000), last)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # nothing changed, no temporary left


def test_no_write_goes_through_the_system_temp_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The temporary file sits beside the checkpoint, so the rename never crosses filesystems: with the system
    temp folder unavailable, saving still works."""
    monkeypatch.setenv("TMPDIR", str(tmp_path / "no-such-folder"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-such-folder"))
    save_checkpoint(ckpt(1), tmp_path / "run" / "last.ckpt")
    assert torch.load(tmp_path / "run" / "last.ckpt", weights_only=False)["global_step"] == 1


KILLED_WRITE = """
import os, signal, sys, torch
from latent_ndm.runs import checkpoints
real = torch.save
def dying(obj, f):
    f.write(b"PK" + b"x" * 4000)  # a partial zip, then the process dies mid-write
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)
checkpoints.torch.save = dying
checkpoints.save_checkpoint({"global_step": 9, "state_dict": {}}, sys.argv[1])
"""


def test_a_write_killed_midway_leaves_the_checkpoint_intact(tmp_path: Path) -> None:
    last = tmp_path / "last.ckpt"
    save_checkpoint(ckpt(1), last)
    save_checkpoint(ckpt(2), last)
    child = subprocess.run([sys.executable, "-c", KILLED_WRITE, str(last)], cwd=REPO, capture_output=True,
                           text=True, timeout=120)
    assert child.returncode == -9, child.stderr
    assert torch.load(last, weights_only=False)["global_step"] == 2
    assert torch.load(tmp_path / PREVIOUS_CKPT, weights_only=False)["global_step"] == 1
    point = find_resume_point(tmp_path)
    assert point.path == last and not point.damaged
    stale = [p.name for p in tmp_path.glob(".last.ckpt.*.tmp")]
    assert len(stale) == 1  # the killed writer's own temporary file; no other writer ever used its name
    remove_temporaries(tmp_path)  # what the next run does once it holds the run folder (runs/folders.py)
    save_checkpoint(ckpt(3), last)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt", PREVIOUS_CKPT]


def test_a_damaged_checkpoint_falls_back_to_the_one_before(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    last = tmp_path / "last.ckpt"
    save_checkpoint(ckpt(1), last)
    save_checkpoint(ckpt(2), last)
    os.truncate(last, last.stat().st_size // 2)
    point = find_resume_point(tmp_path)
    assert point.path == tmp_path / PREVIOUS_CKPT and point.checkpoint["global_step"] == 1
    assert [p.name for p, _ in point.damaged] == ["last.ckpt"]
    assert "does not load" in caplog.text and "resuming from" in caplog.text
    assert (tmp_path / "last.ckpt.damaged").is_file() and not last.exists()  # never kept as "previous" again
    os.truncate(tmp_path / PREVIOUS_CKPT, 100)
    point = find_resume_point(tmp_path)
    assert point.path is None and [p.name for p, _ in point.damaged] == [PREVIOUS_CKPT]
