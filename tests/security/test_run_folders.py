"""A run writes only inside its own folder: a symbolic link planted in a run folder (the lock, the log, checkpoints/,
export/, export/vae, .hydra/, images/, csv/) is refused in one sentence naming it, and `run_dir=` an existing folder
that is not a latent-ndm run is refused unless `run_dir_reuse=true`; in both cases nothing of the user's changes.
Before the fix, each planted link made a run truncate, write, delete `*.tmp` files or append outside its folder, and
a foreign `run_dir` lost its `*.tmp` files, its `.ckpt`, its `.hydra/config.yaml` and had its `train.log` appended."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from data_tools.files import LinkRefused, atomic_write_text, remove_temporaries
from latent_ndm.errors import TrainingError
from latent_ndm.training.run import train
from tests.support.hostile import error_lines
from tests.support.tiny_runs import base_overrides, command, vae_cfg

MARKER = ".latent-ndm-run"  # what a run that really started holds (spelled out: the attacks are of any version)


def snapshot(folder: Path) -> dict[str, str]:
    """Every entry below `folder` (links not followed) with the sha256 of a file's bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


def _outside(tmp_path: Path) -> Path:
    """The user's folder outside the run: a note and a `*.tmp` file of their own."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "notes.txt").write_text("years of work")
    (outside / "draft.tmp").write_text("not a leftover of ours")
    return outside


def _train(run: Path, tiny_data: Path, *extra: str) -> int:
    return command("train", train, ["stage=vae", *base_overrides(run, tiny_data), "trainer.max_steps=2",
                                    "trainer.val_check_interval=2", "stage.images.num=2", *extra])


@pytest.mark.parametrize("entry", [".lock", "train.log", "checkpoints", "export", "export/vae", ".hydra", "images",
                                   "csv"])
def test_a_link_planted_in_a_run_folder_is_refused(entry: str, tmp_path: Path, tiny_data: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    outside = _outside(tmp_path)
    run = tmp_path / "run"
    (run / Path(entry).parent).mkdir(parents=True, exist_ok=True)
    (run / MARKER).write_text("latent-ndm run: stage=vae\n")
    target = outside / "notes.txt" if entry in (".lock", "train.log") else outside
    (run / entry).symlink_to(target)
    before = snapshot(outside)
    code = _train(run, tiny_data)
    lines = error_lines(capsys.readouterr().err)
    assert code == 1 and len(lines) == 1, lines
    assert f"{run / entry} is a symbolic link (to {target}); refusing to" in lines[0]
    assert snapshot(outside) == before  # nothing truncated, written, deleted or appended outside the run


def test_a_link_where_a_logger_writes_is_refused(tmp_path: Path, tiny_data: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    outside = _outside(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    (run / MARKER).write_text("latent-ndm run: stage=vae\n")
    (run / "metrics").symlink_to(outside)  # not a folder of every run: the CSV logger's, by its configured name
    before = snapshot(outside)
    code = _train(run, tiny_data, "logger.csv.name=metrics")
    lines = error_lines(capsys.readouterr().err)
    assert code == 1 and len(lines) == 1 and f"{run / 'metrics'} is a symbolic link" in lines[0], lines
    assert snapshot(outside) == before


def _foreign(tmp_path: Path) -> Path:
    """A folder of the user's own that looks a little like a run: a checkpoint, a Hydra record, a log, temp files."""
    folder = tmp_path / "my_project"
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "checkpoints" / "last.ckpt").write_bytes(b"an unrelated model of mine")
    (folder / "checkpoints" / "upload.tmp").write_text("half-uploaded")
    (folder / ".hydra").mkdir()
    (folder / ".hydra" / "config.yaml").write_text("lr: 0.1\n")
    (folder / ".hydra" / "edit.tmp").write_text("mine")
    (folder / "train.log").write_text("my log\n")
    (folder / ".lock").write_text("my own lock file\n")
    return folder


def test_a_folder_that_is_not_a_run_is_refused(tmp_path: Path, tiny_data: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    folder = _foreign(tmp_path)
    before = snapshot(folder)
    code = _train(folder, tiny_data)
    lines = error_lines(capsys.readouterr().err)
    assert code == 1 and len(lines) == 1, lines
    assert f"run_dir={folder} is a folder that holds files (.hydra, .lock, checkpoints, ...) but is not a " in lines[0]
    assert "run_dir_reuse=true" in lines[0]
    assert snapshot(folder) == before


def test_run_dir_reuse_adopts_a_folder_that_is_not_a_run(tmp_path: Path, tiny_data: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    assert _train(folder, tiny_data) == 1 and "run_dir_reuse=true" in capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
    assert _train(folder, tiny_data, "run_dir_reuse=true") == 0
    assert (folder / "notes.txt").read_text() == "mine" and (folder / MARKER).is_file()
    assert (folder / "checkpoints" / "last.ckpt").is_file()


def test_an_empty_folder_or_one_left_with_the_lock_of_a_killed_start_is_adopted(tmp_path: Path) -> None:
    from latent_ndm.runs.folders import check_run_folder

    (tmp_path / "empty").mkdir()
    check_run_folder(tmp_path / "empty")
    (tmp_path / "killed").mkdir()
    (tmp_path / "killed" / ".lock").write_text("pid=123\ncommand=python -m latent_ndm.train\n")
    check_run_folder(tmp_path / "killed")
    (tmp_path / "killed" / ".lock").write_text("my own lock file\n")
    with pytest.raises(TrainingError, match="is not a latent-ndm run"):
        check_run_folder(tmp_path / "killed")


def test_a_run_of_an_earlier_version_is_recognised_by_its_shape(tmp_path: Path, tiny_data: Path) -> None:
    run = tmp_path / "run"
    train(vae_cfg(run, tiny_data))
    assert (run / MARKER).is_file()  # written when the run started
    (run / MARKER).unlink()  # as a run of a version before the marker: .hydra/config.yaml, checkpoints/, train.log
    result = train(vae_cfg(run, tiny_data, "trainer.max_steps=3"))
    assert result.trainer.global_step == 3 and (run / MARKER).is_file()


def test_remove_temporaries_refuses_a_linked_folder_or_a_linked_temporary_file(tmp_path: Path) -> None:
    outside = _outside(tmp_path)
    folder = tmp_path / "checkpoints"
    folder.symlink_to(outside)
    with pytest.raises(LinkRefused, match=rf"{folder} is a symbolic link \(to {outside}\); refusing to delete"):
        remove_temporaries(folder)
    folder.unlink()
    folder.mkdir()
    (folder / ".last.ckpt.x.tmp").write_text("a leftover")
    (folder / "y.tmp").symlink_to(outside / "draft.tmp")
    with pytest.raises(LinkRefused, match="y.tmp is a symbolic link"):
        remove_temporaries(folder)
    assert (folder / ".last.ckpt.x.tmp").is_file() and os.path.islink(folder / "y.tmp")  # nothing deleted
    assert (outside / "draft.tmp").read_text() == "not a leftover of ours"


def test_atomic_write_refuses_a_linked_destination_folder(tmp_path: Path) -> None:
    outside = _outside(tmp_path)
    (tmp_path / "export").symlink_to(outside)
    with pytest.raises(LinkRefused, match=r"export is a symbolic link .*refusing to write config\.yaml"):
        atomic_write_text(tmp_path / "export" / "config.yaml", "x")
    assert sorted(p.name for p in outside.iterdir()) == ["draft.tmp", "notes.txt"]
