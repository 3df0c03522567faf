"""The NDM-vs-LSGM comparison (`python -m latent_ndm.benchmark`): training and measuring both priors on one VAE
(`measure`), the step cost side by side (`step_cost`), the whole benchmark (`benchmark`) and its report (`report`),
and with curve=true their learning curves compared at equal steps, wall-clock and FLOPs (`curve`, around the runs:
`curve_runs`; the chart: `curve_chart`)."""
