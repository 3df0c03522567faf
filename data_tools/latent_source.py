"""Which VAE a set of latent shards was encoded with: the record `data_tools.encode` writes into the manifest and
the check `stage=ndm` makes before training on the shards.

The record (``manifest["config"]["vae"]``) is ``{"path", "weights_file", "sha256", "latent_scale", "bits",
"latent_shape", "image_resolution"}``; two VAEs are the same when the sha256 of their weights files and their
latent scales agree (the path may differ). No torch here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from data_tools.errors import DataToolError
from data_tools.fsutil import sha256_file

WEIGHTS_NAME = "ema.safetensors"  # the weights file of a VAE export folder (vae.model.WEIGHTS_NAME)
ENCODE_COMMAND = "python -m data_tools.encode vae_ckpt=<VAE export> shards=<image shards>"


def vae_weights_file(vae_ckpt: str | Path) -> Path:
    """The file holding a VAE checkpoint's weights: ``<folder>/ema.safetensors`` for an export folder (or its
    ``.yaml``), else the file itself (``.safetensors`` or a torch.save'd dict)."""
    path = Path(vae_ckpt)
    if path.is_dir():
        return path / WEIGHTS_NAME
    if path.suffix in (".yaml", ".yml"):
        return path.parent / WEIGHTS_NAME
    return path


def vae_record(vae_ckpt: str | Path, latent_scale: float, bits: int, latent_shape: tuple[int, ...],
               image_resolution: int) -> dict[str, Any]:
    """What the manifest of latent shards stores about the VAE that encoded them."""
    weights = vae_weights_file(vae_ckpt)
    if not weights.is_file():
        raise DataToolError(f"no VAE weights file {weights}; give vae_ckpt=<a VAE export folder>")
    return {"path": str(vae_ckpt), "weights_file": weights.name, "sha256": sha256_file(weights),
            "latent_scale": float(latent_scale), "bits": int(bits), "latent_shape": [int(n) for n in latent_shape],
            "image_resolution": int(image_resolution)}


def stored_vae_record(manifest: dict[str, Any] | None, where: str) -> dict[str, Any]:
    """The VAE record of a complete latent-shard manifest; one-sentence errors otherwise."""
    if manifest is None or manifest.get("kind") != "latents":
        raise DataToolError(f"{where} holds no latent-shard manifest; create one with `{ENCODE_COMMAND}`")
    if not manifest.get("complete"):
        raise DataToolError(f"the latent shards in {where} are incomplete (an interrupted encode?); rerun "
                            f"`{ENCODE_COMMAND}`")
    splits = manifest.get("splits", {})
    if any(not splits.get(s, {}).get("complete") for s in manifest.get("config", {}).get("encoded_splits", [])):
        raise DataToolError(f"the latent shards in {where} are incomplete (an interrupted encode?); rerun "
                            f"`{ENCODE_COMMAND}`")
    record = manifest.get("config", {}).get("vae")
    if not isinstance(record, dict) or not {"sha256", "latent_scale"} <= set(record):
        raise DataToolError(f"the latent shards in {where} do not say which VAE encoded them; re-encode them with "
                            f"`{ENCODE_COMMAND}`")
    return record


def check_same_vae(stored: dict[str, Any], vae_ckpt: str | Path, latent_scale: float, where: str) -> None:
    """Refuse latents (whose manifest recorded `stored`) unless `vae_ckpt` has the same weights and latent scale."""
    weights = vae_weights_file(vae_ckpt)
    sha = sha256_file(weights) if weights.is_file() else "(no weights file)"
    if sha == stored["sha256"] and float(latent_scale) == float(stored["latent_scale"]):
        return
    raise DataToolError(
        f"the latent shards in {where} were encoded with the VAE {stored.get('path', '?')} (sha256 "
        f"{stored['sha256'][:12]}, latent scale {stored['latent_scale']:.6g}), not with vae_ckpt={vae_ckpt} (sha256 "
        f"{sha[:12]}, latent scale {float(latent_scale):.6g}); give the VAE they were encoded with, or re-encode "
        f"them with `python -m data_tools.encode vae_ckpt={vae_ckpt} shards=<image shards>`"
    )
