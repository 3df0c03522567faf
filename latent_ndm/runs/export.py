"""The files of a run, for writing and for reading: the one home of the run and export format.

    <run>/checkpoints/last.ckpt   Lightning's whole training state, plus "config" (the resolved run config) and
                                  "vae_config" (`VAE.config()`), both plain dicts
    <run>/export/                 the EMA weights the next stage, `sample`, `evaluate` and `benchmark` load:
        VAE run:  ema.safetensors (the VAE's state_dict) + vae_config.yaml
        NDM run:  ndm.safetensors (denoiser.*, transform.*, noise.*) + ndm_config.yaml (the resolved `ndm` config)
                  + vae/ (the VAE export the NDM was trained with)
        both:     train_config.yaml (the resolved run config) + metrics.yaml (step, train_seconds, the last
                  validation's metrics and its val_step)

Every file is written atomically (`data_tools.files.atomic_write`). Readers raise FileNotFoundError / ValueError
with one sentence naming the file and the command that makes it.

Files are data, never code (docs/SECURITY.md): checkpoints are read with `torch.load(weights_only=True)` (tensors and
plain containers only; anything else is `UnsafeFileError`, one sentence), weights with safetensors, YAML with
`yaml.safe_load`'s rules and a bound on alias expansion, and every config read from a file is checked against the
schema of its kind by `latent_ndm.runs.file_config` (plain values, no interpolation, targets by role) before anything
is built from it; `metrics.yaml` holds numbers (and who measured them, `RECORD_TEXT`).
"""

from __future__ import annotations

import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from data_tools.files import atomic_write, atomic_write_text
from latent_ndm.model import LatentModel, NDMPrior
from latent_ndm.runs.file_config import (
    NDM_SCHEMA,
    RUN_SCHEMA,
    VAE_SCHEMA,
    Schema,
    build_from_file,
    check_config,
    load_yaml,
    read_config_file,
)
from latent_ndm.runs.targets import UnsafeConfigError
from vae import VAE
from vae.protocol import LatentVAE, missing_members

CHECKPOINT_DIR, LAST_CKPT, EXPORT_DIR = "checkpoints", "last.ckpt", "export"
VAE_WEIGHTS, VAE_CONFIG = "ema.safetensors", "vae_config.yaml"
NDM_WEIGHTS, NDM_CONFIG, NDM_VAE_DIR = "ndm.safetensors", "ndm_config.yaml", "vae"
TRAIN_CONFIG, METRICS = "train_config.yaml", "metrics.yaml"
RECORD_TEXT = ("by",)  # the keys of metrics.yaml that hold text (`latent_ndm.export_vae` says who measured)
VAE_COMMAND = "python -m latent_ndm.train stage=vae"


def _write_yaml(path: Path, data: Any) -> None:
    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))


def _write_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    plain = {k: v.detach().cpu().clone().contiguous() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(plain, str(tmp)))


def read_yaml(path: Path) -> dict[str, Any]:
    """A YAML mapping ({} for an empty file); plain YAML only (`file_config.load_yaml`: no Python tags, aliases
    expanding to at most `file_config.NODE_BUDGET` values). Configs others made go through `read_config_file`."""
    data = load_yaml(path) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds a {type(data).__name__}, not a mapping of settings")
    return data


class UnsafeFileError(ValueError):
    """A checkpoint that holds pickled Python objects besides tensors and plain containers: loading it could run
    code, so it is not loaded."""


def unsafe_file(path: str | os.PathLike, err: BaseException) -> UnsafeFileError:
    """The one-sentence refusal of a checkpoint that `torch.load(weights_only=True)` would not unpickle."""
    found = re.search(r"GLOBAL ([\w.]+)", str(err))
    what = f"the Python object {found.group(1)}" if found else "Python objects other than tensors and plain data"
    return UnsafeFileError(f"{path} was not loaded: it holds {what}, which could run code when unpickled; "
                           "latent-ndm reads checkpoints as data only (torch.load weights_only=True), so use a "
                           "checkpoint written by latent-ndm, or a safetensors export")


def load_torch_file(path: str | os.PathLike, map_location: Any = "cpu", mmap: bool = False) -> Any:
    """`torch.load(path, weights_only=True)`: tensors and plain containers only, never code (`UnsafeFileError`)."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        raise unsafe_file(path, err) from err


def load_tensor_file(path: Path, device: str = "cpu") -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; a damaged one is a one-sentence ValueError."""
    try:
        return load_file(str(path), device=device)
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{path} is not a readable safetensors file ({' '.join(str(err).split())[:160]}); "
                         "re-export the run or download it again") from err


# -- the VAE export -------------------------------------------------------------------------------------------
def save_vae(vae: VAE, folder: str | os.PathLike) -> Path:
    """`ema.safetensors` (the state_dict of `vae`: pass the EMA copy) and `vae_config.yaml` into `folder`."""
    folder = Path(folder)
    config = vae.config()
    _write_tensors(folder / VAE_WEIGHTS, vae.state_dict())
    _write_yaml(folder / VAE_CONFIG, config)
    return folder


