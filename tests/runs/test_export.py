"""The run/export format (`latent_ndm.runs.export`): VAE exports written atomically and read back identically, and
the atomic writer they use (`data_tools.files.atomic_write`)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch

from data_tools.files import DiskFullError, atomic_write, atomic_write_text
from latent_ndm.runs.export import VAE_CONFIG as CONFIG_NAME
from latent_ndm.runs.export import VAE_WEIGHTS as WEIGHTS_NAME
from latent_ndm.runs.export import load_vae, save_vae, vae_weights_file
from tests.vae.test_model import _images, _tiny_vae
from vae import VAE


def _assert_same_outputs(a: VAE, b: VAE, x: torch.Tensor) -> None:
    with torch.no_grad():
        qa, qb = a.encode(x), b.encode(x)
        torch.testing.assert_close(qa.mean, qb.mean, rtol=0, atol=0)
        torch.testing.assert_close(qa.logvar, qb.logvar, rtol=0, atol=0)
        torch.testing.assert_close(a.decode(qa.mean).log_prob(x), b.decode(qa.mean).log_prob(x), rtol=0, atol=0)
    assert a.latent_scale.item() == b.latent_scale.item()


def test_export_round_trip(tmp_path) -> None:
    vae = _tiny_vae().eval()
    vae.set_latent_scale(0.73)
    folder = save_vae(vae, tmp_path / "export")
    assert sorted(p.name for p in folder.iterdir()) == sorted([WEIGHTS_NAME, CONFIG_NAME])  # no temp files left
    x = _images()
    for path in (folder, folder / WEIGHTS_NAME, folder / CONFIG_NAME):
        loaded = load_vae(path)
        assert not loaded.training and loaded.config() == vae.config()
        _assert_same_outputs(vae, loaded, x)
    torch.save({"vae_config": vae.config(), "state_dict": vae.state_dict()}, tmp_path / "vae.pt")
    _assert_same_outputs(vae, load_vae(tmp_path / "vae.pt"), x)


def test_missing_export_gives_one_clear_error(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"ema\.safetensors and vae_config\.yaml.*latent_ndm\.train stage=vae"):
        load_vae(tmp_path / "nowhere")
    folder = save_vae(_tiny_vae(), tmp_path / "export")
    (folder / CONFIG_NAME).unlink()
    with pytest.raises(FileNotFoundError, match=r"missing vae_config\.yaml; create it with"):
        load_vae(folder)
    with pytest.raises(FileNotFoundError, match="stage=vae"):
        load_vae(tmp_path / "missing.ckpt")


def test_vae_weights_file_of_an_export_or_a_file(tmp_path: Path) -> None:
    folder = save_vae(_tiny_vae(), tmp_path / "export")
    assert vae_weights_file(folder) == folder / WEIGHTS_NAME
    assert vae_weights_file(folder / CONFIG_NAME) == folder / WEIGHTS_NAME
    assert vae_weights_file(tmp_path / "vae.pt") == tmp_path / "vae.pt"


def test_atomic_write_keeps_the_old_file_when_the_write_fails(tmp_path: Path) -> None:
    path = atomic_write_text(tmp_path / "a" / "metrics.yaml", "old\n")

    def failing(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(DiskFullError, match=r"no space left in .*a to write metrics.yaml \(full after 0.0 MiB, "
                                            r".* free\); the previous metrics.yaml is intact"):
        atomic_write(path, failing)
    assert path.read_text() == "old\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["metrics.yaml"]  # the temporary file is gone


def test_atomic_writes_get_the_usual_permissions(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        folder = save_vae(_tiny_vae(), tmp_path / "export")
    finally:
        os.umask(umask)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()}
    assert modes == {WEIGHTS_NAME: 0o644, CONFIG_NAME: 0o644}
