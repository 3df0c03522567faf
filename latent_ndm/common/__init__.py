"""Parts shared across the layers, torch only and importing nothing else of the project: the leaf that the VAE, the
networks, training and evaluation may all import (tests/architecture/test_layers.py).

running_sums (named float64 sums over a pass, reduced across processes in one collective: every validation and
evaluation metric, the VAE's latent-usage watch), blocks (convolution blocks of both the VAE's decoder and the
denoiser's U-Net). Nothing happens at import.
"""
