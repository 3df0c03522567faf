"""Precompute FID reference statistics of a shard dataset (train + val by default, as LSGM).

    python -m latent_ndm.fid_stats --shards data/celebahq-256 --out data/celebahq-256-fid
    python -m latent_ndm.fid_stats shards=data/celebahq-256 out=data/celebahq-256-fid weights=/models/inception.pth

writes ``OUT/fid_stats.npz`` (mu, sigma) and ``OUT/fid_stats.json`` (extractor, layer, weights sha256, resize, N,
splits, shard sha256s). The extractor's weights are resolved before any data is read; a missing file is one line
on stderr and exit status 1. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from data_tools.errors import DataToolError
from data_tools.files import sha256_file
from data_tools.manifest import manifest_path
from data_tools.shard_index import ShardInfo, manifest_records, split_pattern
from latent_ndm.data.module import ShardDataModule, read_shard_info
from latent_ndm.evaluation import fid

_KEY_VALUE = re.compile(r"^([A-Za-z_][A-Za-z0-9_-]*)=(.*)$")


def hydra_style(argv: list[str]) -> list[str]:
    """``key=value`` tokens -> ``--key=value`` (underscores as dashes), so both spellings work."""
    out = []
    for token in argv:
        match = _KEY_VALUE.match(token)
        out.append(f"--{match[1].replace('_', '-')}={match[2]}" if match else token)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m latent_ndm.fid_stats", description=__doc__.split("\n")[0])
    p.add_argument("--shards", type=Path, required=True, help="shard directory (data_tools layout, manifest.json)")
    p.add_argument("--out", type=Path, required=True, help="output directory of fid_stats.npz / fid_stats.json")
    p.add_argument("--splits", default="train,val",
                   help="comma-separated splits that form the reference set (default: %(default)s)")
    p.add_argument("--extractor", default=fid.INCEPTION,
                   help="torch-fidelity feature extractor, a registered name (default: %(default)s)")
    p.add_argument("--layer", default=None, help="feature layer (default: the extractor's FID layer, 2048)")
    p.add_argument("--weights", default=None,
                   help=f"extractor weights file (default for Inception: the torch hub cache, "
                        f"$TORCH_HOME/hub/checkpoints/{fid.INCEPTION_WEIGHTS_FILE})")
    p.add_argument("--batch-size", type=int, default=64, help="images per extractor call (default: %(default)s)")
    p.add_argument("--num-workers", type=int, default=0, help="shard-decoding worker processes (default: %(default)s)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N images (for quick checks)")
    p.add_argument("--register", action="append", default=[], metavar="MODULE:FUNCTION",
                   help="call FUNCTION() of MODULE first, e.g. to register a custom extractor (repeatable)")
    p.add_argument("--force", action="store_true", help="replace existing statistics in OUT")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def split_infos(root: Path, splits: list[str]) -> dict[str, ShardInfo]:
    """The image shards of each split under `root`; missing shards raise a one-sentence error."""
    if not root.is_dir():
        raise FileNotFoundError(f"shard directory {root} does not exist; create shards with "
                                "`python -m data_tools.shard SRC OUT` or `python -m data_tools.synthetic OUT`")
    infos = {split: read_shard_info(split_pattern(root, split)) for split in splits}
    for split, info in infos.items():
        if info.kind != "images":
            raise ValueError(f"{split} shards under {root} hold {info.kind}, but FID statistics need images")
    return infos


def shard_sources(root: Path, infos: dict[str, ShardInfo]) -> dict[str, Any]:
    """Shard file -> sha256 (from the dataset manifest, else hashed now), counts per split, manifest hash."""
    shards: dict[str, str] = {}
    for info in infos.values():
        records = manifest_records(info.manifest) if info.manifest else {}
        for path in info.paths:
            record = records.get(path.name)
            shards[path.name] = record["sha256"] if record and "sha256" in record else sha256_file(path)
    dataset_manifest = manifest_path(root)
    return {"root": str(root), "counts": {s: info.total for s, info in infos.items()}, "shards": shards,
            "manifest_sha256": sha256_file(dataset_manifest) if dataset_manifest.is_file() else None}


def run(args: argparse.Namespace) -> int:
    fid.call_registrations(args.register)
    splits = [s.strip() for s in args.splits.split(",") if s.strip()]
    if not splits:
        raise ValueError("--splits names no split")
    weights = fid.resolve_weights(args.extractor, args.weights)  # before any data is read
    npz, _ = fid.stats_paths(args.out)
    if npz.exists() and not args.force:
        raise ValueError(f"{npz} already exists; pass --force to replace it")
    infos = split_infos(args.shards, splits)
    extractor = fid.load_feature_extractor(args.extractor, args.layer, weights, args.device)
    paths = [p for info in infos.values() for p in info.paths]
    data = ShardDataModule(train_shards=None, test_shards=paths, batch_size=args.batch_size,
                           num_workers=args.num_workers, kind="images", on_error="raise")
    stats = fid.compute_stats(data.test_dataloader(), extractor, batch_size=args.batch_size, limit=args.limit,
                              progress=not args.quiet)
    stats.splits, stats.source = splits, shard_sources(args.shards, infos)
    stats.source.update(weights_file=None if weights is None else str(weights), limit=args.limit)
    written = stats.save(npz)
    print(f"wrote {written} and its manifest: {stats.n} images of {'+'.join(splits)}, {extractor.name} "
          f"layer {extractor.layer}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(hydra_style(sys.argv[1:] if argv is None else list(argv)))
    try:
        return run(args)
    except (FileNotFoundError, ValueError, DataToolError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; nothing was written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
