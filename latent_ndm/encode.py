"""``python -m latent_ndm.encode vae_export=VAE shards=IMAGES [out=OUT] [batch_size=64] [device=auto] [splits=[a,b]]``
(options: configs/encode.yaml)

Encodes every image of the image shards in IMAGES with the frozen VAE (images snapped to the VAE's bit depth, as
the NDM stage does) and writes the encoder posteriors q(z|x) as latent shards ``OUT/{name}-{split}-*.tar`` (fields
``mean`` and ``logvar``, unnormalised, keyed like the source images), one shard at a time, atomically, with a
``manifest.json`` that records the VAE (path, sha256 of its weights file, latent scale; see
`data_tools.latent_shards`). OUT defaults to ``IMAGES-latents`` beside IMAGES. Train on them with
``python -m latent_ndm.train stage=ndm data=latents data.root=OUT vae_export=VAE``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from data_tools.errors import DataToolError
from data_tools.locations import is_remote, local_path
from latent_ndm.cli import hydra_command
from latent_ndm.runs.config import vae_export_of

if TYPE_CHECKING:  # numpy, torch and the model are imported where used, after the command line was checked
    import numpy as np
    import torch

    from latent_ndm.model import LatentModel


@dataclass
class EncodeOptions:
    """What to encode (configs/encode.yaml): see the module doc."""

    vae_export: Path  # a VAE export folder
    shards: str  # a local folder or a URL prefix (https://, s3://, gs://) with its manifest.json
    out: Path | None = None
    batch_size: int = 64
    device: str = "auto"
    splits: list[str] = field(default_factory=list)  # empty: every split of the image shards

    @property
    def out_dir(self) -> Path:
        if self.out is not None:
            return self.out
        if is_remote(self.shards):
            raise DataToolError(f"the image shards {self.shards} are remote; give out=<local folder> for the latents")
        folder = local_path(self.shards)
        return folder.parent / f"{folder.name}-latents"

    @classmethod
    def from_config(cls, cfg: DictConfig) -> EncodeOptions:
        if int(cfg.batch_size) < 1:
            raise DataToolError(f"batch_size must be >= 1, got {cfg.batch_size}")
        export = vae_export_of(cfg)
        if export is None:
            raise DataToolError("vae_export is required: give vae_export=<a VAE export folder>, e.g. "
                                "runs/vae/default/export")
        return cls(Path(export), str(cfg.shards), Path(cfg.out) if cfg.out else None, int(cfg.batch_size),
                   str(cfg.device), [str(s) for s in cfg.splits or []])


def image_splits(shards: str, wanted: list[str]) -> tuple[str, dict[str, list[str]]]:
    """(dataset name, split -> its image shards) of the folder `shards` (local, or a URL prefix with its manifest);
    one-sentence errors when empty."""
    from data_tools.manifest import read_manifest
    from data_tools.shard_index import HOW_TO_CREATE, shards_by_split

    if not is_remote(shards) and not local_path(shards).is_dir():
        raise DataToolError(f"no image shard folder {shards}; {HOW_TO_CREATE}")
    manifest = read_manifest(shards)
    if manifest is not None and manifest.get("kind") != "images":
        raise DataToolError(f"{shards} holds {manifest.get('kind')}, not image shards")
    return shards_by_split(shards, wanted)


def encode_images(model: LatentModel, paths: list[str], resolution: int, batch_size: int,
                  device: torch.device) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
    """(key, {"mean", "logvar"}) of q(z|x) for every image of `paths`, in shard order, `batch_size` at a time."""
    import torch

    from data_tools.reading import iter_shard_samples
    from latent_ndm.data.streams import SampleDecoder, collate

    decode = SampleDecoder("images", resolution)

    def flush(batch: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
        x = collate(batch, return_meta=False).to(device)
        with torch.inference_mode():
            q = model.posterior(x)
        mean, logvar = (t.float().cpu().numpy() for t in (q.mean, q.logvar))
        for i, sample in enumerate(batch):
            yield sample["key"], {"mean": mean[i], "logvar": logvar[i]}

    batch: list[dict[str, Any]] = []
    for path in paths:
        for sample in iter_shard_samples(path):  # a shard that cannot be read stops the encoding, naming it
            batch.append(decode(sample))
            if len(batch) == batch_size:
                yield from flush(batch)
                batch = []
    if batch:
        yield from flush(batch)


def encode_shards(options: EncodeOptions) -> dict[str, Any]:
    """Encode the image shards of `options` into latent shards; return the latent manifest."""
    from data_tools.latent_shards import vae_record, write_latent_shards
    from data_tools.manifest import read_manifest
    from latent_ndm.data.module import read_shard_info
    from latent_ndm.model import LatentModel
    from latent_ndm.runs.export import load_vae, vae_weights_file
    from latent_ndm.runs.hardware import resolve_device

    out_dir = options.out_dir
    if not options.vae_export.exists():
        raise DataToolError(f"no VAE checkpoint at {options.vae_export}; train one with `python -m latent_ndm.train "
                            "stage=vae` (it writes runs/vae/default/export) or give vae_export=<a VAE export folder>")
    name, splits = image_splits(options.shards, options.splits)
    image_manifest = read_manifest(options.shards) or {}
    resolution = read_shard_info(next(iter(splits.values()))).resolution
    try:
        vae = load_vae(options.vae_export)
        latent_shape = vae.latent_shape(resolution)
    except (FileNotFoundError, ValueError, KeyError, RuntimeError) as err:
        raise DataToolError(f"cannot use the VAE checkpoint {options.vae_export} on {resolution}px images: {err}"
                            ) from err
    device = resolve_device(options.device)
    vae = vae.to(device).eval().requires_grad_(False)
    weights = vae_weights_file(options.vae_export)
    meta = {"vae": vae_record(options.vae_export, weights, vae.latent_scale.item(), vae.bits, latent_shape, resolution),
            "image_shards": str(options.shards), "encoded_splits": list(splits)}
    shard_size = int(image_manifest.get("config", {}).get("shard_size", 1000))
    manifest: dict[str, Any] = {}
    for split, paths in splits.items():
        items = encode_images(LatentModel(vae), paths, resolution, options.batch_size, device)
        manifest = write_latent_shards(out_dir, name, split, items, shard_size=shard_size, meta=meta)
    return manifest


def run(cfg: DictConfig) -> dict[str, Any]:
    """Encode as `cfg` says, then print what was written."""
    options = EncodeOptions.from_config(cfg)
    manifest = encode_shards(options)
    counts = ", ".join(f"{s}={v['count']}" for s, v in manifest["splits"].items())
    shape = "x".join(str(n) for n in manifest["config"]["vae"]["latent_shape"])
    print(f"wrote {shape} latents to {options.out_dir}: {counts}")
    return manifest


main = hydra_command("encode", run)


if __name__ == "__main__":
    main()
