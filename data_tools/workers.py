"""Parallel per-image processing for the sharder: ordered results from a process pool (or in-process).

Kept free of webdataset/torch imports so pool workers start quickly.
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from data_tools.imageproc import UnusableImage, prepare_image
from data_tools.sources import ImageSource

_STATE: dict[str, Any] = {}


@dataclass
class Outcome:
    """The result for one file: PNG bytes, or the reason it was skipped (exactly one is set)."""

    position: int
    file: str
    png: bytes | None = None
    reason: str | None = None


def _init(source: ImageSource, names: list[str], resolution: int, min_size: int) -> None:
    _STATE.update(source=source, names=names, resolution=resolution, min_size=min_size)


def _process_chunk(chunk: Sequence[tuple[int, int]]) -> list[Outcome]:
    """Load and prepare the files of `chunk`, a list of (position, index into the sorted file list)."""
    source, names = _STATE["source"], _STATE["names"]
    loaded = source.load([index for _, index in chunk])
    outcomes = []
    for (position, index), img in zip(chunk, loaded, strict=True):
        try:
            if isinstance(img, UnusableImage):
                raise img
            png = prepare_image(img, _STATE["resolution"], _STATE["min_size"])
            outcomes.append(Outcome(position, names[index], png=png))
        except UnusableImage as err:
            outcomes.append(Outcome(position, names[index], reason=str(err)))
    return outcomes


def _mp_context() -> mp.context.BaseContext:
    """Fork where available (workers only run PIL/numpy, and fork starts in milliseconds), else spawn."""
    methods = mp.get_all_start_methods()
    return mp.get_context("fork" if "fork" in methods else "spawn")


def process_images(
    source: ImageSource,
    names: list[str],
    jobs: list[tuple[int, int]],
    resolution: int,
    min_size: int,
    workers: int,
    chunk_size: int = 16,
) -> Iterator[Outcome]:
    """Yield one `Outcome` per job, in job order; `workers` <= 1 processes in this process."""
    chunks = [jobs[i:i + chunk_size] for i in range(0, len(jobs), chunk_size)]
    init_args = (source, names, resolution, min_size)
    if workers <= 1:
        _init(*init_args)
        try:
            for chunk in chunks:
                yield from _process_chunk(chunk)
        finally:
            _STATE.clear()
        return
    with _mp_context().Pool(workers, initializer=_init, initargs=init_args) as pool:
        for outcomes in pool.imap(_process_chunk, chunks):
            yield from outcomes
