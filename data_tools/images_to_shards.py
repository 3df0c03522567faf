"""The sharding run: split, process in parallel, write atomic shards, journal progress, resume.

`shard_images(source, out_dir, options)` is the one path used by the CLI (`data_tools.shard`) and by the
synthetic dataset. The order of samples and the split depend only on the sorted file list and the seed,
and every shard's bytes are deterministic, so a killed run that is rerun produces exactly the shards of an
uninterrupted run: complete shards whose sha256 matches the manifest are kept, the rest is redone.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from data_tools.errors import DataToolError
from data_tools.files import remove_temporaries
from data_tools.manifest import new_manifest, prepare_out_dir, shard_is_intact, write_manifest
from data_tools.sources import ImageSource
from data_tools.split import DEFAULT_SPLIT, assign_split, parse_split, resolve_split
from data_tools.workers import Outcome, process_images
from data_tools.writer import AtomicShardWriter, ShardRecord, format_key, shard_filename


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


@dataclass
class ShardOptions:
    """How to shard. `min_size` defaults to half the resolution (no more than 2x upsampling)."""

    name: str
    resolution: int
    shard_size: int = 1000
    split: str = DEFAULT_SPLIT
    seed: int = 0
    min_size: int | None = None
    workers: int = field(default_factory=default_workers)
    strict: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").replace("-", "").isalnum():
            raise DataToolError(f"dataset name {self.name!r} must be letters, digits, '-' or '_'")
        if self.resolution < 1 or self.shard_size < 1:
            raise DataToolError("resolution and shard size must be positive integers")
        if self.min_size is None:
            self.min_size = max(1, self.resolution // 2)


@dataclass
class ShardResult:
    """What a run produced: counts per split, number of skipped files, and how many shards were reused."""

    out_dir: Path
    counts: dict[str, int]
    skipped: int
    reused_shards: int
    manifest: dict[str, Any]


def shard_images(source: ImageSource, out_dir: Path, options: ShardOptions) -> ShardResult:
    """Write the images of `source` as ``{name}-{split}-{000000}.tar`` shards plus ``manifest.json``."""
    out_dir = Path(out_dir)
    listing = source.listing()
    if not listing.names:
        raise DataToolError(f"source {source.describe()['path']} holds no JPEG/PNG files")
    if options.strict and listing.ignored:
        raise DataToolError(f"{listing.ignored[0].file}: {listing.ignored[0].reason} (--strict)")
    counts = resolve_split(parse_split(options.split), len(listing.names))
    config = {"resolution": options.resolution, "shard_size": options.shard_size, "split": counts,
              "split_seed": options.seed, "min_size": options.min_size, "source_fingerprint": listing.fingerprint}
    manifest = prepare_out_dir(out_dir, "images", options.name, config)
    remove_temporaries(out_dir)
    if manifest is None:
        manifest = new_manifest("images", options.name, config)
        manifest["source"] = {**source.describe(), "n_files": len(listing.names) + len(listing.ignored)}
        manifest["skipped"] = [{"file": s.file, "reason": s.reason, "split": None, "position": None}
                               for s in listing.ignored]
        write_manifest(out_dir, manifest)
    manifest["complete"] = False
    reused = 0
    for split, indices in assign_split(len(listing.names), counts, options.seed).items():
        run = _SplitRun(source, listing.names, out_dir, manifest, split, options)
        reused += run.run(indices, key_width=max(6, len(str(max(counts.values())))))
    empty = [s for s, state in manifest["splits"].items() if state["count"] == 0 and counts[s] > 0]
    if empty:
        raise DataToolError(f"split {empty[0]!r} has no usable image; see 'skipped' in {out_dir}/manifest.json")
    order = {split: i for i, split in enumerate(counts)}
    manifest["skipped"].sort(key=lambda s: (-1, -1) if s["split"] is None else (order[s["split"]], s["position"]))
    manifest["complete"] = True
    write_manifest(out_dir, manifest)
    return ShardResult(out_dir, {s: v["count"] for s, v in manifest["splits"].items()},
                       len(manifest["skipped"]), reused, manifest)


class _SplitRun:
    """Writes (or resumes) the shards of one split and journals each completed shard in the manifest."""

    def __init__(self, source: ImageSource, names: list[str], out_dir: Path, manifest: dict[str, Any],
                 split: str, options: ShardOptions) -> None:
        self.source, self.names, self.out_dir = source, names, out_dir
        self.manifest, self.split, self.options = manifest, split, options
        self.state = manifest["splits"].setdefault(split, {"complete": False, "count": 0, "shards": []})

    def _resume_point(self) -> tuple[int, int]:
        """Keep the verified prefix of complete shards; return (number kept, position to resume from)."""
        shards = self.state["shards"]
        kept = 0
        while kept < len(shards) and shard_is_intact(self.out_dir, shards[kept]):
            kept += 1
        if kept < len(shards):
            self.state["complete"] = False
        self.state["shards"] = shards[:kept]
        self.state["count"] = sum(r["count"] for r in shards[:kept])
        return kept, (shards[kept - 1]["end_position"] if kept else 0)

    def _drop_stale(self, kept: int, start: int) -> None:
        """Forget skips from the part being redone and delete this split's shards beyond the kept prefix."""
        self.manifest["skipped"] = [s for s in self.manifest["skipped"]
                                    if s["split"] != self.split or s["position"] < start]
        for path in self.out_dir.glob(f"{self.options.name}-{self.split}-*.tar"):
            if path.name >= shard_filename(self.options.name, self.split, kept):
                path.unlink()

    def _commit(self, record: ShardRecord) -> None:
        self.state["shards"].append(record.to_dict())
        self.state["count"] = sum(r["count"] for r in self.state["shards"])
        write_manifest(self.out_dir, self.manifest)

    def run(self, indices: list[int], key_width: int) -> int:
        """Write this split's remaining shards; return the number of complete shards reused."""
        kept, start = self._resume_point()
        if self.state["complete"]:
            return kept
        self._drop_stale(kept, start)
        write_manifest(self.out_dir, self.manifest)
        jobs = list(enumerate(indices))[start:]
        written = self.state["count"]
        opts = self.options
        outcomes = process_images(self.source, self.names, jobs, opts.resolution, opts.min_size, opts.workers)
        bar = tqdm(total=len(indices), initial=start, desc=f"{opts.name}/{self.split}", unit="img",
                   disable=not opts.progress, smoothing=0.1)
        with bar, AtomicShardWriter(self.out_dir, opts.name, self.split, opts.shard_size,
                                    start_shard=kept, on_shard=self._commit) as writer:
            for outcome in outcomes:
                if outcome.png is None:
                    self._skip(outcome)
                else:
                    writer.write(self._sample(outcome, format_key(written, key_width)), outcome.position)
                    written += 1
                bar.update(1)
        self.state["complete"] = True
        write_manifest(self.out_dir, self.manifest)
        return kept

    def _skip(self, outcome: Outcome) -> None:
        if self.options.strict:
            raise DataToolError(f"{outcome.file}: {outcome.reason} (--strict)")
        self.manifest["skipped"].append({"file": outcome.file, "reason": outcome.reason,
                                         "split": self.split, "position": outcome.position})

    @staticmethod
    def _sample(outcome: Outcome, key: str) -> dict[str, Any]:
        meta = json.dumps({"file": outcome.file}, sort_keys=True).encode("utf-8")
        return {"__key__": key, "png": outcome.png, "json": meta}


def summary(result: ShardResult) -> str:
    """One line per split plus skipped/reused counts, for the CLIs."""
    lines = [f"{split}: {count} images in {len(result.manifest['splits'][split]['shards'])} shards"
             for split, count in result.counts.items()]
    lines.append(f"skipped: {result.skipped} files (reasons in {result.out_dir}/manifest.json)")
    total = sum(len(state["shards"]) for state in result.manifest["splits"].values())
    if result.reused_shards == total:
        lines.append(f"already complete: all {total} shards verified, nothing rewritten")
    elif result.reused_shards:
        lines.append(f"resumed: reused {result.reused_shards} complete, verified shards")
    return "\n".join(lines)

