"""NDM objectives (NDM eq. 9-11): per-example negative ELBO terms in nats, discrete (T steps) or continuous time; and
the straight-trajectory regression for few-step sampling (not a bound). All follow one protocol (`protocol.Objective`:
`objective(denoiser, process, x, generator) -> ObjectiveResult`)."""

from latent_ndm.diffusion.objectives.continuous import ContinuousNDMObjective
from latent_ndm.diffusion.objectives.discrete import DiscreteNDMObjective
from latent_ndm.diffusion.objectives.protocol import NDMLoss, Objective, ObjectiveResult
from latent_ndm.diffusion.objectives.straight import StraightFlowObjective, StraightLoss

__all__ = ["ContinuousNDMObjective", "DiscreteNDMObjective", "NDMLoss", "Objective", "ObjectiveResult",
           "StraightFlowObjective", "StraightLoss"]
