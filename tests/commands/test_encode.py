"""`python -m latent_ndm.encode`: image shards -> latent shards of a frozen VAE, and `stage=ndm data=latents`."""

from __future__ import annotations

import io
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image

from data_tools.errors import DataToolError
from data_tools.files import sha256_file
from data_tools.shard_index import iter_tar_samples
from data_tools.synthetic import write_synthetic
from latent_ndm import encode
from latent_ndm.errors import TrainingError
from latent_ndm.runs.config import compose_config
from latent_ndm.runs.export import load_vae, save_vae
from latent_ndm.training.run import train
from tests.support import REPO
from tests.support.tiny_runs import command
from vae import VAE, quantize

NUM_IMAGES = 40  # 30 train, 10 val, 16x16


def _compose(overrides: list[str]):
    return compose_config("train", overrides)


def _tiny_vae_export(folder: Path, seed: int, latent_scale: float) -> Path:
    """A randomly initialised tiny VAE ((3, 16, 16) images -> (3, 4, 4) latents), exported as stage=vae would."""
    torch.manual_seed(seed)
    vae: VAE = instantiate(_compose(["vae=tiny"]).vae, _convert_="all")
    vae.set_latent_scale(latent_scale)
    return save_vae(vae, folder)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("encode")
    images = write_synthetic(root / "images", n=NUM_IMAGES, resolution=16, shard_size=8, split="train=0.75,val=0.25",
                             workers=0, progress=False)
    vae, other = _tiny_vae_export(root / "vae", 0, 1.7), _tiny_vae_export(root / "other", 1, 1.7)
    assert command("encode", encode.run, [f"vae_export={vae}", f"shards={images}", f"out={root / 'latents'}",
                                          "batch_size=7", "device=cpu"]) == 0
    return {"root": root, "images": images, "vae": vae, "other": other, "latents": root / "latents"}


def _stored(folder: Path, split: str) -> dict[str, dict[str, np.ndarray]]:
    out = {}
    for path in sorted(folder.glob(f"*-{split}-*.tar")):
        for key, fields in iter_tar_samples(path):
            assert key not in out
            out[key] = {k[:-4]: np.load(io.BytesIO(v)) for k, v in fields.items() if k.endswith(".npy")}
    return out


def test_latents_are_the_vae_posteriors_of_the_images(setup: dict[str, Path]) -> None:
    vae = load_vae(setup["vae"])
    manifest = json.loads((setup["latents"] / "manifest.json").read_text())
    assert manifest["kind"] == "latents" and manifest["complete"]
    record = manifest["config"]["vae"]
    assert record["sha256"] == sha256_file(setup["vae"] / "ema.safetensors")
    assert record["latent_scale"] == pytest.approx(1.7) and record["latent_shape"] == [3, 4, 4]
    assert manifest["config"]["fields"] == {"logvar": [3, 4, 4], "mean": [3, 4, 4]}
    for split, count in (("train", 30), ("val", 10)):
        stored = _stored(setup["latents"], split)
        assert len(stored) == manifest["splits"][split]["count"] == count
        keys, pixels = [], []
        for path in sorted(setup["images"].glob(f"*-{split}-*.tar")):
            for key, fields in iter_tar_samples(path):
                keys.append(key)
                pixels.append(np.asarray(Image.open(io.BytesIO(fields["png"]))))
        x = torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).float() / 127.5 - 1
        with torch.no_grad():
            q = vae.encode(quantize(x, vae.bits))
        assert sorted(keys) == sorted(stored)
        for i, key in enumerate(keys):
            np.testing.assert_allclose(stored[key]["mean"], q.mean[i].numpy(), rtol=0, atol=1e-5)
            np.testing.assert_allclose(stored[key]["logvar"], q.logvar[i].numpy(), rtol=0, atol=1e-5)
            assert stored[key]["mean"].dtype == np.float32


