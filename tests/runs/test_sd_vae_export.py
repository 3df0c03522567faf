"""A pretrained diffusers AutoencoderKL (here a tiny randomly initialised one saved as a diffusers folder, no
download) through `export_vae pretrained=<folder>`, NDM and LSGM priors on its latents, `sample`, `evaluate` and the
benchmark of the two (NELBO and FID/KID, the FID with the test's stand-in extractor: the Inception path has its own
tests in tests/evaluation/test_inception.py)."""

from __future__ import annotations

import importlib
import json
import shlex
import warnings
from pathlib import Path

import pytest
import torch
import yaml

from latent_ndm.benchmark import run as benchmark_run
from latent_ndm.errors import TrainingError
from latent_ndm.evaluation import fid
from latent_ndm.evaluation.heldout import heldout_images
from latent_ndm.evaluation.runner import evaluate
from latent_ndm.export_vae import export
from latent_ndm.export_vae import run as export_run
from latent_ndm.runs.config import compose_config
from latent_ndm.runs.export import load_vae
from latent_ndm.runs.load import load_run
from latent_ndm.sample import run as sample_run
from latent_ndm.training.run import train
from tests.support import REPO
from tests.support.fid_stand_in import STAND_IN, register
from tests.support.tiny_runs import command, ndm_cfg

diffusers = pytest.importorskip("diffusers")

from tests.vae.test_sd_vae import tiny_config  # noqa: E402 - only with diffusers installed
from vae.sd_vae import AutoencoderKLVAE  # noqa: E402


def diffusers_folder(root: Path) -> Path:
    """A tiny AutoencoderKL written as diffusers writes an SD-VAE: config.json + diffusion_pytorch_model.safetensors."""
    torch.manual_seed(0)
    config = {k: v for k, v in tiny_config().items() if not k.startswith("_")}
    diffusers.AutoencoderKL(**config).save_pretrained(root, safe_serialization=True)
    return root


def export_cfg(folder: Path, out: Path, data: Path, *overrides: str):
    return compose_config("export_vae", ["data=shards", f"data.root={data}", f"pretrained={folder}", f"out={out}",
                                         "limit=8", "device=cpu", "data.num_workers=0", *overrides])


def test_a_pretrained_autoencoder_trains_ndm_and_lsgm_priors(tmp_path: Path, tiny_data: Path, capsys) -> None:
    folder, out = diffusers_folder(tmp_path / "sd-vae"), tmp_path / "export"
    with pytest.warns(UserWarning, match="more than 20% apart"):  # random weights: nothing like 0.18215
        record = export_run(export_cfg(folder, out, tiny_data))
    printed = capsys.readouterr().out
    assert "configured scaling_factor = 0.18215" in printed and f"{1 / record['latent_scale']:.5f}" in printed
    assert record["count"] == 8 and record["configured_scaling_factor"] == pytest.approx(0.18215)
    assert yaml.safe_load((out / "vae_config.yaml").read_text())["_target_"] == "vae.sd_vae.AutoencoderKLVAE"
    vae = load_vae(out)
    assert isinstance(vae, AutoencoderKLVAE) and vae.latent_scale.item() == pytest.approx(record["latent_scale"])
    assert torch.isfinite(vae.log_scale).all() and (vae.log_scale != 0).all()  # fitted on training images
    for name, transform in (("ndm", "neural"), ("lsgm", "identity")):
        run = ndm_cfg(tmp_path / name, tiny_data, out, f"ndm/transform={transform}", "ndm.latent.channels=null",
                      "ndm.latent.resolution=null", "trainer.max_steps=2", "trainer.val_check_interval=2")
        assert train(run).module.model.vae.latent_shape(16) == (4, 8, 8)
    assert command("sample", sample_run, [f"ckpt={tmp_path / 'ndm'}", "num=2", "sampler=euler", "sampler.steps=2",
                                          "progress=false", f"out={tmp_path / 'samples'}"]) == 0
    assert (tmp_path / "samples" / "grid.png").is_file()
    result = evaluate(compose_config("evaluate", [f"ckpt={tmp_path / 'lsgm'}", "progress=false", "accelerator=cpu",
                                                  "metrics=[nelbo]"]))
    assert result.results["nelbo"]["count"] == 12 and result.results["nelbo"]["nelbo_bpd"] > 0
    register()
    reference = heldout_images(load_run(tmp_path / "ndm"), "val", None, 8)
    stats = fid.compute_stats(reference, fid.load_feature_extractor(STAND_IN)).save(tmp_path / "ref")
    report = benchmark_run(compose_config("benchmark", [
        f"out={tmp_path / 'bench'}", f"ndm_run={tmp_path / 'ndm'}", f"lsgm_run={tmp_path / 'lsgm'}", "budget=2",
        "nll_limit=0", "tolerances=[1e-2]", "sample_num=2", "sample_batch_size=2", "step.repeats=2",
        "step.batch_size=2", "few_step.nfe=[]", "few_step.ode=false", f"fid.stats={stats}", f"fid.extractor={STAND_IN}",
        "fid.register=[tests.support.fid_stand_in:register]", "fid.num=8", "fid.batch_size=8", "vae_export=/nowhere"]))
    for name in ("NDM", "LSGM"):
        evaluation = report["models"][name]["evaluation"]
        assert evaluation["nelbo"]["nelbo_bpd"] > 0 and evaluation["fid"]["fid"] >= 0 and "kid" in evaluation["fid"]
    assert (tmp_path / "bench" / "benchmark.md").is_file()


