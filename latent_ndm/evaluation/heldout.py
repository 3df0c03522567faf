"""What every metric reads: the held-out images split across processes, their per-batch noise, a configured sampler,
and a synchronised clock."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from data_tools.errors import DataToolError
from data_tools.http_stream import ReadOptions
from data_tools.shard_index import split_shards
from latent_ndm.data.module import ShardDataModule
from latent_ndm.diffusion.samplers import Sampler, build_sampler
from latent_ndm.errors import EvaluationError
from latent_ndm.evaluation.processes import Processes
from latent_ndm.progress import progress
from latent_ndm.runs.file_config import DATA_SCHEMA, build_from_file
from latent_ndm.runs.load import LoadedRun


def configured_sampler(settings: Any, where: str, **defaults: Any) -> Sampler:
    """The sampler of a config mapping (configs/sampler/ or a partial one), `defaults` filling settings it does not
    give; a bad one is one EvaluationError naming `where`."""
    settings = OmegaConf.to_container(settings, resolve=True) if isinstance(settings, DictConfig) else dict(settings)
    try:
        return build_sampler({**defaults, **settings})
    except (ValueError, TypeError) as err:
        raise EvaluationError(f"{where}: {err}") from err


def heldout_images(run: LoadedRun, split: str, shards: str | None, batch_size: int | None) -> Any:
    """A loader of the `split` images (of `shards`, else of the run's own data config), `batch_size` per batch (None:
    the run's, which with seed 0 reproduces its validation numbers); each image is read by exactly one process."""
    read = ReadOptions(**dict(run.config["data"].get("read") or {}))
    try:
        if shards is not None:
            spec: Any = split_shards(shards, split, read)
        else:
            data = build_from_file(run.config["data"], DATA_SCHEMA, f"the data config of {run.source}")
            spec = data.specs.get(split)
            if spec is None:
                raise EvaluationError(f"the run's data config has no {split!r} split; give shards=<image shard "
                                      "folder>")
        batch_size = batch_size or int(run.config["data"]["batch_size"])
        module = ShardDataModule(train_shards=None, test_shards=spec, batch_size=batch_size, kind="images",
                                 resolution=run.resolution, on_error="raise", read=read)
        module.setup("test")
    except (ValueError, DataToolError) as err:
        raise EvaluationError(str(err)) from err
    return module.test_dataloader()


def limited(loader: Any, limit: int | None, procs: Processes, desc: str, show: bool
            ) -> Iterator[tuple[int, torch.Tensor]]:
    """(batch index, images) with at most this process's share of `limit` images (progress on rank 0: a bar, or
    timed lines in a log)."""
    def part(n: int | None) -> int | None:
        return None if n is None else n * (procs.rank + 1) // procs.world - n * procs.rank // procs.world

    share, seen = part(limit), 0
    known = [n for n in (share, part(getattr(getattr(loader, "dataset", None), "total", None))) if n is not None]
    with progress(total=min(known, default=None), desc=desc, unit="img", enabled=show and procs.is_main) as bar:
        for batch_idx, x in enumerate(loader):
            if share is not None:
                if seen >= share:
                    return
                x = x[: share - seen]
            seen += x.shape[0]
            yield batch_idx, x.to(procs.device)
            bar.update(x.shape[0])


def batch_generator(seed: int, batch_idx: int, device: torch.device) -> torch.Generator:
    """The noise of held-out batch `batch_idx`: seed 0 gives the training stages' validation noise."""
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + batch_idx)


def timed(procs: Processes) -> float:
    """Seconds on a clock read after the device's pending work finished."""
    if procs.device.type == "cuda":
        torch.cuda.synchronize(procs.device)
    return time.perf_counter()


def num_dims(run: LoadedRun) -> int:
    """Pixels times channels of the run's images: the dimensions bits/dim divides by."""
    return int(run.model.vae.image_channels) * run.resolution**2


def heldout_sample(run: LoadedRun, procs: Processes, cfg: DictConfig, num: int) -> torch.Tensor:
    """The first `num` held-out images of `cfg.split` (fewer if the split has fewer), on the CPU, quantised as the
    VAE models them."""
    loader = heldout_images(run, cfg.split, cfg.shards, cfg.batch_size)
    taken = [x.cpu() for _, x in limited(loader, num, procs, "held-out images", False)]
    if not taken:
        raise EvaluationError(f"the {cfg.split!r} split has no images to compare samples with")
    return run.model.vae.quantize(torch.cat(taken).float())
