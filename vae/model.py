"""The VAE of the first stage: q(z|x) (encoder), p(x|z) (decoder likelihood), p(z) = N(0, I), and its export.

Public interface used by the NDM stage: `encode(x) -> DiagonalGaussian`, `decode(z) -> likelihood`,
`latent_shape(resolution)`, the `latent_scale` buffer (std of encoder samples; the NDM models z / latent_scale)
and `VAE.from_checkpoint(path)`. An export is a folder with `ema.safetensors` (the state_dict, `latent_scale`
included) and `vae_config.yaml` (`VAE.config()`, plain YAML).
"""

from __future__ import annotations

import functools
import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file, save_file
from torch import nn

from latent_ndm.units import nats_to_bpd
from vae.distributions import DiagonalGaussian
from vae.likelihoods import LIKELIHOODS, quantize
from vae.networks import Decoder, Encoder

WEIGHTS_NAME = "ema.safetensors"
CONFIG_NAME = "vae_config.yaml"
TRAIN_COMMAND = "python -m latent_ndm.train stage=vae"
LikelihoodFactory = Callable[..., Any]  # (params (B, P, H, W), bits=...) -> object with log_prob/sample/mean


def bits_per_dim(nats: torch.Tensor, image_shape: tuple[int, ...]) -> torch.Tensor:
    """bits/dim = nats / (D ln 2) with D = C * H * W pixels, image_shape = (C, H, W)."""
    return nats_to_bpd(nats, math.prod(image_shape))


@dataclass
class NELBO:
    """Per-example terms in nats, each (B,): rec = -log p(x|z), z ~ q(z|x); kl = KL(q(z|x) || N(0, I));
    total = rec + beta_kl * kl (the NELBO itself when beta_kl = 1). `num_dims` = C * H * W."""

    rec: torch.Tensor
    kl: torch.Tensor
    total: torch.Tensor
    num_dims: int

    @property
    def bpd(self) -> torch.Tensor:
        """total in bits per dimension."""
        return nats_to_bpd(self.total, self.num_dims)