def test_a_folder_is_read_as_data_only(tmp_path: Path, tiny_data: Path) -> None:
    folder = diffusers_folder(tmp_path / "sd-vae")
    (folder / "diffusion_pytorch_model.safetensors").rename(folder / "diffusion_pytorch_model.bin")
    with pytest.raises(TrainingError, match="holds no .safetensors weights"):
        export(export_cfg(folder, tmp_path / "out", tiny_data))
    (folder / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel"}))
    with pytest.raises(TrainingError, match="describes a UNet2DModel, not an AutoencoderKL"):
        export(export_cfg(folder, tmp_path / "out", tiny_data))
    with pytest.raises(TrainingError, match="is not a folder.*hub=true"):
        export(export_cfg(tmp_path / "nowhere", tmp_path / "out", tiny_data))


# the recipe's commands of docs/BYO_VAE.md, shrunk: what each command gets besides its own arguments
RECIPE_SHRINK = {
    "export_vae": ["limit=8", "device=cpu", "data.num_workers=0"],
    "train": ["ndm/denoiser=tiny", "ndm.denoiser.channel_mult=[1]", "trainer.max_steps=2",
              "trainer.val_check_interval=2", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
              "trainer.num_sanity_val_steps=0", "logger=[csv]", "stage.images.num=2", "stage.images.steps=4",
              "stage.collapsed_vae=warn", "data.batch_size=8", "data.shuffle_buffer=8", "data.num_workers=0"],
    "evaluate": ["limit=4", "progress=false", "accelerator=cpu"],
}


def recipe_commands() -> list[str]:
    """The `python -m` lines of docs/BYO_VAE.md's SD-VAE section, in order."""
    text = (REPO / "docs" / "BYO_VAE.md").read_text().split("## A pretrained SD-VAE")[1].split("\n## ")[0]
    return [line.strip() for line in text.splitlines() if line.strip().startswith("python -m latent_ndm.")]


def test_the_docs_sd_vae_recipe_runs_on_a_tiny_autoencoder(tmp_path: Path, tiny_data: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Each command of the recipe, as written, with the hub name replaced by a local diffusers folder (a tiny random
    AutoencoderKL), CelebA-HQ-256 by the tiny shards at 16 px, and the sizes shrunk; run in order in one folder."""
    from latent_ndm.cli import run_or_exit
    from latent_ndm.runs.validate import compose_command_line

    folder = diffusers_folder(tmp_path / "sd-vae")
    monkeypatch.chdir(tmp_path)
    replace = {"pretrained=stabilityai/sd-vae-ft-mse": f"pretrained={folder}", "hub=true": "hub=false",
               "data.root=data/celebahq-256": f"data.root={tiny_data}", "data.resolution=256": "data.resolution=16"}
    commands = recipe_commands()
    assert [c.split()[2] for c in commands] == ["latent_ndm.export_vae", "latent_ndm.train", "latent_ndm.train",
                                                 "latent_ndm.evaluate", "latent_ndm.evaluate"]
    for line in commands:
        name = line.split()[2].removeprefix("latent_ndm.")
        args = [replace.get(a, a) for a in shlex.split(line)[3:]]
        cfg = compose_command_line(name, [*args, *RECIPE_SHRINK[name]])
        if name == "train":
            train(cfg)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # random weights: the 20% scale warning
                run_or_exit(importlib.import_module(f"latent_ndm.{name}").run, cfg)
    for run in ("sd-ndm", "sd-lsgm"):
        assert json.loads((tmp_path / "runs" / "ndm" / run / "export" / "evaluation.json").read_text())
