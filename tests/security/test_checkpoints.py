"""A downloaded checkpoint is data: a pickle that would run code is refused by every path that loads a checkpoint
(evaluate, sample, the API, resume auto / path, vae_export, encode, Lightning's own load), in one line, with nothing
run; the project's own checkpoints load as data (the resume tests elsewhere go through the same loader)."""

from __future__ import annotations

from pathlib import Path

import pytest

import latent_ndm
from latent_ndm import encode, evaluate, sample
from latent_ndm.errors import EvaluationError
from latent_ndm.runs.export import UnsafeFileError, load_torch_file, load_vae
from latent_ndm.runs.folders import MARKER_NAME
from latent_ndm.training.callbacks.checkpoint import AtomicCheckpointIO
from latent_ndm.training.run import train
from tests.support.hostile import code_running_checkpoint, error_lines
from tests.support.tiny_runs import base_overrides, command

REFUSAL = "was not loaded: it holds the Python object exec, which could run code when unpickled"


@pytest.fixture
def evil(tmp_path: Path) -> tuple[Path, Path]:
    """(a code-running checkpoint shaped like a latent-ndm one, the marker file its pickle would create)."""
    marker = tmp_path / "marker"
    config = {"stage": {"name": "vae"}, "data": {"resolution": 16}}
    return code_running_checkpoint(tmp_path / "evil.ckpt", marker, config=config, vae_config={}), marker


def _refused(code: int, capsys: pytest.CaptureFixture[str], marker: Path) -> str:
    lines = error_lines(capsys.readouterr().err)
    assert code == 1 and len(lines) == 1, lines
    assert not marker.exists(), "the pickle ran its code"
    assert REFUSAL in lines[0]
    return lines[0]


@pytest.mark.parametrize(("name", "run", "overrides"), [
    ("evaluate", evaluate.run, ["metrics=[nelbo]", "progress=false", "accelerator=cpu"]),
    ("sample", sample.run, ["num=2", "progress=false", "device=cpu"]),
])
def test_evaluate_and_sample_refuse_a_code_running_checkpoint(name: str, run: object, overrides: list[str],
                                                               evil: tuple[Path, Path],
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    path, marker = evil
    _refused(command(name, run, [f"ckpt={path}", *overrides]), capsys, marker)


def test_the_api_refuses_a_code_running_checkpoint(evil: tuple[Path, Path]) -> None:
    path, marker = evil
    with pytest.raises(EvaluationError, match=REFUSAL):
        latent_ndm.load(path)
    assert not marker.exists()


def test_resume_auto_refuses_a_planted_last_checkpoint_and_keeps_it(tmp_path: Path, tiny_data: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    run, marker = tmp_path / "run", tmp_path / "marker"
    planted = code_running_checkpoint(run / "checkpoints" / "last.ckpt", marker)
    (run / MARKER_NAME).write_text("latent-ndm run: stage=vae\n")  # planted in a run, not in a foreign folder
    code = command("train", train, ["stage=vae", *base_overrides(run, tiny_data), "trainer.max_steps=1"])
    line = _refused(code, capsys, marker)
    assert "cannot resume" in line and "resume=never" in line
    assert planted.is_file() and not (run / "checkpoints" / "last.ckpt.damaged").exists()  # not passed over as damage


def test_resume_from_a_path_refuses_a_code_running_checkpoint(tmp_path: Path, tiny_data: Path, evil: tuple[Path, Path],
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    path, marker = evil
    code = command("train", train, ["stage=vae", *base_overrides(tmp_path / "run", tiny_data), f"resume={path}"])
    _refused(code, capsys, marker)
    assert not (tmp_path / "run").exists()  # a start that fails leaves nothing behind


def test_stage_ndm_refuses_a_code_running_vae_checkpoint(tmp_path: Path, tiny_data: Path, evil: tuple[Path, Path],
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    path, marker = evil
    code = command("train", train, ["stage=ndm", *base_overrides(tmp_path / "run", tiny_data), f"vae_export={path}",
                                    "ndm/denoiser=tiny"])
    _refused(code, capsys, marker)


def test_encode_refuses_a_code_running_vae_checkpoint(tmp_path: Path, tiny_data: Path, evil: tuple[Path, Path],
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    path, marker = evil
    code = command("encode", encode.run, [f"vae_export={path}", f"shards={tiny_data}", f"out={tmp_path / 'latents'}",
                                          "device=cpu"])
    _refused(code, capsys, marker)
    assert not (tmp_path / "latents").exists()


def test_every_loader_reads_as_data_only(evil: tuple[Path, Path]) -> None:
    path, marker = evil
    for load in (load_torch_file, load_vae, AtomicCheckpointIO().load_checkpoint):
        with pytest.raises(UnsafeFileError, match=REFUSAL):
            load(path)
    assert not marker.exists()
