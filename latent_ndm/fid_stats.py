"""Precompute FID reference statistics of a shard dataset (train + val by default, as LSGM; configs/fid_stats.yaml).

    python -m latent_ndm.fid_stats shards=data/celebahq-256 out=data/celebahq-256-fid
    python -m latent_ndm.fid_stats shards=data/celebahq-256 out=data/celebahq-256-fid weights=/models/inception.pth
    python -m latent_ndm.fid_stats shards=https://host/celebahq-256 out=data/celebahq-256-fid   # shards over HTTP

writes ``OUT/fid_stats.npz`` (mu, sigma, and with features=true the N x D features KID and precision/recall need)
and ``OUT/fid_stats.json`` (extractor, layer, weights sha256, resize, N, image format, splits, shard sha256s). The
extractor's weights are resolved before any data is read; a missing file is one line on stderr and exit status 1.
Nothing is downloaded.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from data_tools.locations import is_remote, join, local_path, name_of
from latent_ndm.cli import hydra_command

if TYPE_CHECKING:  # torch and the shard readers are imported where used, after the command line was checked
    from data_tools.shard_index import ShardInfo


def split_infos(root: str, splits: list[str]) -> dict[str, ShardInfo]:
    """The image shards of each split under `root` (a local folder, or a URL prefix with its manifest); missing
    shards raise a one-sentence error."""
    from data_tools.shard_index import split_shards
    from latent_ndm.data.module import read_shard_info

    if not is_remote(root) and not local_path(root).is_dir():
        raise FileNotFoundError(f"shard directory {root} does not exist; create shards with "
                                "`python -m data_tools.shard SRC OUT` or `python -m data_tools.synthetic OUT`")
    infos = {split: read_shard_info(split_shards(root, split)) for split in splits}
    for split, info in infos.items():
        if info.kind != "images":
            raise ValueError(f"{split} shards under {root} hold {info.kind}, but FID statistics need images")
    return infos


def shard_sources(root: str, infos: dict[str, ShardInfo]) -> dict[str, Any]:
    """Shard file -> sha256 (from the dataset manifest, else hashed now), counts per split, manifest hash."""
    from data_tools.manifest import MANIFEST_NAME
    from data_tools.reading import read_optional
    from data_tools.shard_index import manifest_records

    shards: dict[str, str] = {}
    for info in infos.values():
        records = manifest_records(info.manifest) if info.manifest else {}
        for path in info.paths:
            record = records.get(name_of(path))
            shards[name_of(path)] = record["sha256"] if record and "sha256" in record else sha256_bytes(path)
    manifest = read_optional(join(root, MANIFEST_NAME))
    return {"root": str(root), "counts": {s: info.total for s, info in infos.items()}, "shards": shards,
            "manifest_sha256": hashlib.sha256(manifest).hexdigest() if manifest is not None else None}


def sha256_bytes(location: str) -> str:
    """Hex sha256 of the shard at `location` (local or remote), read in chunks."""
    from data_tools.reading import open_location

    digest = hashlib.sha256()
    with open_location(location) as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


IMAGE_FIELDS = ("png", "jpg", "jpeg", "webp")


def image_format(shard: str) -> str | None:
    """How the images of `shard` are stored: the image field of its first sample ("png", "jpg", ...)."""
    from data_tools.shard_index import iter_tar_samples

    for _, fields in iter_tar_samples(shard):
        return next((f for f in IMAGE_FIELDS if f in fields), None)
    return None


def run(cfg: DictConfig) -> Path:
    """Compute and write the reference statistics `cfg` asks for; the path of the .npz."""
    from latent_ndm.data.module import ShardDataModule
    from latent_ndm.evaluation import fid

    fid.call_registrations(list(cfg.register or []))
    splits = [str(s) for s in cfg.splits or []]
    if not splits:
        raise ValueError("splits names no split; give e.g. splits=[train,val]")
    shards, out = str(cfg.shards), Path(cfg.out)
    weights = fid.resolve_weights(cfg.extractor, cfg.weights)  # before any data is read
    npz, _ = fid.stats_paths(out)
    if npz.exists() and not cfg.force:
        raise ValueError(f"{npz} already exists; give force=true to replace it")
    infos = split_infos(shards, splits)
    extractor = fid.load_feature_extractor(cfg.extractor, cfg.layer, weights, cfg.device)
    paths = [p for info in infos.values() for p in info.paths]
    data = ShardDataModule(train_shards=None, test_shards=paths, batch_size=cfg.batch_size,
                           num_workers=cfg.num_workers, kind="images", on_error="raise")
    stats = fid.compute_stats(data.test_dataloader(), extractor, batch_size=cfg.batch_size, limit=cfg.limit,
                              progress=cfg.progress, keep_features=bool(cfg.get("features", True)))
    stats.splits, stats.source = splits, shard_sources(shards, infos)
    stats.image_format = image_format(paths[0])
    stats.source.update(weights_file=None if weights is None else str(weights), limit=cfg.limit)
    written = stats.save(npz)
    print(f"wrote {written} and its manifest: {stats.n} images of {'+'.join(splits)}, {extractor.name} "
          f"layer {extractor.layer}")
    return written


main = hydra_command("fid_stats", run)


if __name__ == "__main__":
    main()
