"""A run name never reaches outside `runs/<stage>/`, a run folder (`run_dir=`, checked like a name) takes no `..`
detour, and a smoke test (`fast_dev_run`) trains in a fresh temporary folder: nothing that exists is emptied,
whatever name it is given."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from latent_ndm.errors import TrainingError
from latent_ndm.runs.config import compose_config
from latent_ndm.runs.folders import check_run_name
from latent_ndm.training.run import train
from tests.support.hostile import error_lines
from tests.support.tiny_runs import NUM_IMAGES, command


def _victim(tmp_path: Path) -> Path:
    victim = tmp_path / "victim"
    (victim / "notes").mkdir(parents=True)
    (victim / "notes" / "thesis.tex").write_text("years of work")
    return victim


def _overrides(tiny_data: Path, *extra: str) -> list[str]:
    """The tiny VAE run with its folder chosen by `name` (run_dir left to the config: runs/vae/<name>)."""
    return ["stage=vae", "vae=tiny", f"data.root={tiny_data}", f"data.num_images={NUM_IMAGES}", "data.resolution=16",
            "data.batch_size=8", "data.num_workers=0", "logger=[csv]", "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false", *extra]


@pytest.mark.parametrize("form", ["absolute", "relative"])
def test_a_name_that_leaves_the_runs_folder_is_refused(form: str, tmp_path: Path, tiny_data: Path,
                                                       capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    victim = _victim(tmp_path)
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # the system temp folder, for this test
    monkeypatch.chdir(tmp_path)
    # before the names were checked, fast_dev_run emptied <temp>/latent-ndm-fast-dev-run-<uid>/vae/<name>: the victim
    name = str(victim) if form == "absolute" else "../../../victim"
    code = command("train", train, _overrides(tiny_data, f"name={name}", "trainer.fast_dev_run=true"))
    lines = error_lines(capsys.readouterr().err)
    assert code == 1 and len(lines) == 1 and "is not a run name" in lines[0]
    assert (victim / "notes" / "thesis.tex").read_text() == "years of work"
    assert sorted(p.name for p in (victim / "notes").iterdir()) == ["thesis.tex"]


def test_fast_dev_run_trains_in_a_fresh_temporary_folder(tmp_path: Path, tiny_data: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    first = train(compose_config("train", _overrides(tiny_data, "trainer.fast_dev_run=true"))).run_dir
    (first / "mine.txt").write_text("kept")
    second = train(compose_config("train", _overrides(tiny_data, "trainer.fast_dev_run=true"))).run_dir
    assert first != second and first.parent == second.parent == tmp_path / "tmp"
    assert (first / "mine.txt").read_text() == "kept" and (second / "export").is_dir()
    assert not (tmp_path / "runs").exists()  # the run folder itself is not touched


@pytest.mark.parametrize("name", ["default", "bench-full-600-seed1", "sweep/lr=3e-4,b=2", "celebahq256_ndm.v2"])
def test_ordinary_names_pass(name: str) -> None:
    assert check_run_name(name) == name


@pytest.mark.parametrize("name", ["", "/abs", "a/../../b", "..", ".hidden", "a//b", "a/", "x;rm -rf ~", "a\nb"])
def test_names_that_are_not_folder_names_are_refused(name: str) -> None:
    with pytest.raises(TrainingError, match="is not a run name"):
        check_run_name(name)


@pytest.mark.parametrize("run_dir", ["/scratch/My Runs/.cache/x", "/tmp/run"])
def test_a_run_dir_is_any_path_without_detours(run_dir: str) -> None:
    assert check_run_name(run_dir, "run_dir") == run_dir


@pytest.mark.parametrize("run_dir", ["", "runs/link/../../victim", "..", "runs/x\ny"])
def test_a_run_dir_with_a_detour_or_a_control_character_is_refused(run_dir: str, tmp_path: Path, tiny_data: Path,
                                                                   capsys: pytest.CaptureFixture[str],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code = command("train", train, _overrides(tiny_data, f"run_dir='{run_dir}'"))
    lines = error_lines(capsys.readouterr().err)
    assert code == 1 and len(lines) == 1 and "is not a run folder" in lines[0], lines
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing was written