def vae_weights_file(vae_export: str | os.PathLike) -> Path:
    """The file that holds a VAE checkpoint's weights: `<folder>/ema.safetensors` for an export folder (or its
    `.yaml`), else the file itself (`.safetensors` or a torch.save'd dict)."""
    path = Path(vae_export)
    if path.is_dir():
        return path / VAE_WEIGHTS
    if path.suffix in (".yaml", ".yml"):
        return path.parent / VAE_WEIGHTS
    return path


def load_vae(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> VAE:
    """A VAE export folder (or its `ema.safetensors` / `vae_config.yaml`), or a torch.save'd plain dict
    {"vae_config": config(), "state_dict": state_dict}, in eval mode."""
    path = Path(path)
    is_export = path.is_dir() or not path.suffix or path.suffix in (".safetensors", ".yaml", ".yml")
    if not is_export:
        if not path.is_file():
            raise FileNotFoundError(f"No VAE checkpoint file {path}; create it with `{VAE_COMMAND}`.")
        try:
            ckpt = load_torch_file(path, map_location=map_location)
        except UnsafeFileError:
            raise
        except Exception as err:  # noqa: BLE001 - any unreadable file gets the same one-sentence message
            raise ValueError(f"{path} is not a readable VAE checkpoint ({' '.join(str(err).split())[:160]})") from err
        if not isinstance(ckpt, dict) or not {"vae_config", "state_dict"} <= set(ckpt):
            raise ValueError(f"{path} is not a VAE checkpoint dict with 'vae_config' and 'state_dict'")
        config, state = ckpt["vae_config"], ckpt["state_dict"]
    else:
        folder = path.parent if path.suffix else path
        missing = [name for name in (VAE_WEIGHTS, VAE_CONFIG) if not (folder / name).is_file()]
        if missing:
            raise FileNotFoundError(
                f"No VAE export at {folder}: missing {' and '.join(missing)}; create it with `{VAE_COMMAND}`."
            )
        config = read_config_file(folder / VAE_CONFIG, VAE_SCHEMA)
        state = load_tensor_file(folder / VAE_WEIGHTS, device=str(map_location))
    vae = vae_from_config(config, path)
    try:
        vae.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"the weights of {path} do not fit its VAE config ({str(err).splitlines()[0]})") from err
    return vae.to(map_location).eval()


def vae_from_config(config: Any, source: str | os.PathLike) -> VAE:
    """The VAE of a config read from `source` (a file): `VAE.from_config` of plain constructor arguments, or, when
    the config names a `_target_` (a VAE of your own, `vae.protocol.LatentVAE`), that class built from the rest,
    only if the target is allowed (`latent_ndm.runs.targets`); anything else is a one-sentence ValueError."""
    check_config(config, VAE_SCHEMA, f"the VAE config of {source}")
    if "_target_" in config:
        return external_vae(config, source)
    try:
        return VAE.from_config(config)
    except (TypeError, ValueError, KeyError) as err:
        raise ValueError(f"the VAE config of {source} does not build a VAE ({' '.join(str(err).split())[:160]})"
                         ) from err


def external_vae(config: dict[str, Any], source: str | os.PathLike) -> Any:
    """A bring-your-own VAE from its config (`_target_` and constructor arguments), checked against the contract."""
    try:
        vae = build_from_file(config, VAE_SCHEMA, f"the VAE config of {source}")
    except UnsafeConfigError:
        raise
    except Exception as err:  # noqa: BLE001 - a constructor of someone else's class may raise anything
        raise ValueError(f"the VAE config of {source} does not build its {config['_target_']} "
                         f"({' '.join(str(err).split())[:160]})") from err
    if not (isinstance(vae, LatentVAE) and isinstance(vae, torch.nn.Module)):
        raise ValueError(f"{config['_target_']} (the VAE config of {source}) is not a VAE this toolkit can use: it "
                         f"lacks {', '.join(missing_members(vae)) or 'torch.nn.Module'} (see vae.protocol.LatentVAE)")
    return vae


# -- the NDM export -------------------------------------------------------------------------------------------
def ndm_state(model: LatentModel) -> dict[str, torch.Tensor]:
    """The NDM prior's weights as stored in `ndm.safetensors`: denoiser.*, transform.* and (NFDM) noise.*."""
    prior = model.prior
    if not isinstance(prior, NDMPrior):
        raise ValueError(f"an NDM export needs an NDMPrior, got {type(prior).__name__}")
    parts = {"denoiser": prior.denoiser, "transform": prior.transform}
    if prior.noise is not None:
        parts["noise"] = prior.noise
    return {f"{part}.{k}": v for part, module in parts.items() for k, v in module.state_dict().items()}


def save_ndm(model: LatentModel, folder: str | os.PathLike, ndm_config: dict[str, Any]) -> Path:
    """`vae/` (the VAE export), `ndm.safetensors` and `ndm_config.yaml` into `folder`."""
    folder = Path(folder)
    save_vae(model.vae, folder / NDM_VAE_DIR)
    _write_tensors(folder / NDM_WEIGHTS, ndm_state(model))
    _write_yaml(folder / NDM_CONFIG, ndm_config)
    return folder


