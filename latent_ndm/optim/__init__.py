"""Optimisation helpers that are plain torch (no Lightning): the EMA of a module's weights and the learning-rate
warm-up with cosine decay. The training stages and the 2D demo (`latent_ndm.toy`) share them."""

from latent_ndm.optim.ema import EMA
from latent_ndm.optim.lr import warmup_cosine

__all__ = ["EMA", "warmup_cosine"]
