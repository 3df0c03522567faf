"""latent-ndm: latent-space Neural Diffusion Models with a learnable forward transform F_phi(x, t).

The math layer (schedule, transforms, objectives, samplers, likelihood) is pure torch/torchdiffeq;
training, data and evaluation build on it. Nothing happens at import.
"""

__version__ = "0.1.0"
