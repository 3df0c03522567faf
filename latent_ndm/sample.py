"""`python -m latent_ndm.sample ckpt=<run> num=64 sampler=ode|sde|discrete|euler [tol= steps= eta= seed=]`: samples.

Writes `<out>/000000.png ...` (full resolution: the VAE decoder's mean), `<out>/grid.png` and `<out>/samples.json`
(settings, NFE per batch, images/s). Sample i starts from the noise of (seed, i), so the same command gives the same
images; EMA weights by default. Options: configs/sample.yaml.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from data_tools.files import atomic_write_text, refuse_link
from latent_ndm.cli import hydra_command
from latent_ndm.errors import EvaluationError


@dataclass
class SampleResult:
    """Where the images went, and what producing them cost."""

    out_dir: Path
    num: int
    nfe_per_batch: list[int]
    seconds: float
    sampler: str  # `Sampler.describe()`

    @property
    def images_per_s(self) -> float:
        return self.num / max(self.seconds, 1e-9)


SAMPLE_FILES = ("grid.png", "samples.json")


def holds_samples(folder: Path) -> bool:
    return any((folder / name).exists() for name in SAMPLE_FILES)


def output_folder(out: Path | None, default: Path, overwrite: bool) -> Path:
    """Where the samples go. A folder that already holds samples is replaced only with `overwrite`: without it a
    given `out=` is refused, and the default folder (e.g. the demo's grid) is kept and `<default>-2` (or the next
    free number) is used instead."""
    if overwrite:
        return out or default
    if out is not None:
        if holds_samples(out):
            raise EvaluationError(f"out={out} already holds samples (grid.png, samples.json); give overwrite=true to "
                                  "replace them, or another out=")
        return out
    folder, n = default, 1
    while holds_samples(folder):
        n += 1
        folder = default.with_name(f"{default.name}-{n}")
    return folder


def sample(cfg: DictConfig) -> SampleResult:
    """Draw `cfg.num` samples of the run `cfg.ckpt` as configs/sample.yaml says and write them (see the module doc)."""
    import torch

    from latent_ndm.diffusion.samplers import build_sampler
    from latent_ndm.evaluation.generation import batches, generate
    from latent_ndm.progress import progress
    from latent_ndm.runs.hardware import resolve_device
    from latent_ndm.runs.images import image_grid, save_png, to_unit
    from latent_ndm.runs.load import load_run

    if cfg.num < 1 or cfg.batch_size < 1:
        raise EvaluationError(f"need num >= 1 and batch_size >= 1, got num={cfg.num}, batch_size={cfg.batch_size}")
    try:
        spec = build_sampler(OmegaConf.to_container(cfg.sampler, resolve=True))
    except ValueError as err:
        raise EvaluationError(str(err)) from err
    run = load_run(cfg.ckpt, cfg.ema)
    try:
        run.model.prior.check_sampler(spec)
    except ValueError as err:
        raise EvaluationError(str(err)) from err
    device = resolve_device(cfg.device)
    run.to(device)
    tag = spec.describe().replace(" ", "-")
    out_dir = output_folder(Path(cfg.out) if cfg.out else None, run.run_dir / "samples" / f"{tag}-seed{cfg.seed}",
                            bool(cfg.overwrite))
    if not cfg.out:  # inside a run folder someone else may have made: no link planted there is followed
        for folder in (run.run_dir / "samples", out_dir):
            refuse_link(folder, "write samples")
    out_dir.mkdir(parents=True, exist_ok=True)
    images, nfes, seconds = [], [], 0.0
    with progress(total=cfg.num, desc=f"sampling ({spec.describe()})", unit="img", enabled=cfg.progress) as bar:
        for chunk in batches(range(cfg.num), cfg.batch_size):
            out = generate(run, chunk, spec, cfg.seed, device)
            seconds += out.seconds
            nfes.append(out.nfe)
            for i, image in zip(chunk, out.images.cpu(), strict=True):
                save_png(to_unit(image), out_dir / f"{i:06d}.png")
            images.append(out.images.cpu())
            bar.update(len(chunk))
    save_png(image_grid(torch.cat(images)[: cfg.grid_row * cfg.grid_row], cfg.grid_row), out_dir / "grid.png")
    result = SampleResult(out_dir, cfg.num, nfes, seconds, spec.describe())
    info: dict[str, Any] = {"ckpt": str(cfg.ckpt), "weights": run.weights, "sampler": spec.describe(),
                            "settings": OmegaConf.to_container(cfg, resolve=True), "num": cfg.num,
                            "nfe_per_batch": nfes, "seconds": seconds, "images_per_s": result.images_per_s,
                            "device": str(device), "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    atomic_write_text(out_dir / "samples.json", json.dumps(info, indent=2) + "\n")
    return result


def run(cfg: DictConfig) -> SampleResult:
    result = sample(cfg)
    nfe = sum(result.nfe_per_batch) / len(result.nfe_per_batch)
    print(f"{result.num} samples from {cfg.ckpt} ({result.sampler}): NFE {nfe:.0f} per batch, "
          f"{result.images_per_s:.2f} images/s (sampling + decoding)")
    print(f"  images: {result.out_dir} (grid.png, samples.json)")
    return result


main = hydra_command("sample", run)


if __name__ == "__main__":
    main()
