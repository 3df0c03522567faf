"""The configuration of runs: where the YAML lives, composing it outside a command line, plain resolved copies."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import MissingConfigException
from omegaconf import DictConfig, OmegaConf


def scaled_channels(channels: int, width: float, groups: int) -> int:
    """`width` x `channels`, rounded to the nearest multiple of `groups` (GroupNorm needs it) and at least one group:
    the base channels of F_phi's U-Net relative to the denoiser's (`ndm.F_size.width`, resolver `scaled_channels`)."""
    if not float(width) > 0:
        raise ValueError(f"ndm.F_size.width scales the denoiser's channels and must be > 0, got {width}")
    return int(groups) * max(1, round(float(width) * int(channels) / int(groups)))


if not OmegaConf.has_resolver("scaled_channels"):
    OmegaConf.register_new_resolver("scaled_channels", scaled_channels)

# the package's configs/ (in the repository a link to the top-level configs/ folder; in a wheel, a copy of it)
CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "configs")


# the ConfigStore group of the samplers' settings, which configs/sampler/<name>.yaml extends (runs/sampler_configs.py)
SAMPLER_SCHEMA_GROUP = "sampler_schema"


def register_sampler_schemas() -> None:
    """Store the settings of every sampler class in Hydra's ConfigStore (`sampler_schema/<name>`). This imports the
    samplers, hence torch, so it runs only when a composition needs it (`compose_config`), or before Hydra composes
    a config that no check composed first."""
    from latent_ndm.runs.sampler_configs import register_samplers  # torch: only for a config with a sampler

    register_samplers()


def _needs_sampler_schema(err: MissingConfigException) -> bool:
    return str(getattr(err, "missing_cfg_file", "") or "").startswith(f"{SAMPLER_SCHEMA_GROUP}/")


def _compose(name: str, overrides: Sequence[str]) -> DictConfig:
    if GlobalHydra.instance().is_initialized():
        return compose(name, overrides=list(overrides))
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(name, overrides=list(overrides))


def compose_config(name: str, overrides: Sequence[str] = ()) -> DictConfig:
    """`configs/<name>.yaml` with `overrides`, through Hydra's compose API. Inside a `@hydra.main` job Hydra is
    already initialised on the same `configs/` folder and is reused; elsewhere it is initialised for the call. The
    samplers' settings are registered the first time a composition asks for them (then it is composed again)."""
    try:
        return _compose(name, overrides)
    except MissingConfigException as err:
        if not _needs_sampler_schema(err):
            raise
    register_sampler_schemas()
    return _compose(name, overrides)


VAE_EXPORT_ALIAS = "vae_ckpt"  # the old name of `vae_export`, still read (with a warning)


def _given(cfg: Mapping[str, Any], key: str) -> Any:
    """`cfg[key]` at the top level; None where absent, null or `???`."""
    if key not in cfg.keys() or (isinstance(cfg, DictConfig) and OmegaConf.is_missing(cfg, key)):
        return None
    return cfg[key]


def vae_export_of(cfg: Mapping[str, Any], has_default: bool = False) -> str | None:
    """The VAE export folder a command builds on: `vae_export`, or `vae_ckpt` (its deprecated alias, read with a
    one-line warning); None when neither is given. A `vae_export: ???` with no alias given raises omegaconf's
    MissingMandatoryValue, as reading it would; both given and different is a ValueError, except where the config
    gives `vae_export` a default (`has_default`: stage=ndm, the benchmark), whose value cannot be told from a given
    one: there a given `vae_ckpt` is used."""
    old = _given(cfg, VAE_EXPORT_ALIAS)
    if old is None:
        return None if "vae_export" not in cfg.keys() or cfg["vae_export"] is None else str(cfg["vae_export"])
    new = _given(cfg, "vae_export")
    if new is not None and str(new) != str(old) and not has_default:
        raise ValueError(f"vae_export={new} and vae_ckpt={old} name two VAE exports; give vae_export= alone "
                         "(vae_ckpt= is its deprecated alias)")
    warnings.warn("vae_ckpt= is deprecated: use vae_export=", FutureWarning, stacklevel=1)
    return str(old)



def stored_vae_export(config: Mapping[str, Any]) -> str | None:
    """The VAE export a stored run config (`train_config.yaml`, a checkpoint's config) was trained on: its
    `vae_export`, or the `vae_ckpt` that runs of earlier versions recorded (read without a warning: the file is a
    record, not a command line)."""
    value = config.get("vae_export") or config.get(VAE_EXPORT_ALIAS)
    return None if value is None else str(value)


def resolved(cfg: DictConfig) -> dict[str, Any]:
    """The config as plain, resolved Python containers (what checkpoints and exports store)."""
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


# Keys that do not shape the model, the data or the optimisation: where a run is, its budget (more steps continue it),
# how it is logged, checkpointed and validated, and on what hardware it runs; and knobs whose whole effect is on other
# keys (ndm.F_size sets ndm.transform.net's sizes, which are compared). Everything else must match to resume.
NOT_SHAPING = (
    "name", "run_dir", "run_dir_reuse", "resume", "cpu_threads", "logger", "ddp_timeout_s", "checkpoints",
    "trainer._target_", "trainer.max_steps", "trainer.max_epochs", "trainer.val_check_interval",
    "trainer.check_val_every_n_epoch", "trainer.limit_val_batches", "trainer.num_sanity_val_steps",
    "trainer.log_every_n_steps", "trainer.enable_progress_bar", "trainer.enable_model_summary",
    "trainer.fast_dev_run", "trainer.enable_checkpointing", "trainer.accelerator", "trainer.strategy",
    "trainer.deterministic", "trainer.default_root_dir", "data.num_workers", "data.on_error", "data.read",
    "stage.images", "stage.non_finite", "stage.max_skips", "stage.lpips.backbone_path", "ndm.F_size",
)


def _differences(old: Any, new: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, old value, new value) for every leaf that differs between two plain nested dicts."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for k in sorted(set(old) | set(new), key=str)
                for d in _differences(old.get(k), new.get(k), f"{prefix}{k}.")]
    return [(prefix.rstrip("."), old, new)] if old != new else []


def shaping_differences(stored: dict[str, Any], current: DictConfig) -> list[tuple[str, Any, Any]]:
    """The keys that shape the model, the data or the optimisation and differ between the config a checkpoint was
    trained with (`stored`, resolved) and `current`. `current` is resolved with the stored budget
    (trainer.max_steps), so that values derived from it (a schedule's length) do not count as changes."""
    probe = OmegaConf.create(OmegaConf.to_container(current, resolve=False))
    steps = (stored.get("trainer") or {}).get("max_steps")
    if steps is not None and "trainer" in probe:
        probe.trainer.max_steps = steps
    now = OmegaConf.to_container(probe, resolve=True)
    return [d for d in _differences(stored, now)
            if not any(d[0] == k or d[0].startswith(k + ".") for k in NOT_SHAPING)]
