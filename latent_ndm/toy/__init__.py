"""The 2D checkerboard demo (`python -m latent_ndm.toy`): an NDM with a learnable F_phi against F = identity.

Modules: `data` (the checkerboard), `train` (models, EMA, a plain-torch loop), `evaluate` (NELBO, ODE NLL
bound, samples, trajectories), `plot` (the PNG) and `__main__` (the CLI: several seeds, mean +- SE and the paired
difference NDM - baseline from `latent_ndm.stats`). Nothing happens at import.
"""
