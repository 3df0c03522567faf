"""The NDM-vs-LSGM comparison (`python -m latent_ndm.benchmark`): training and measuring both priors on one VAE
(`measure`), the step cost side by side (`step_cost`), the whole benchmark (`benchmark`) and its report (`report`)."""
