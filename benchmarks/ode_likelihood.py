"""ODE log-likelihood: our setup against the LSGM-style one, on the same model, side by side.

ours:  torchdiffeq dopri5 (torch tensors throughout), Hutchinson probe drawn once per solve (a smooth ODE).
lsgm:  torchdiffeq `scipy_solver` RK45 (a numpy round trip per step), probe redrawn at every function evaluation.
Both at rtol = atol = 1e-5, t_eps = 1e-5. The model is the Gaussian oracle in D dimensions (exact denoiser of
N(m, S) data, F = identity) in randomly rotated coordinates (so the Jacobian is dense and Hutchinson's estimate
has variance), so both solve the same well-defined ODE and the exact log-density is known: the printout gives
time per sample, NFE, and the error against the closed form, and their ratios.

    python -m benchmarks.ode_likelihood --dim 768 --batch 16 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torchdiffeq import odeint

from latent_ndm.diffusion.forward_process import ForwardProcess
from latent_ndm.diffusion.likelihood import draw_probe, hutchinson_divergence, ode_log_likelihood, standard_normal_logp
from latent_ndm.diffusion.reverse_process import ReverseProcess
from latent_ndm.diffusion.schedule import VPSchedule
from latent_ndm.diffusion.transforms import IdentityTransform
from tests.support.oracle import GaussianOracleDenoiser, marginal_logp


def lsgm_style(velocity, z: torch.Tensor, t_eps: float, tol: float) -> tuple[torch.Tensor, int]:
    """log p(z) with scipy RK45 and a fresh Rademacher probe at every evaluation (as LSGM's evaluation)."""
    nfe = 0

    def func(t: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]):
        nonlocal nfe
        nfe += 1
        with torch.enable_grad():
            zz = state[0].detach().requires_grad_(True)
            v = velocity(zz, t.expand(zz.shape[0]).to(zz.dtype))
            div = hutchinson_divergence(v, zz, draw_probe(zz, "rademacher"))
        return v.detach(), div.detach()

    times = torch.tensor([t_eps, 1.0], dtype=z.dtype)
    z1, delta = odeint(func, (z, torch.zeros(z.shape[0], dtype=z.dtype)), times, method="scipy_solver",
                       rtol=tol, atol=tol, options={"solver": "RK45"})
    return standard_normal_logp(z1[-1]) + delta[-1], nfe


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--tol", type=float, default=1e-5)
    p.add_argument("--t-eps", type=float, default=1e-5)
    args = p.parse_args()
    g = torch.Generator().manual_seed(0)
    m = torch.randn(args.dim, generator=g) * 0.5
    S = torch.exp(torch.randn(args.dim, generator=g))
    sch = VPSchedule()
    process = ReverseProcess(GaussianOracleDenoiser(m, S, sch), ForwardProcess(sch, IdentityTransform()))
    Q, _ = torch.linalg.qr(torch.randn(args.dim, args.dim, generator=g))

    def velocity(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return process.velocity(z @ Q, t) @ Q.T

    x = m + S.sqrt() * torch.randn(args.batch, args.dim, generator=g)
    s = sch(torch.tensor([args.t_eps]))
    z_diag = s.alpha * x + s.sigma * torch.randn(x.shape, generator=g)
    exact = marginal_logp(z_diag, args.t_eps, m, S, sch)
    z = z_diag @ Q.T
    rows: dict[str, dict[str, list[float]]] = {k: {"s": [], "nfe": [], "err": [], "bias": []}
                                               for k in ("ours", "lsgm")}
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        out = ode_log_likelihood(velocity, z, t_eps=args.t_eps, rtol=args.tol, atol=args.tol)
        rows["ours"]["s"].append((time.perf_counter() - t0) / args.batch)
        rows["ours"]["nfe"].append(out.nfe)
        rows["ours"]["err"].append((out.logp - exact).abs().mean().item() / args.dim)
        rows["ours"]["bias"].append((out.logp - exact).mean().item() / args.dim)
        t0 = time.perf_counter()
        logp, nfe = lsgm_style(velocity, z, args.t_eps, args.tol)
        rows["lsgm"]["s"].append((time.perf_counter() - t0) / args.batch)
        rows["lsgm"]["nfe"].append(nfe)
        rows["lsgm"]["err"].append((logp - exact).abs().mean().item() / args.dim)
        rows["lsgm"]["bias"].append((logp - exact).mean().item() / args.dim)
    med = {k: {q: statistics.median(v) for q, v in r.items()} for k, r in rows.items()}
    print(f"D = {args.dim}, batch {args.batch}, tol {args.tol}, t_eps {args.t_eps}, {args.repeats} repeats (medians)")
    print("err: per-sample |log p - exact| (Hutchinson noise of one solve); bias: batch mean of log p - exact")
    print(f"{'setup':6s} {'s/sample':>10s} {'NFE':>7s} {'err nats/dim':>13s} {'bias nats/dim':>14s}")
    for k in ("ours", "lsgm"):
        r = med[k]
        print(f"{k:6s} {r['s']:10.4f} {r['nfe']:7.0f} {r['err']:13.2e} {r['bias']:14.2e}")
    print(f"LSGM-style / ours: time {med['lsgm']['s'] / med['ours']['s']:.2f}x, "
          f"NFE {med['lsgm']['nfe'] / med['ours']['nfe']:.2f}x")


if __name__ == "__main__":
    main()
