"""The latent model: a VAE and a prior over its latents (N(0, I) or an NDM), pure torch.

`LatentModel` owns encode -> quantise -> normalise by the stored scale -> cross-entropy (with its D log s) -> the NELBO
parts; `priors` holds the priors with their bounds, ODE likelihood and samplers.
"""

from latent_ndm.model.latent import LatentModel, LatentNELBO
from latent_ndm.model.priors import NDMPrior, Prior, PriorBound, StandardNormalPrior

__all__ = ["LatentModel", "LatentNELBO", "NDMPrior", "Prior", "PriorBound", "StandardNormalPrior"]
