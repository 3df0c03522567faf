"""Training machinery of the stages of `python -m latent_ndm.train` (Lightning + Hydra).

The math lives in `vae/` and `latent_ndm/` (pure torch); this package holds the Lightning modules, callbacks,
EMA, export and the builders that turn a composed config into objects. Nothing happens at import.
"""
