"""Model objects from a run's configuration: the NDM prior of an `ndm` config (live, or a saved `ndm_config.yaml`),
its objective at any t_eps, and the VAE a second stage builds on, checked against the latent shape it expects.

Construction order matters for reproducibility (it fixes the initial weights drawn from the seeded RNG): the VAE
first, then the denoiser's network, then F_phi's, then (NFDM) the noise scale's, then the forward process around them
(`ndm.process`, default `ForwardProcess`; a config stored without the key builds the default).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from latent_ndm.diffusion.forward_process import ForwardProcess
from latent_ndm.diffusion.objectives import DiscreteNDMObjective, Objective
from latent_ndm.diffusion.parameterisation import Denoiser, MixingPrediction, Parameterisation
from latent_ndm.diffusion.schedule import VPSchedule
from latent_ndm.errors import TrainingError
from latent_ndm.model import NDMPrior
from latent_ndm.model.priors import process_kind
from latent_ndm.runs.export import VAE_COMMAND, load_vae
from latent_ndm.runs.targets import check_targets, instantiate_trusted, trusted_class
from vae import VAE

NDMConfig = DictConfig | Mapping[str, Any]


def latent_shape(ndm: NDMConfig) -> tuple[int, int, int]:
    """(C, R, R) of the latents an `ndm` config is built for (`ndm.latent.channels`, `ndm.latent.resolution`)."""
    c, r = int(ndm["latent"]["channels"]), int(ndm["latent"]["resolution"])
    return (c, r, r)


def configured_latent_shape(ndm: NDMConfig) -> tuple[int | None, int | None, int | None]:
    """The latent shape an `ndm` config asks for, None where it leaves it to the VAE (`null`)."""
    c, r = ndm["latent"]["channels"], ndm["latent"]["resolution"]
    return (None if c is None else int(c), None if r is None else int(r), None if r is None else int(r))


def transform_kind(ndm: NDMConfig) -> str:
    """The kind of forward transform F of an `ndm` config (identity, separable, neural): its class's `kind`."""
    return str(trusted_class(str(ndm["transform"]["_target_"])).kind)


DEFAULT_PROCESS = "latent_ndm.diffusion.forward_process.ForwardProcess"


def process_config(ndm: NDMConfig) -> Mapping[str, Any]:
    """The `ndm.process` config (the forward process family), `ForwardProcess` where a stored config has none."""
    return ndm.get("process") or {"_target_": DEFAULT_PROCESS}


def objective_class(ndm: NDMConfig) -> type:
    """The class of the objective an `ndm` config names (nothing built): its `is_bound`, `default_sampler`, ..."""
    return trusted_class(str(ndm["objective"]["_target_"]))


def forward_process_kind(ndm: NDMConfig) -> str:
    """The model family of an `ndm` config (`latent_ndm.model.priors.process_kind`) from the classes it names, without
    building them; `NDMPrior.kind` gives the same from a built prior."""
    process = trusted_class(str(process_config(ndm)["_target_"]))
    return process_kind(transform_kind(ndm), bool(ndm.get("noise")), bool(objective_class(ndm).is_bound), process)


def build_denoiser(net: nn.Module, schedule: VPSchedule, parameterisation: Parameterisation, channels: int,
                   mixing: bool = False, mixing_init: float = -6.0) -> Denoiser:
    """x_hat_theta = parameterisation(net(z_t, t)), optionally inside LSGM's per-channel mixing (`MixingPrediction`)."""
    if mixing:
        parameterisation = MixingPrediction(parameterisation, channels, init_logit=mixing_init)
    return Denoiser(net, schedule, parameterisation)


def objective_at(objective: NDMConfig, t_eps: float) -> Objective:
    """The NDM objective of an `ndm.objective` config, cut at `t_eps` (`objective.at(t_eps)`)."""
    return instantiate_trusted(objective, _convert_="all").at(float(t_eps))


