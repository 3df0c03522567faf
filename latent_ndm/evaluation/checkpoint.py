"""Load a trained run for sampling and evaluation: an NDM run (VAE + NDM prior) or a VAE run (N(0, I) prior).

`ckpt` may be a run folder (`runs/ndm/default`), its `export/` folder, or a Lightning `.ckpt` file. Exports hold
EMA weights only; `ema=False` reads the raw weights from the run's `checkpoints/last.ckpt`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from omegaconf import OmegaConf
from safetensors.torch import load_file

from latent_ndm.evaluation.priors import NDMPrior, Prior, StandardNormalPrior
from latent_ndm.training.errors import TrainingError
from latent_ndm.training.export import TRAIN_CONFIG_NAME
from latent_ndm.training.ndm_callbacks import NDM_CONFIG_NAME, NDM_WEIGHTS_NAME
from vae import VAE

TRAIN_HINT = "train one with `python -m latent_ndm.train stage=ndm` (or stage=vae)"


class EvaluationError(TrainingError):
    """A user-facing error of `sample` / `evaluate` / `benchmark` (one sentence: the cause and the fix)."""


@dataclass
class LoadedRun:
    """A model ready to evaluate: the VAE, its prior over latents, where results go, and the run's config.

    kind: "ndm" or "vae"; weights: "ema" or "raw"; out_dir: the folder of the checkpoint (results go beside it);
    config: the resolved training config (plain dict; `data` says which held-out set the run used).
    """

    kind: str
    vae: VAE
    prior: Prior
    out_dir: Path
    config: dict[str, Any]
    weights: str
    source: Path

    @property
    def run_dir(self) -> Path:
        """The run folder (the parent of export/ or checkpoints/)."""
        return self.out_dir.parent if self.out_dir.name in ("export", "checkpoints") else self.out_dir

    @property
    def resolution(self) -> int:
        return int(self.config["data"]["resolution"])

    def to(self, device: torch.device | str) -> LoadedRun:
        self.vae.to(device)
        self.prior.to(device)
        return self


def objective_at(time_cfg: dict[str, Any], t_eps: float) -> Any:
    """The NDM objective of a saved `ndm.time` config with every `t_eps` in it replaced by `t_eps`."""
    from hydra.utils import instantiate

    def replace(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: (float(t_eps) if k == "t_eps" else replace(v)) for k, v in node.items()}
        return node

    return instantiate(replace(copy.deepcopy(time_cfg)), _convert_="all")


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise EvaluationError(f"{path} is missing: the export at {path.parent} is incomplete; re-export it by "
                              "running the same `python -m latent_ndm.train ...` command again (it resumes)")
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def build_ndm_prior(ndm_cfg: dict[str, Any], vae: VAE, state: dict[str, torch.Tensor] | None = None) -> NDMPrior:
    """The NDM prior of a saved `ndm` config, with `state` ({"denoiser.*", "transform.*"}) loaded when given."""
    from hydra.utils import instantiate

    from latent_ndm.training.ndm_stage import build_networks

    n = OmegaConf.create(ndm_cfg)
    channels = int(n.latent.channels)
    denoiser, transform = build_networks(n, channels)
    if state is not None:
        for part, module in (("denoiser", denoiser), ("transform", transform)):
            prefix = f"{part}."
            sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            try:
                module.load_state_dict(sub, strict=True)
            except RuntimeError as err:
                raise EvaluationError(f"the {part} weights do not fit its config ({str(err).splitlines()[0]}); "
                                      "the checkpoint and its ndm_config.yaml come from different runs") from err
    shape = (channels, int(n.latent.resolution), int(n.latent.resolution))
    eval_t_eps = float(n.get("eval_t_eps", n.t_eps))
    objective = objective_at(ndm_cfg["time"], eval_t_eps)
    return NDMPrior(denoiser, transform, instantiate(n.schedule), objective, vae.latent_scale, shape,
                    t_eps=float(n.t_eps), eval_t_eps=eval_t_eps)


def _export_dir(path: Path) -> Path | None:
    for candidate in (path, path / "export"):
        if (candidate / NDM_WEIGHTS_NAME).is_file() or (candidate / "vae_config.yaml").is_file():
            return candidate
    return None


def load_run(ckpt: str | Path, ema: bool = True) -> LoadedRun:
    """The model of `ckpt` (a run folder, an export folder or a `.ckpt` file), on the CPU, in eval mode."""
    path = Path(ckpt)
    if not path.exists():
        raise EvaluationError(f"no checkpoint at {path}: {TRAIN_HINT}, then give ckpt=<its run folder>")
    if path.is_file():
        return _load_lightning(path, ema)
    export = _export_dir(path)
    if not ema:
        last = (path.parent if export == path else path) / "checkpoints" / "last.ckpt"
        if not last.is_file():
            raise EvaluationError(f"ema=false needs the run's raw weights in {last}, which does not exist; "
                                  "use ema=true (the export) or give ckpt=<a .ckpt file>")
        return _load_lightning(last, ema)
    if export is None:
        raise EvaluationError(f"{path} holds no export (ndm.safetensors or vae_config.yaml, directly or in "
                              f"export/): {TRAIN_HINT}, or give ckpt=<a run folder>")
    config = _read_yaml(export / TRAIN_CONFIG_NAME)
    if (export / NDM_WEIGHTS_NAME).is_file():
        vae = VAE.from_checkpoint(export / "vae")
        prior = build_ndm_prior(_read_yaml(export / NDM_CONFIG_NAME), vae, load_file(str(export / NDM_WEIGHTS_NAME)))
        kind = "ndm"
    else:
        vae, prior, kind = VAE.from_checkpoint(export), StandardNormalPrior(), "vae"
    return _finish(LoadedRun(kind, vae, prior, export, config, "ema", export))


def _load_lightning(path: Path, ema: bool) -> LoadedRun:
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same one-sentence message
        raise EvaluationError(f"cannot read the checkpoint {path} ({err}); give another ckpt=") from err
    config, vae_config = checkpoint.get("config"), checkpoint.get("vae_config")
    if not isinstance(config, dict) or not isinstance(vae_config, dict):
        raise EvaluationError(f"{path} is not a latent-ndm training checkpoint (it lacks the run and VAE configs)")
    kind = config["stage"]["name"]
    prefix = "ema.module." if ema else ("model." if kind == "ndm" else "vae.")
    state = {k[len(prefix):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
    vae = VAE.from_config(vae_config)
    vae_state = {k[4:]: v for k, v in state.items() if k.startswith("vae.")} if kind == "ndm" else state
    vae.load_state_dict(vae_state, strict=True)
    prior = build_ndm_prior(config["ndm"], vae, state) if kind == "ndm" else StandardNormalPrior()
    return _finish(LoadedRun(kind, vae, prior, path.parent, config, "ema" if ema else "raw", path))


def _finish(run: LoadedRun) -> LoadedRun:
    run.vae.eval().requires_grad_(False)
    run.prior.eval().requires_grad_(False)
    return run
