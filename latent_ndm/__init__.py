"""latent-ndm: latent-space Neural Diffusion Models with a learnable forward transform F_phi(x, t).

`latent_ndm.load(path)` gives a trained run for notebooks (see `latent_ndm.api`); the command-line entry points are
`python -m latent_ndm.{train,sample,evaluate,benchmark,encode,fid_stats}`. Nothing happens at import: the API is
imported on first use.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.2.0"
__all__ = ["Model", "load"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from latent_ndm import api

        return getattr(api, name)
    raise AttributeError(f"module 'latent_ndm' has no attribute {name!r}")
