"""`stage=ndm` with the NFDM forward process (ndm/noise=neural) and the straight mode (ndm/objective=straight): tiny
runs on the tiny VAE's latents through train, sample and evaluate; the refusals that keep bounds honest."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from latent_ndm.diffusion.samplers import AdaptiveODE, Euler, Heun
from latent_ndm.errors import TrainingError
from latent_ndm.evaluate import run as evaluate_run
from latent_ndm.evaluation.runner import evaluate
from latent_ndm.runs.build import build_ndm_prior, forward_process_kind
from latent_ndm.runs.config import compose_config
from latent_ndm.runs.export import NDM_WEIGHTS
from latent_ndm.runs.load import load_run
from latent_ndm.sample import run as sample_run
from latent_ndm.training.ndm_stage import build_model
from latent_ndm.training.run import train
from tests.support.tiny_runs import command, ndm_cfg

NFDM = ("ndm/noise=neural",)
STRAIGHT = ("ndm/noise=neural", "ndm/objective=straight")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, tiny_data: Path, tiny_vae_run: Path) -> dict[str, Path]:
    """A 3-step NFDM run and a 3-step NFDM-straight run on the session's tiny VAE."""
    tmp = tmp_path_factory.mktemp("nfdm")
    steps = ("trainer.max_steps=3", "trainer.val_check_interval=3")
    out = {"data": tiny_data, "vae": tiny_vae_run / "export", "tmp": tmp}
    for name, overrides in (("nfdm", NFDM), ("straight", STRAIGHT)):
        train(ndm_cfg(tmp / name, tiny_data, out["vae"], *steps, *overrides))
        out[name] = tmp / name
    return out


def eval_overrides(ckpt: Path, *more: str) -> list[str]:
    return [f"ckpt={ckpt}", "progress=false", "accelerator=cpu", *more]


def test_the_config_names_the_model_family(tmp_path: Path, runs: dict[str, Path]) -> None:
    """The same name from the config's classes (nothing built) and from the built prior's objects."""
    def kind(*overrides: str) -> str:
        ndm = ndm_cfg(tmp_path, runs["data"], runs["vae"], *overrides).ndm
        named = forward_process_kind(ndm)
        assert build_ndm_prior(ndm).kind == named
        return named

    assert kind() == "ndm" and kind("ndm/transform=identity") == "lsgm"
    assert kind(*NFDM) == "nfdm" and kind(*STRAIGHT) == "nfdm-straight"
    assert kind("ndm/objective=straight") == "ndm-straight"
    assert kind("ndm/transform=identity", "ndm/objective=straight") == "lsgm-straight"


def test_nfdm_starts_as_the_ndm_it_extends(tmp_path: Path, runs: dict[str, Path]) -> None:
    """Same seed: the denoiser and F_phi are drawn before the noise network, and rho_phi starts at zero, so the
    untrained NFDM's bound equals the untrained NDM's for the same draws (MATH.md section 11: L = 0 is NDM)."""
    def prior(*overrides: str):
        cfg = ndm_cfg(tmp_path, runs["data"], runs["vae"], *overrides)
        torch.manual_seed(0)
        return build_ndm_prior(cfg.ndm, t_eps=cfg.ndm.t_eps)

    ndm, nfdm = prior(), prior(*NFDM)
    assert nfdm.noise is not None and ndm.noise is None
    u = torch.randn(4, 3, 4, 4)
    a = ndm.nll_bound(u, torch.Generator().manual_seed(3)).nll
    b = nfdm.nll_bound(u, torch.Generator().manual_seed(3)).nll
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_nfdm_run_exports_its_noise_scale_and_its_bound_repeats_in_evaluate(runs: dict[str, Path]) -> None:
    state = load_file(runs["nfdm"] / "export" / NDM_WEIGHTS)
    assert any(k.startswith("noise.") for k in state)
    loaded = load_run(runs["nfdm"])
    assert loaded.model.prior.noise is not None and loaded.model.prior.is_bound
    for k, v in loaded.model.prior.noise.state_dict().items():
        torch.testing.assert_close(v, state[f"noise.{k}"])
    import yaml
    recorded = yaml.safe_load((runs["nfdm"] / "export" / "metrics.yaml").read_text())
    out = evaluate(compose_config("evaluate", eval_overrides(runs["nfdm"], "metrics=[nelbo]")))
    assert out.results["nelbo"]["nelbo_bpd"] == pytest.approx(recorded["nelbo_bpd"], rel=1e-5)


def test_nfdm_samples_with_ode_sde_and_euler_and_refuses_the_discrete_sampler(runs: dict[str, Path],
                                                                             capsys) -> None:
    for sampler, settings in (("sde", ["sampler.steps=2"]), ("euler", ["sampler.steps=2"]), ("ode", []),
                              ("heun", ["sampler.steps=1", "sampler.grid=edm"])):
        code = command("sample", sample_run, [f"ckpt={runs['nfdm']}", "num=3", "batch_size=2", f"sampler={sampler}",
                                              *settings, "progress=false", f"out={runs['tmp'] / sampler}"])
        assert code == 0
        assert len(list((runs["tmp"] / sampler).glob("0*.png"))) == 3
    capsys.readouterr()
    code = command("sample", sample_run, [f"ckpt={runs['nfdm']}", "num=2", "sampler=discrete", "sampler.steps=2",
                                          "progress=false", f"out={runs['tmp'] / 'discrete'}"])
    err = capsys.readouterr().err
    assert code == 1 and "learns its noise" in err and "sampler=ode, sde, euler, heun or rk4" in err
    assert not (runs["tmp"] / "discrete").exists()