def save_run_record(folder: str | os.PathLike, run_config: dict[str, Any], metrics: dict[str, Any]) -> None:
    """`train_config.yaml` and `metrics.yaml` (written after the weights, so they describe them)."""
    folder = Path(folder)
    _write_yaml(folder / TRAIN_CONFIG, run_config)
    _write_yaml(folder / METRICS, metrics)


def read_run_record(folder: str | os.PathLike) -> dict[str, Any]:
    """The `metrics.yaml` that `save_run_record` wrote into an export folder, or {} when there is none; a value that
    is not a number (or null; text under `RECORD_TEXT`) is a one-sentence ValueError naming the file and the key."""
    path = Path(folder) / METRICS
    record = read_yaml(path) if path.is_file() else {}
    for key, value in record.items():
        if value is None or (key in RECORD_TEXT and isinstance(value, str)):
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{path} has {key}: {str(value)[:60]!r}, which is not a number; the file is damaged or "
                             "was not written by latent-ndm: re-export the run, or delete the file")
    return record


# -- reading a run ----------------------------------------------------------------------------------------------
@dataclass
class RunFiles:
    """What a run's export or checkpoint holds, as plain objects: `kind` "ndm" | "vae"; the VAE (weights loaded);
    for an NDM the resolved `ndm` config and the prior's state ({"denoiser.*", "transform.*"}); the run config;
    `weights` "ema" | "raw"; `folder` the export or checkpoint folder."""

    kind: str
    vae: VAE
    config: dict[str, Any]
    ndm_config: dict[str, Any] | None
    ndm_state: dict[str, torch.Tensor] | None
    weights: str
    folder: Path


def find_export(path: Path) -> Path | None:
    """`path` or `path/export`, whichever holds an export (NDM or VAE), else None."""
    for candidate in (path, path / EXPORT_DIR):
        if (candidate / NDM_WEIGHTS).is_file() or (candidate / VAE_CONFIG).is_file():
            return candidate
    return None


def last_checkpoint(run_or_export: Path) -> Path:
    """`<run>/checkpoints/last.ckpt` of a run folder or of its export folder."""
    run = run_or_export.parent if run_or_export.name == EXPORT_DIR else run_or_export
    return run / CHECKPOINT_DIR / LAST_CKPT


def _required_config(path: Path, schema: Schema) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the export at {path.parent} is incomplete; re-export it by "
                                "running the same `python -m latent_ndm.train ...` command again (it resumes)")
    return read_config_file(path, schema)


def read_export(folder: Path) -> RunFiles:
    """The EMA model of an export folder; its configs are checked (`file_config.read_config_file`) before anything
    is built."""
    config = _required_config(folder / TRAIN_CONFIG, RUN_SCHEMA)
    if (folder / NDM_WEIGHTS).is_file():
        ndm_config = _required_config(folder / NDM_CONFIG, NDM_SCHEMA)
        return RunFiles("ndm", load_vae(folder / NDM_VAE_DIR), config, ndm_config,
                        load_tensor_file(folder / NDM_WEIGHTS), "ema", folder)
    return RunFiles("vae", load_vae(folder), config, None, None, "ema", folder)


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The Lightning checkpoint at `path` (tensors memory-mapped), read as data only (`load_torch_file`); raises
    `UnsafeFileError` for one that holds code, and whatever a damaged file raises."""
    checkpoint = load_torch_file(path, mmap=True)
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError("it is not a Lightning checkpoint (no state_dict)")
    return checkpoint


def read_run_checkpoint(path: Path, ema: bool = True) -> RunFiles:
    """The EMA (or, with ema=False, the raw) model of a Lightning checkpoint written by a training stage."""
    try:
        checkpoint = read_checkpoint(path)
    except UnsafeFileError:
        raise
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same one-sentence message
        raise ValueError(f"cannot read the checkpoint {path} ({err}); give another ckpt=") from err
    config, vae_config = checkpoint.get("config"), checkpoint.get("vae_config")
    if not isinstance(config, dict) or not isinstance(vae_config, dict):
        raise ValueError(f"{path} is not a latent-ndm training checkpoint (it lacks the run and VAE configs)")
    check_config(config, RUN_SCHEMA, f"the run config in {path}")
    kind = (config.get("stage") or {}).get("name")
    if kind not in ("vae", "ndm"):
        raise ValueError(f"{path} is not a latent-ndm training checkpoint (its run config has no stage.name)")
    prefix = "ema.module." if ema else ("model." if kind == "ndm" else "vae.")
    state = {k[len(prefix):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
    vae = vae_from_config(vae_config, path)
    try:
        vae.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("vae.")} if kind == "ndm" else state,
                            strict=True)
    except RuntimeError as err:
        raise ValueError(f"the VAE weights of {path} do not fit its VAE config ({str(err).splitlines()[0]})") from err
    prior_state = {k[len("prior."):]: v for k, v in state.items() if k.startswith("prior.")} if kind == "ndm" else None
    return RunFiles(kind, vae.eval(), config, config.get("ndm") if kind == "ndm" else None, prior_state,
                    "ema" if ema else "raw", path.parent)
