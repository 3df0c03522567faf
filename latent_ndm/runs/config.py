"""The configuration of runs: where the YAML lives, composing it outside a command line, plain resolved copies."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "configs")


def compose_config(name: str, overrides: Sequence[str] = ()) -> DictConfig:
    """`configs/<name>.yaml` with `overrides`, through Hydra's compose API. Inside a `@hydra.main` job Hydra is
    already initialised on the same `configs/` folder and is reused; elsewhere it is initialised for the call."""
    if GlobalHydra.instance().is_initialized():
        return compose(name, overrides=list(overrides))
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(name, overrides=list(overrides))


def resolved(cfg: DictConfig) -> dict[str, Any]:
    """The config as plain, resolved Python containers (what checkpoints and exports store)."""
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
