"""Time-conditioned networks net(x, t) -> tensor of the shape of x, with t of shape (B,) in [0, 1].

All of them support forward-mode AD in t (`torch.func.jvp`) and back-propagation through the tangent,
as the transform F(x, t) = x + t G_phi(x, t) of an NDM needs.
"""

from latent_ndm.networks.embedding import SinusoidalTimeEmbedding
from latent_ndm.networks.mlp import TimeMLP
from latent_ndm.networks.unet import UNet

__all__ = ["SinusoidalTimeEmbedding", "TimeMLP", "UNet"]