def build_ndm_prior(ndm: NDMConfig, state: Mapping[str, torch.Tensor] | None = None,
                    t_eps: float | None = None, source: str = "the ndm config") -> NDMPrior:
    """The NDM prior of an `ndm` config: denoiser, the forward process (schedule, transform, (NFDM) noise scale; its
    class from `ndm.process`), and the objective at `t_eps` (None: the config's `eval_t_eps`, the t_eps of its
    validation bound). `state` ({"denoiser.*", "transform.*", "noise.*"}, or the module's own spelling
    "process.transform.*", "process.noise.*") is loaded when given; weights that do not fit the config raise a
    one-sentence ValueError, and so does a `_target_` outside the allow-list (`latent_ndm.runs.targets`; `source`
    names the config in that message)."""
    n = OmegaConf.create(ndm) if not isinstance(ndm, DictConfig) else ndm
    check_targets(n, source)
    shape = latent_shape(n)
    schedule = instantiate_trusted(n.schedule, source)
    denoiser = build_denoiser(instantiate_trusted(n.denoiser, source, _convert_="all"), schedule,
                              instantiate_trusted(n.parameterisation, source), shape[0], n.mixing, n.mixing_init)
    transform = instantiate_trusted(n.transform, source, _convert_="all")
    noise = instantiate_trusted(n.noise, source, _convert_="all") if n.get("noise") else None
    process: ForwardProcess = instantiate_trusted(process_config(n), source, _partial_=True)(schedule, transform, noise)
    eval_t_eps = float(n.get("eval_t_eps", n.t_eps))
    objective = objective_at(n.objective, eval_t_eps if t_eps is None else t_eps)
    if not process.has_discrete_posterior and isinstance(objective, DiscreteNDMObjective):
        raise ValueError("the discrete objective uses NDM's fixed noise schedule; a learned noise scale "
                         "(ndm/noise=neural) needs ndm/objective=continuous (or straight)")
    parts = {"denoiser": denoiser, "transform": transform, **({"noise": noise} if noise is not None else {})}
    if state is not None:
        state = {k.removeprefix("process."): v for k, v in state.items()}
        extra = sorted({k.split(".", 1)[0] for k in state} - set(parts))
        if extra:
            raise ValueError(f"the checkpoint holds weights of {extra}, which its config does not build; the "
                             "checkpoint and its ndm_config.yaml come from different runs")
        for part, module in parts.items():
            prefix = f"{part}."
            sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            try:
                module.load_state_dict(sub, strict=True)
            except RuntimeError as err:
                raise ValueError(f"the {part} weights do not fit its config ({str(err).splitlines()[0]}); the "
                                 "checkpoint and its ndm_config.yaml come from different runs") from err
    return NDMPrior(denoiser, process, objective, shape, t_eps=float(n.t_eps), eval_t_eps=eval_t_eps)


def checked_vae(vae_export: str | Path | None, resolution: int, shape: tuple[int | None, ...],
                scratch: Callable[[], VAE] | None = None) -> VAE:
    """The VAE export at `vae_export` (or `scratch()` when it is None), refused unless it encodes `resolution`-px
    images to latents of `shape` (the shape the NDM is configured for; None entries: whatever the VAE gives) and has
    a valid latent scale."""
    if vae_export is None:
        if scratch is None:
            raise TrainingError(f"stage=ndm with ndm.mode=disjoint needs a trained VAE: run `{VAE_COMMAND}` first, "
                                "then give vae_export=<its export folder> (default runs/vae/default/export)")
        vae = scratch()
    else:
        path = Path(vae_export)
        if not path.exists():
            raise TrainingError(f"no VAE checkpoint at {path}: run `{VAE_COMMAND}` first (it writes "
                                "runs/vae/default/export), or give vae_export=<a VAE export folder>")
        try:
            vae = load_vae(path)
        except (FileNotFoundError, ValueError, KeyError, RuntimeError) as err:
            raise TrainingError(f"cannot load the VAE checkpoint {path}: {err}") from err
    try:
        found = tuple(vae.latent_shape(resolution))
    except ValueError as err:
        raise TrainingError(f"the VAE {vae_export} does not fit {resolution}px images: {err}") from err
    if any(want is not None and int(want) != got for want, got in zip(shape, found, strict=True)):
        c, r = found[0], found[1]
        asked = tuple("any" if v is None else int(v) for v in shape)
        raise TrainingError(
            f"the VAE export {vae_export} encodes {resolution}px images to latents of shape {found}, but the NDM is "
            f"configured for {asked}; set ndm.latent.channels={c} ndm.latent.resolution={r} (or null: the VAE's), or "
            "give a matching vae_export"
        )
    if not torch.isfinite(vae.latent_scale) or vae.latent_scale <= 0:
        raise TrainingError(f"the VAE export {vae_export} has an invalid latent scale {vae.latent_scale.item()}")
    return vae
