"""A run folder has one writer: a second process on the same folder stops at once in one line naming the holder's
pid; a lock left by a dead process is taken over; temporary files are unique, so two writers of one file never share
one; and the leftovers of a killed writer are cleared when the next run takes the folder."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from data_tools.files import atomic_write
from data_tools.locks import FolderInUse, sole_writer
from latent_ndm.runs.folders import LOCK_NAME, MARKER_NAME
from latent_ndm.training.run import train
from tests.support import REPO
from tests.support.hostile import error_lines
from tests.support.tiny_runs import base_overrides, command, vae_cfg

HOLD = ("import sys, time; from pathlib import Path; from data_tools.locks import sole_writer\n"
        "with sole_writer(Path(sys.argv[1]), 'the folder', 'wait'):\n"
        "    print('held', flush=True); time.sleep(120)\n")


def _holder(lock: Path) -> subprocess.Popen[str]:
    """Another process holding `lock` (as a running training run holds its folder's)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(lock)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_run_on_a_folder_in_use_stops_naming_the_holder(tmp_path: Path, tiny_data: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    holder = _holder(run / LOCK_NAME)
    try:
        code = command("train", train, [*_overrides(run, tiny_data)])
        lines = error_lines(capsys.readouterr().err)
        assert code == 1 and len(lines) == 1, lines
        assert f"the run folder {run} is in use by process {holder.pid} (python -c" in lines[0]
        assert "another name=" in lines[0]
        assert sorted(p.name for p in run.iterdir()) == [LOCK_NAME]  # nothing of the run was touched
    finally:
        holder.kill()
        holder.wait()
    result = train(vae_cfg(run, tiny_data))  # the holder is gone: its lock file is taken over
    assert result.trainer.global_step == 2 and (run / "export").is_dir()


def _overrides(run: Path, tiny_data: Path) -> list[str]:
    return ["stage=vae", *base_overrides(run, tiny_data), "trainer.max_steps=2", "trainer.val_check_interval=2"]


def test_the_lock_is_refused_in_process_too_and_released_after(tmp_path: Path) -> None:
    lock = tmp_path / "run" / LOCK_NAME
    with sole_writer(lock, "the run folder x", "wait"):
        (tmp_path / "run" / "data").write_text("x")
        with pytest.raises(FolderInUse, match=r"the run folder x is in use by process \d+"):
            with sole_writer(lock, "the run folder x", "wait"):
                pass
    with sole_writer(lock, "the run folder x", "wait"):
        pass
    assert lock.is_file()  # kept beside the run's files (it only records the last holder)


def test_a_failed_start_leaves_no_lock_behind(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        with sole_writer(tmp_path / "run" / LOCK_NAME, "the run folder", "wait"):
            raise RuntimeError("the start failed")
    assert not (tmp_path / "run").exists()


def test_two_writers_of_one_file_do_not_share_a_temporary_file(tmp_path: Path) -> None:
    target, both_writing = tmp_path / "last.ckpt", threading.Barrier(2, timeout=10)
    errors: list[BaseException] = []

    def write(payload: bytes) -> None:
        def body(tmp: Path) -> None:
            tmp.write_bytes(payload[:10])
            both_writing.wait()  # both temporary files exist at once
            tmp.write_bytes(payload)

        try:
            atomic_write(target, body)
        except BaseException as err:  # noqa: BLE001 - collected for the assertion
            errors.append(err)

    threads = [threading.Thread(target=write, args=(bytes([i]) * 1000,)) for i in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and target.read_bytes() in (b"\1" * 1000, b"\2" * 1000)
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_a_killed_writers_temporary_files_are_cleared_by_the_next_run(tmp_path: Path, tiny_data: Path) -> None:
    run = tmp_path / "run"
    stale = run / "checkpoints" / ".last.ckpt.k1ll3d.tmp"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half a checkpoint")
    (run / MARKER_NAME).write_text("latent-ndm run: stage=vae\n")  # the killed run had started
    train(vae_cfg(run, tiny_data))
    assert not stale.exists() and (run / "checkpoints" / "last.ckpt").is_file()
