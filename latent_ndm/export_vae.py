"""``python -m latent_ndm.export_vae [vae._target_=...] [out=...]`` (options: configs/export_vae.yaml)

Writes a first stage of your own (any `vae.protocol.LatentVAE`; the example is `vae.pixel_shuffle.PixelShuffleVAE`)
as a VAE export, the folder `stage=ndm` trains a prior on: `ema.safetensors` (its weights), `vae_config.yaml` (its
`config()`, whose `_target_` rebuilds it, allowed or trusted by the user), and `metrics.yaml` with the validation
metrics of `stage=vae` measured on `limit` held-out images: the NELBO with p(z) = N(0, I), the collapse watch, and the
latent scale (std of encoder samples) that it also stores in the weights. docs/BYO_VAE.md walks through it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from latent_ndm.cli import hydra_command
from latent_ndm.errors import TrainingError


def export(cfg: DictConfig) -> dict[str, Any]:
    """Build, measure and write the export; returns its metrics."""
    import torch

    from latent_ndm.runs.export import external_vae, save_run_record, save_vae
    from latent_ndm.runs.hardware import resolve_device
    from latent_ndm.training.builders import build_datamodule
    from latent_ndm.training.vae_loss import ValidationMetrics

    config = OmegaConf.to_container(cfg.vae, resolve=True)
    if "_target_" not in config:
        raise TrainingError("vae needs a _target_ naming the class to build, e.g. "
                            "vae._target_=vae.pixel_shuffle.PixelShuffleVAE")
    try:
        vae = external_vae(config, "the command line's vae")
    except ValueError as err:
        raise TrainingError(str(err)) from err
    device = resolve_device(cfg.device)
    datamodule = build_datamodule(cfg.data)
    datamodule.setup("validate")
    vae = vae.to(device).eval()
    metrics, generator = ValidationMetrics(), torch.Generator(device=device).manual_seed(int(cfg.seed))
    limit = None if cfg.limit is None else int(cfg.limit)
    seen = 0
    for x in datamodule.val_dataloader():
        if limit is not None and seen >= limit:
            break
        x = x[: None if limit is None else limit - seen].to(device)
        metrics.update(vae, x, generator=generator)
        seen += x.shape[0]
    if not seen:
        raise TrainingError(f"the data's validation split holds no images ({cfg.data.get('root')}); check data=")
    values = metrics.compute()
    vae.set_latent_scale(values["latent_scale"])
    out = Path(cfg.out)
    save_vae(vae.cpu(), out)
    record = {"step": 0, "count": seen, "by": "latent_ndm.export_vae", **values}
    save_run_record(out, OmegaConf.to_container(cfg, resolve=True), record)
    return record


def run(cfg: DictConfig) -> dict[str, Any]:
    m = export(cfg)
    print(f"wrote {cfg.out}: {cfg.vae._target_}, NELBO {m['nelbo_bpd']:.4f} bits/dim with p(z) = N(0, I) on "
          f"{m['count']} held-out images, latent scale {m['latent_scale']:.4f}")
    print(f"  train a prior on it: python -m latent_ndm.train stage=ndm vae_export={cfg.out} name=<name>")
    return m


main = hydra_command("export_vae", run)


if __name__ == "__main__":
    main()