def test_missing_checkpoint_or_shards_are_one_line_errors(setup: dict[str, Path], tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    cases = [
        ([f"vae_export={tmp_path / 'nope'}", f"shards={setup['images']}"], r"no VAE checkpoint at .*nope; train one"),
        ([f"vae_export={setup['vae']}", f"shards={tmp_path / 'absent'}"], r"no image shard folder .*absent"),
        ([f"vae_export={setup['vae']}", f"shards={tmp_path / 'empty'}"],
         r"no shards \(NAME-SPLIT-000000.tar\) in .*empty"),
        ([f"vae_export={setup['vae']}", f"shards={setup['images']}", "splits=[test]"], r"has no test shards"),
        ([f"shards={setup['images']}"], r"vae_export is required: give vae_export=\.\.\. on the command line"),
    ]
    for argv, pattern in cases:
        capsys.readouterr()
        assert command("encode", encode.run, [*argv, f"out={tmp_path / 'out'}"]) == 1
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and err.startswith("error: ")
        assert re.search(pattern, err), err
    assert not (tmp_path / "out").exists()
    proc = subprocess.run([sys.executable, "-m", "latent_ndm.encode", f"vae_export={setup['vae']}",
                           f"shards={setup['images']}", "bogus=1"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1 and proc.stderr.startswith("error: bogus is not a key of configs/encode.yaml")
    assert "Traceback" not in proc.stderr


def _latent_cfg(setup: dict[str, Path], run_dir: Path, vae: Path, *overrides: str):
    return _compose([
        "stage=ndm", "data=latents", f"data.root={setup['latents']}", "data.batch_size=8", "data.shuffle_buffer=8",
        f"run_dir={run_dir}", f"vae_export={vae}", "ndm/denoiser=tiny", "ndm.latent.channels=3",
        "ndm.latent.resolution=4", "ndm.denoiser.channel_mult=[1]", "stage.images.num=2", "stage.images.steps=4",
        "stage.collapsed_vae=warn", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
        "trainer.num_sanity_val_steps=0", "logger=[csv]", *overrides,
    ])


@pytest.mark.parametrize("transform", ["separable", "identity"])
def test_stage_ndm_trains_and_validates_on_latent_shards(setup: dict[str, Path], tmp_path: Path,
                                                         transform: str) -> None:
    result = train(_latent_cfg(setup, tmp_path / "run", setup["vae"], "trainer.fast_dev_run=true",
                               f"ndm/transform={transform}"))
    m = result.report["ndm_metrics"]
    assert "nelbo_bpd" not in m and "rec_bpd" not in m  # no images, no reconstruction term
    assert all(math.isfinite(v) for v in m.values()) and m["count"] == 5  # one of two val batches
    assert m["kl_bpd"] == pytest.approx(m["neg_entropy_bpd"] + m["cross_entropy_bpd"])
    assert result.module.loss.num_dims == 3 * 16 * 16
    assert (result.run_dir / "export" / "ndm.safetensors").is_file()


def test_stage_ndm_refuses_latents_of_another_vae(setup: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(DataToolError, match=r"were encoded with the VAE .*vae \(sha256 [0-9a-f]{12}, latent scale "
                                            r"1\.7\), not with vae_export=.*other"):
        train(_latent_cfg(setup, tmp_path / "a", setup["other"], "trainer.fast_dev_run=true"))
    with pytest.raises(TrainingError, match="ndm.mode=joint trains the encoder and needs images"):
        train(_latent_cfg(setup, tmp_path / "b", setup["vae"], "trainer.fast_dev_run=true", "ndm.mode=joint"))
    with pytest.raises(TrainingError, match="holds no latent-shard manifest"):
        train(_latent_cfg(setup, tmp_path / "c", setup["vae"], f"data.root={setup['images']}"))
    with pytest.raises(TrainingError, match="stage=vae trains on images"):
        train(_compose(["stage=vae", "vae=tiny", "data=latents", f"data.root={setup['latents']}",
                        f"run_dir={tmp_path / 'd'}"]))
    assert not (tmp_path / "a" / "checkpoints").exists()
