"""``python -m latent_ndm.export_vae [vae._target_=...] [out=...]`` (options: configs/export_vae.yaml)

Writes a first stage of your own (any `vae.protocol.LatentVAE`; the example is `vae.pixel_shuffle.PixelShuffleVAE`)
as a VAE export, the folder `stage=ndm` trains a prior on: `ema.safetensors` (its weights), `vae_config.yaml` (its
`config()`, whose `_target_` rebuilds it, allowed or trusted by the user), and `metrics.yaml` with the validation
metrics of `stage=vae` measured on `limit` held-out images: the NELBO with p(z) = N(0, I), the collapse watch, and the
latent scale (std of encoder samples) that it also stores in the weights. docs/BYO_VAE.md walks through it.

`pretrained=<folder>` exports a pretrained `diffusers.AutoencoderKL` (the SD-VAE family) through
`vae.sd_vae.AutoencoderKLVAE` instead: the folder's `config.json` is read as data and its weights from safetensors
only (no code from the folder runs); a hub name is downloaded only with `hub=true`. Before measuring, the adapter's
likelihood scale is fitted on `limit` training images, and the measured latent scale is printed beside the
autoencoder's configured `scaling_factor` (a warning when they differ by more than 20%).
"""

from __future__ import annotations

import json
import os
import warnings
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

    if cfg.get("pretrained"):
        vae = pretrained_vae(str(cfg.pretrained), bool(cfg.get("hub", False)), str(cfg.get("dtype", "float32")))
    else:
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
    limit = None if cfg.limit is None else int(cfg.limit)
    if hasattr(vae, "fit_likelihood"):  # a likelihood with a scale to fit on training images (vae.sd_vae)
        fit_generator = torch.Generator(device=device).manual_seed(int(cfg.seed) + 1)
        vae.fit_likelihood(_first_images(datamodule.train_dataloader(), limit), generator=fit_generator)
    metrics, generator = ValidationMetrics(), torch.Generator(device=device).manual_seed(int(cfg.seed))
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
    if hasattr(vae, "scaling_factor"):  # a pretrained autoencoder's own latent scale, beside the measured one
        record["configured_scaling_factor"] = float(vae.scaling_factor)
    save_run_record(out, OmegaConf.to_container(cfg, resolve=True), record)
    return record


def _first_images(loader: Any, limit: int | None) -> Any:
    """The batches of `loader`, cut to `limit` images in all (all of them when None)."""
    seen = 0
    for x in loader:
        if limit is not None and seen >= limit:
            return
        x = x[: None if limit is None else limit - seen]
        seen += x.shape[0]
        yield x


def read_diffusers_folder(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The config (`config.json`, read as JSON data) and weights (`*.safetensors`, read as tensors) of a local
    diffusers AutoencoderKL folder; nothing in the folder is run."""
    from latent_ndm.runs.export import load_tensor_file

    config_file = folder / "config.json"
    if not config_file.is_file():
        raise TrainingError(f"{folder} holds no config.json: pretrained= takes a diffusers AutoencoderKL folder "
                            "(config.json and diffusion_pytorch_model.safetensors)")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (ValueError, OSError) as err:
        raise TrainingError(f"{config_file} is not readable JSON ({err}); download the folder again") from err
    if not isinstance(config, dict) or config.get("_class_name", "AutoencoderKL") != "AutoencoderKL":
        found = config.get("_class_name") if isinstance(config, dict) else type(config).__name__
        raise TrainingError(f"{config_file} describes a {found}, not an AutoencoderKL; give the folder of a "
                            "diffusers AutoencoderKL (for a pipeline, its vae/ subfolder)")
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        raise TrainingError(f"{folder} holds no .safetensors weights; latent-ndm loads weights from safetensors only "
                            "(not .bin pickles): download the safetensors variant")
    preferred = [w for w in weights if w.name == "diffusion_pytorch_model.safetensors"]
    try:
        return config, load_tensor_file((preferred or weights)[0])
    except ValueError as err:
        raise TrainingError(str(err)) from err


def pretrained_vae(name: str, hub: bool, dtype: str) -> Any:
    """The `vae.sd_vae.AutoencoderKLVAE` of a local diffusers AutoencoderKL folder, or of a hub name when `hub` is
    true (downloaded once into the Hugging Face cache: config.json and safetensors only)."""
    from vae.sd_vae import AutoencoderKLVAE

    folder = Path(name).expanduser()
    if not folder.is_dir():
        if not hub:
            raise TrainingError(f"pretrained={name} is not a folder; give a local diffusers AutoencoderKL folder, or "
                                "add hub=true to download that name from the Hugging Face hub")
        folder = _download(name)
    config, state = read_diffusers_folder(folder)
    try:
        vae = AutoencoderKLVAE(config, dtype=dtype)
    except ImportError as err:
        raise TrainingError(str(err)) from err
    except (TypeError, ValueError) as err:
        raise TrainingError(f"{folder}/config.json does not build an AutoencoderKL ({err})") from err
    try:
        vae.autoencoder.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise TrainingError(f"the weights in {folder} do not fit its config.json ({str(err).splitlines()[0]})"
                            ) from err
    return vae


def _download(name: str) -> Path:
    """A hub AutoencoderKL's config.json and safetensors weights, fetched into the Hugging Face cache."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError as err:
        raise TrainingError("hub=true needs huggingface_hub: pip install 'latent-ndm[sdvae]'") from err
    try:
        return Path(snapshot_download(name, allow_patterns=["config.json", "*.safetensors"],
                                      token=os.environ.get("HF_TOKEN")))
    except Exception as err:  # noqa: BLE001 - network and hub errors of every kind get one sentence
        raise TrainingError(f"could not download {name} from the Hugging Face hub "
                            f"({' '.join(str(err).split())[:160]}); download it on a machine with network and give "
                            "its folder as pretrained=") from err


def run(cfg: DictConfig) -> dict[str, Any]:
    m = export(cfg)
    what = f"the AutoencoderKL of {cfg.pretrained}" if cfg.get("pretrained") else cfg.vae._target_
    print(f"wrote {cfg.out}: {what}, NELBO {m['nelbo_bpd']:.4f} bits/dim with p(z) = N(0, I) on "
          f"{m['count']} held-out images, latent scale {m['latent_scale']:.4f}")
    if "configured_scaling_factor" in m:
        from vae.sd_vae import scale_check

        line, far = scale_check(m["latent_scale"], m["configured_scaling_factor"])
        print(f"  {line}")
        if far:
            warnings.warn(f"{line}: more than 20% apart, so this data's latents are not scaled as the autoencoder "
                          "expects (another resolution or domain); the export uses the measured one", stacklevel=1)
    print(f"  train a prior on it: python -m latent_ndm.train stage=ndm vae_export={cfg.out} name=<name>")
    return m


main = hydra_command("export_vae", run)


if __name__ == "__main__":
    main()
