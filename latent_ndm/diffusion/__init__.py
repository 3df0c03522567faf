"""The NDM mathematics, pure torch/torchdiffeq/einops (no Lightning, Hydra, files or logging).

One module per object; docs/MATH.md names the paper's equation each implements:
schedule (VP alpha_t, sigma_t and derivatives; the discrete time grid), transforms (F_phi and dF/dt), noise (the NFDM
noise scale L_phi), gaussian (NDM eq. 7 marginal, eq. 8 posterior, c(t), eq. 12 drift: pure formulas),
forward_process (`ForwardProcess`: schedule, F and noise in one object), parameterisation (x_hat_theta),
time_sampling, objectives (eq. 9-11: discrete and continuous NELBO; one protocol), reverse_process (eq. 12-13 drift and
ODE velocity),
samplers (Algorithm 2, SDE, ODE), ode (torchdiffeq), likelihood (probability-flow ODE log-density), checks.
Nothing happens at import.
"""
