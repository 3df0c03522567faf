"""The Python API, for notebooks: load a trained run in one call, then sample, encode, decode and score images.

    import latent_ndm
    model = latent_ndm.load("runs/ndm/default")          # a run folder, its export/ or a .ckpt; EMA weights
    images = model.sample(16, seed=0)                    # (16, 3, H, W) in [-1, 1]: RK4 samples (2 steps), decoded
    q = model.encode(images)                             # q(z|x), a DiagonalGaussian over the latents
    recon = model.decode(q.mean)                         # the decoder's mean, (16, 3, H, W)
    model.nelbo(images)["nelbo"]                         # bits/dim per image (and every part of the bound)
    model.nll(images)["nll"]                             # the ODE bound, bits/dim per image

Everything runs without gradients, in eval mode, on `device` (`model.to("cuda")` moves it). The same numbers as
`python -m latent_ndm.sample` / `evaluate` for the same seeds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from latent_ndm.diffusion.samplers import build_sampler
from latent_ndm.evaluation.bounds import nelbo_terms, nll_terms
from latent_ndm.evaluation.generation import batches, generate
from latent_ndm.model import LatentModel
from latent_ndm.runs.load import LoadedRun, load_run
from vae import DiagonalGaussian, nats_to_bpd


class Model:
    """A trained run: `latent` (the `LatentModel`: VAE and prior), `kind` ("ndm" | "vae"), `config` (the resolved
    training config), and the operations below."""

    def __init__(self, run: LoadedRun, device: torch.device | str = "cpu") -> None:
        self.run = run
        self.device = torch.device(device)
        run.to(self.device)

    @property
    def latent(self) -> LatentModel:
        return self.run.model

    @property
    def kind(self) -> str:
        return self.run.kind

    @property
    def config(self) -> dict[str, Any]:
        return self.run.config

    def to(self, device: torch.device | str) -> Model:
        self.device = torch.device(device)
        self.run.to(self.device)
        return self

    def sample(self, num: int, sampler: str = "rk4", seed: int = 0, batch_size: int = 64,
               **settings: Any) -> torch.Tensor:
        """`num` images in [-1, 1] from the prior, decoded; sample i starts from the noise of (seed, i), as
        `python -m latent_ndm.sample`. `sampler`: a name of configs/sampler/ (ode, euler, heun, rk4, sde, discrete);
        `settings`: its settings (e.g. steps=8, grid="edm"; see `latent_ndm.diffusion.samplers`)."""
        spec = build_sampler({"name": sampler, **settings})
        self.run.model.prior.check_sampler(spec)
        out = [generate(self.run, chunk, spec, seed, self.device).images
               for chunk in batches(range(num), batch_size)]
        return torch.cat(out)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> DiagonalGaussian:
        """q(z|x) of images in [-1, 1] (B, C, H, W), snapped to the VAE's bit depth first."""
        return self.latent.posterior(images.to(self.device))

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The mean of p(x|z): images in [-1, 1]."""
        return self.latent.decode_mean(z.to(self.device)).clamp(-1.0, 1.0)

    def _bpd(self, terms: dict[str, torch.Tensor], images: torch.Tensor) -> dict[str, torch.Tensor]:
        dims = images[0].numel()
        return {name: nats_to_bpd(value, dims).cpu() for name, value in terms.items()}

    def nelbo(self, images: torch.Tensor, k: int = 1, seed: int = 0) -> dict[str, torch.Tensor]:
        """The NELBO of each image in bits/dim (B,) and its parts (rec, neg_entropy, cross_entropy, the prior's
        own terms); k > 1 adds the importance-weighted `nelbo_iw`."""
        generator = torch.Generator(device=self.device).manual_seed(seed)
        terms = nelbo_terms(self.latent, images.to(self.device), k, generator)
        return self._bpd(terms, images)

    def nll(self, images: torch.Tensor, k: int = 1, seed: int = 0, **solver: Any) -> dict[str, torch.Tensor]:
        """The probability-flow ODE's bound on -log p(x) of each image in bits/dim (B,) and its parts; `solver`:
        t_eps (None: the prior's training t_eps, where its NELBO is taken too), rtol, atol (1e-5), method, probe,
        exact."""
        generator = torch.Generator(device=self.device).manual_seed(seed)
        terms, _ = nll_terms(self.latent, images.to(self.device), k, generator, **{"rtol": 1e-5, "atol": 1e-5,
                                                                                     **solver})
        return self._bpd(terms, images)


def load(path: str | Path, ema: bool = True, device: torch.device | str = "cpu") -> Model:
    """The model of a run folder, its `export/` folder, or a training `.ckpt` (EMA weights unless ema=False)."""
    return Model(load_run(path, ema), device)