def test_straight_run_trains_on_its_regression_and_reports_no_bound(runs: dict[str, Path]) -> None:
    """Its validation reports the regression (best.ckpt keeps its lowest), never a NELBO."""
    import yaml
    assert (runs["straight"] / "checkpoints" / "best.ckpt").is_file()
    recorded = yaml.safe_load((runs["straight"] / "export" / "metrics.yaml").read_text())
    assert {"straight_loss", "flow", "curvature"} <= set(recorded) and "nelbo_bpd" not in recorded
    assert recorded["straight_loss"] == pytest.approx(recorded["flow"] + 0.1 * recorded["curvature"], rel=1e-6)
    assert all(math.isfinite(recorded[k]) for k in ("straight_loss", "flow", "curvature"))
    prior = load_run(runs["straight"]).model.prior
    assert not prior.is_bound
    with pytest.raises(ValueError, match="not a likelihood bound"):
        prior.nll_bound(torch.randn(2, 3, 4, 4))


def test_straight_training_loss_is_the_per_dimension_regression(tmp_path: Path, runs: dict[str, Path]) -> None:
    module = build_model(ndm_cfg(tmp_path, runs["data"], runs["vae"], *STRAIGHT), None)
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    out = module.loss(module.model, x, torch.Generator().manual_seed(1))
    assert not out.bound and set(out.logged()) == {"loss_per_dim", "flow_per_dim", "curvature_per_dim"}
    g = torch.Generator().manual_seed(1)
    q = module.model.posterior(x)
    u = module.model.normalise(q.sample(g))
    ref = module.model.prior.straight_loss(u, g)
    assert out.loss.item() == pytest.approx(ref.total.mean().item() / u[0].numel(), rel=1e-5)
    out.loss.backward()
    assert all(p.grad is None for p in module.model.vae.parameters())
    noise_grads = [p.grad for p in module.model.prior.noise.parameters()]
    assert any(gr is not None and gr.abs().sum() > 0 for gr in noise_grads)  # the forward process learns too


def test_straight_run_is_evaluated_by_its_samples_only(runs: dict[str, Path], capsys) -> None:
    code = command("evaluate", evaluate_run, eval_overrides(runs["straight"], "metrics=[nelbo]"))
    err = capsys.readouterr().err
    assert code == 1 and "not a likelihood bound" in err and "metrics=[distance]" in err
    out = evaluate(compose_config("evaluate", eval_overrides(
        runs["straight"], "metrics=[distance]", "distance.num=8", "distance.groups=2", "distance.nfe=[1,2]",
        "distance.ode=false", "distance.batch_size=4")))
    d = out.results["distance"]
    assert set(d["by_sampler"]) == {"euler 1 step uniform", "euler 2 steps uniform"} and d["num"] == 8
    for e in d["by_sampler"].values():
        assert e["nfe"] == e["settings"]["steps"] and math.isfinite(e["energy_distance"]) and e["se"] is not None
        assert e["energy_distance"] == pytest.approx(sum(e["groups"]) / 2)
    code = command("sample", sample_run, [f"ckpt={runs['straight']}", "num=2", "sampler=euler", "sampler.steps=2",
                                          "progress=false"])
    assert code == 0 and (runs["straight"] / "samples" / "euler-2-steps-uniform-seed0" / "grid.png").is_file()


def test_the_fixed_step_samplers_cost_their_evaluations_and_approach_the_adaptive_ode(runs: dict[str, Path]) -> None:
    model = load_run(runs["nfdm"]).model
    z_1 = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    a, nfe_a = model.sample(z_1, Euler(steps=3))
    b, nfe_b = model.sample(z_1, Heun(steps=3, grid="logsnr"))
    assert nfe_a == 3 and nfe_b == 6 and a.shape == b.shape == z_1.shape
    exact, _ = model.sample(z_1, AdaptiveODE(tol=1e-6))
    errors = [(model.sample(z_1, Heun(steps=k, grid="logsnr"))[0] - exact).abs().max().item() for k in (4, 32)]
    assert errors[1] < errors[0] / 10, errors


@pytest.mark.parametrize(("overrides", "message"), [
    ((*STRAIGHT, "ndm.mode=joint"), "cannot train the VAE"),
    (("ndm/noise=neural", "ndm/objective=discrete", "ndm.objective.T=10"), "needs ndm/objective=continuous"),
])
def test_combinations_that_would_misreport_are_refused(tmp_path: Path, runs: dict[str, Path],
                                                      overrides: tuple[str, ...], message: str) -> None:
    with pytest.raises(TrainingError, match=message):
        train(ndm_cfg(tmp_path / "run", runs["data"], runs["vae"], "trainer.fast_dev_run=true", *overrides))
