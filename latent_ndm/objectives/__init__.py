"""NDM objectives: per-example negative ELBO terms in nats."""

from latent_ndm.objectives.continuous import ContinuousNDMObjective
from latent_ndm.objectives.discrete import DiscreteNDMObjective, time_grid
from latent_ndm.objectives.terms import NDMLoss

__all__ = ["ContinuousNDMObjective", "DiscreteNDMObjective", "NDMLoss", "time_grid"]