class VAE(nn.Module):
    """Encoder + decoder + discretised likelihood at `bits` bits.

    Args:
        encoder: x (B, C, H, W) -> (mean, logvar); exposes `latent_channels` and `downsample_factor`.
        decoder: z -> likelihood params (B, P, H, W).
        likelihood: a name in `LIKELIHOODS` ("dml", "gaussian") or a factory `(params, bits=...) -> likelihood`
            (a factory cannot be exported with `config()`).
        bits: bit depth of the modelled data (5 for CelebA-HQ-256).
        likelihood_kwargs: extra arguments of the named likelihood, e.g. {"num_mix": 10}.
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        likelihood: str | LikelihoodFactory = "dml",
        bits: int = 8,
        likelihood_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.encoder, self.decoder, self.bits = encoder, decoder, bits
        self.image_channels: int = getattr(encoder, "config", {}).get("in_channels", 3)
        self.likelihood_kwargs = dict(likelihood_kwargs or {})
        if isinstance(likelihood, str):
            if likelihood not in LIKELIHOODS:
                raise ValueError(f"unknown likelihood {likelihood!r}; choose one of {sorted(LIKELIHOODS)}")
            cls = LIKELIHOODS[likelihood]
            kwargs = {"channels": self.image_channels, **self.likelihood_kwargs}
            expected = cls.num_params(**kwargs)
            if getattr(decoder, "out_channels", expected) != expected:
                raise ValueError(
                    f"decoder.out_channels is {decoder.out_channels} but likelihood {likelihood!r} with "
                    f"{kwargs} needs {expected}"
                )
            self._factory: LikelihoodFactory = functools.partial(cls.from_params, **kwargs)
            self.likelihood_name: str | None = likelihood
        else:
            self._factory, self.likelihood_name = likelihood, None
        self.register_buffer("latent_scale", torch.tensor(1.0))

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        """q(z|x) for images x in [-1, 1], shape (B, C, H, W)."""
        if x.ndim != 4 or x.shape[1] != self.image_channels:
            raise ValueError(f"x must have shape (B, {self.image_channels}, H, W), got {tuple(x.shape)}")
        mean, logvar = self.encoder(x)
        return DiagonalGaussian(mean, logvar)

    def decode(self, z: torch.Tensor) -> Any:
        """p(x|z): a likelihood object with log_prob(x) -> (B,), sample(), mean(), mode()."""
        return self._factory(self.decoder(z), bits=self.bits)

    def latent_shape(self, resolution: int) -> tuple[int, int, int]:
        """(C_z, H_z, W_z) of the latents of a square image of side `resolution`."""
        factor = self.encoder.downsample_factor
        if resolution % factor != 0:
            raise ValueError(f"resolution {resolution} is not divisible by the downsampling factor {factor}")
        return (self.encoder.latent_channels, resolution // factor, resolution // factor)

    @torch.no_grad()
    def set_latent_scale(self, value: float | torch.Tensor) -> None:
        """Store the std of encoder samples (a positive finite scalar); saved with the weights."""
        value = torch.as_tensor(value, dtype=torch.float32)
        if value.numel() != 1 or not torch.isfinite(value) or value <= 0:
            raise ValueError(f"latent_scale must be a positive finite scalar, got {value}")
        self.latent_scale.fill_(value.item())

    def nelbo(self, x: torch.Tensor, beta_kl: float = 1.0, generator: torch.Generator | None = None) -> NELBO:
        """-ELBO with p(z) = N(0, I) and one reparameterised sample; x is snapped to the b-bit grid first
        (`quantize`, a no-op for data already on it)."""
        if self.bits <= 8:
            x = quantize(x, self.bits)
        q = self.encode(x)
        rec = -self.decode(q.sample(generator)).log_prob(x)
        kl = q.kl()
        return NELBO(rec=rec, kl=kl, total=rec + beta_kl * kl, num_dims=math.prod(x.shape[1:]))

    def config(self) -> dict[str, Any]:
        """Plain-dict constructor primitives, inverse of `from_config`."""
        enc, dec = getattr(self.encoder, "config", None), getattr(self.decoder, "config", None)
        if self.likelihood_name is None or enc is None or dec is None:
            raise ValueError("config() needs a named likelihood and vae.networks Encoder/Decoder")
        return {
            "encoder": dict(enc),
            "decoder": dict(dec),
            "likelihood": self.likelihood_name,
            "likelihood_kwargs": dict(self.likelihood_kwargs),
            "bits": self.bits,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> VAE:
        """Build an (untrained) VAE from `config()`'s dict."""
        missing = {"encoder", "decoder", "likelihood", "bits"} - set(config)
        if missing:
            raise ValueError(f"VAE config lacks the keys {sorted(missing)}")

        def tuples(d: dict[str, Any]) -> dict[str, Any]:
            return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}

        return cls(
            Encoder(**tuples(config["encoder"])),
            Decoder(**tuples(config["decoder"])),
            likelihood=config["likelihood"],
            bits=int(config["bits"]),
            likelihood_kwargs=config.get("likelihood_kwargs") or {},
        )

    def save_export(self, path_dir: str | os.PathLike) -> Path:
        """Write `ema.safetensors` (this module's state_dict: call it on the EMA copy) and `vae_config.yaml`
        into `path_dir`, each atomically (temporary name, then os.replace). Returns the folder."""
        folder = Path(path_dir)
        folder.mkdir(parents=True, exist_ok=True)
        config = self.config()
        tensors = {k: v.detach().cpu().clone().contiguous() for k, v in self.state_dict().items()}
        _atomic_write(folder / WEIGHTS_NAME, lambda tmp: save_file(tensors, str(tmp)))
        _atomic_write(folder / CONFIG_NAME, lambda tmp: tmp.write_text(yaml.safe_dump(config, sort_keys=False)))
        return folder

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, map_location: str | torch.device = "cpu") -> VAE:
        """Load an export folder (or its `ema.safetensors` / `vae_config.yaml`), or a torch.save'd plain dict
        {"vae_config": config(), "state_dict": state_dict}. Returns the VAE in eval mode."""
        path = Path(path)
        is_export = path.is_dir() or not path.suffix or path.suffix in (".safetensors", ".yaml", ".yml")
        if not is_export:
            if not path.is_file():
                raise FileNotFoundError(f"No VAE checkpoint file {path}; create it with `{TRAIN_COMMAND}`.")
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
            if not isinstance(ckpt, dict) or not {"vae_config", "state_dict"} <= set(ckpt):
                raise ValueError(f"{path} is not a VAE checkpoint dict with 'vae_config' and 'state_dict'")
            config, state = ckpt["vae_config"], ckpt["state_dict"]
        else:
            folder = path.parent if path.suffix else path
            missing = [name for name in (WEIGHTS_NAME, CONFIG_NAME) if not (folder / name).is_file()]
            if missing:
                raise FileNotFoundError(
                    f"No VAE export at {folder}: missing {' and '.join(missing)}; create it with `{TRAIN_COMMAND}`."
                )
            config = yaml.safe_load((folder / CONFIG_NAME).read_text())
            state = load_file(str(folder / WEIGHTS_NAME), device=str(map_location))
        vae = cls.from_config(config)
        vae.load_state_dict(state, strict=True)
        return vae.to(map_location).eval()


def _atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Write through `write(tmp)` to a temporary file beside `path`, then os.replace it into place."""
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
