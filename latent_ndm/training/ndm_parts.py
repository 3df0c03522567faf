"""The parts of `stage=ndm`: the VAE it builds on (checked against the config), the denoiser, the transform, and
`LatentNDM`, the one module that holds all three (what EMA tracks and checkpoints store)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from latent_ndm.parameterisation import Denoiser, MixingPrediction, Parameterisation
from latent_ndm.schedule import VPSchedule
from latent_ndm.training.errors import TrainingError
from latent_ndm.transforms import SeparableTransform, Transform
from vae import VAE

VAE_COMMAND = "python -m latent_ndm.train stage=vae"


class LatentNDM(nn.Module):
    """The latent model: `vae` (q(z|x), p(x|z), latent_scale), `denoiser` x_hat_theta and `transform` F_phi, for
    latents of `latent_shape` (C, H, W)."""

    def __init__(self, vae: VAE, denoiser: Denoiser, transform: Transform, latent_shape: tuple[int, int, int]
                 ) -> None:
        super().__init__()
        self.vae, self.denoiser, self.transform = vae, denoiser, transform
        self.latent_shape = tuple(int(n) for n in latent_shape)

    def ndm_parameters(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters by part: denoiser (mixing logits included) and transform."""
        return {"denoiser": list(self.denoiser.parameters()), "transform": list(self.transform.parameters())}


class FP32SeparableTransform(SeparableTransform):
    """`SeparableTransform` with its network outside autocast, so that F and dF/dt stay fp32 under bf16-mixed
    (as `NeuralTransform`'s jvp does)."""

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            return super().heads(x.float())


def separable_transform(net: functools.partial, num_basis: int) -> SeparableTransform:
    """An `FP32SeparableTransform` whose network (a partial U-Net, given `in_channels`) is built with
    out_channels = num_basis x in_channels."""
    return FP32SeparableTransform(net(out_channels=num_basis * net.keywords["in_channels"]), num_basis=num_basis)


def build_denoiser(net: nn.Module, schedule: VPSchedule, parameterisation: Parameterisation, channels: int,
                   mixing: bool = False, mixing_init: float = -6.0) -> Denoiser:
    """x_hat_theta = parameterisation(net(z_t, t)), optionally inside LSGM's per-channel mixing (`MixingPrediction`)."""
    if mixing:
        parameterisation = MixingPrediction(parameterisation, channels, init_logit=mixing_init)
    return Denoiser(net, schedule, parameterisation)


def load_vae(vae_ckpt: str | Path | None, resolution: int, latent_shape: tuple[int, int, int],
             scratch: Callable[[], VAE] | None = None) -> VAE:
    """The VAE export at `vae_ckpt` (or `scratch()` when it is None), refused unless it encodes `resolution`-px
    images to latents of `latent_shape` (the shape the NDM is configured for)."""
    if vae_ckpt is None:
        if scratch is None:
            raise TrainingError(f"stage=ndm with ndm.mode=disjoint needs a trained VAE: run `{VAE_COMMAND}` first, "
                                "then give vae_ckpt=<its export folder> (default runs/vae/default/export)")
        vae = scratch()
    else:
        path = Path(vae_ckpt)
        if not path.exists():
            raise TrainingError(f"no VAE checkpoint at {path}: run `{VAE_COMMAND}` first (it writes "
                                "runs/vae/default/export), or give vae_ckpt=<a VAE export folder>")
        try:
            vae = VAE.from_checkpoint(path)
        except (FileNotFoundError, ValueError, KeyError, RuntimeError) as err:
            raise TrainingError(f"cannot load the VAE checkpoint {path}: {err}") from err
    try:
        shape = tuple(vae.latent_shape(resolution))
    except ValueError as err:
        raise TrainingError(f"the VAE {vae_ckpt} does not fit {resolution}px images: {err}") from err
    if shape != tuple(latent_shape):
        c, r = shape[0], shape[1]
        raise TrainingError(
            f"the VAE checkpoint {vae_ckpt} encodes {resolution}px images to latents of shape {shape}, but the NDM is "
            f"configured for {tuple(latent_shape)}; set ndm.latent.channels={c} ndm.latent.resolution={r}, or give "
            "a matching vae_ckpt"
        )
    if not torch.isfinite(vae.latent_scale) or vae.latent_scale <= 0:
        raise TrainingError(f"the VAE checkpoint {vae_ckpt} has an invalid latent scale {vae.latent_scale.item()}")
    return vae
