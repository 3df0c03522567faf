"""``python -m data_tools.shard SRC OUT``: an image folder or .zip to webdataset shards.

Example (CelebA-HQ-256, 27,000 / 3,000 split as in LSGM / NVAE)::

    python -m data_tools.shard ~/celeba_hq_256 data/celebahq256 --name celebahq256 --resolution 256

Rerunning the same command after an interruption resumes: complete, verified shards are kept.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from data_tools.errors import DataToolError, run_cli
from data_tools.images_to_shards import ShardOptions, default_workers, shard_images, summary
from data_tools.sources import open_source
from data_tools.split import DEFAULT_SPLIT


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m data_tools.shard",
        description="Turn an image folder or .zip into webdataset shards plus manifest.json; rerun to resume.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("src", type=Path, help="folder (searched recursively) or .zip of JPEG/PNG images")
    p.add_argument("out", type=Path, help="output directory (created; must be empty or hold this dataset)")
    p.add_argument("--name", default=None, help="dataset name, the shard file prefix (default: the source's name)")
    p.add_argument("--resolution", type=int, default=256, help="output side length in pixels")
    p.add_argument("--shard-size", type=int, default=1000, help="images per shard")
    p.add_argument("--split", default=DEFAULT_SPLIT, help="NAME=COUNT or NAME=FRACTION, comma-separated")
    p.add_argument("--seed", type=int, default=0, help="seed of the split permutation")
    p.add_argument("--min-size", type=int, default=None,
                   help="skip images whose shorter side is smaller; None means resolution // 2")
    p.add_argument("--workers", type=int, default=default_workers(), help="parallel processes (<= 1: none)")
    p.add_argument("--strict", action="store_true", help="stop at the first unusable file instead of skipping")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def dataset_name(src: Path) -> str:
    """The default dataset name: the source folder's (or zip's) name, with other characters than letters, digits,
    '_' and '-' replaced by '_'."""
    name = re.sub(r"[^A-Za-z0-9_-]", "_", src.resolve().stem if src.suffix == ".zip" else src.resolve().name)
    return name.strip("_-") or "images"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        options = ShardOptions(name=args.name or dataset_name(args.src), resolution=args.resolution,
                               shard_size=args.shard_size, split=args.split, seed=args.seed, min_size=args.min_size,
                               workers=args.workers, strict=args.strict, progress=not args.quiet)
        source = open_source(args.src)
        if args.src.is_dir() and args.out.resolve().is_relative_to(args.src.resolve()):
            raise DataToolError(f"output {args.out} must not lie inside the source folder {args.src}")
        print(summary(shard_images(source, args.out, options)))
        return 0

    return run_cli(body)


if __name__ == "__main__":
    raise SystemExit(main())
