"""Every paper recipe (configs/experiment/*.yaml) runs for real: `python -m latent_ndm.train experiment=celebahq256`
(the VAE, 5-bit data, Adamax, LSGM's KL warm-up shares, EMA, precision auto, checkpoint and export), then
`experiment=celebahq256_ndm` and `experiment=celebahq256_lsgm` (joint training on that VAE's export), then
`latent_ndm.sample` on the NDM and `latent_ndm.evaluate` on the LSGM (one each, to keep the file near a minute and a
half of CPU time: the two share their code but for F_phi, which sampling runs too). Every training run is stopped
after a checkpoint and resumed by rerunning its command with a larger `trainer.max_steps`.

The recipes are shrunk in size only: 64x64 images instead of 256x256 (so 8x8 latents; the denoiser's attention sits
at 4x4, half the latent side as in the paper's 16 of 32), an eighth of the channels, one residual block per scale,
batch 2, one or two steps. The rest are a CPU's settings: one device, one node and Lightning's own strategy (the
recipes ask for 8-16 GPUs under DDP; `trainer.precision=auto`, which the recipes keep, is 32-true on a CPU by the
project's own `select_precision`), and `stage.collapsed_vae=warn`, since a 2-step VAE is collapsed and the NDM stage
refuses one by default. `test_the_shrinking_overrides_change_sizes_only` holds that list to those keys.
"""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from data_tools.synthetic import write_synthetic
from latent_ndm.runs.config import compose_config, scaled_channels
from tests.support import REPO

pytestmark = pytest.mark.slow

RESOLUTION, WIDTH = 64, 1 / 8
CPU = ["trainer.devices=1", "trainer.num_nodes=1", "trainer.strategy=auto", "trainer.enable_progress_bar=false",
       "data.num_workers=0"]
SIZE = [f"data.resolution={RESOLUTION}", "data.batch_size=2", "data.shuffle_buffer=4",
        "trainer.val_check_interval=1", "trainer.limit_val_batches=1", "trainer.log_every_n_steps=1",
        "optim.scheduler.warmup_steps=1", "stage.images.num=2",
        f"vae.encoder.base_channels={scaled_channels(128, WIDTH, 8)}", "vae.encoder.num_groups=8"]
VAE_SIZE = ["stage.watch.images=2", "stage.watch.units=8"]
NDM_SIZE = ["ndm.latent.resolution=8", f"ndm.denoiser.base_channels={scaled_channels(256, WIDTH, 8)}",
            "ndm.denoiser.num_groups=8", "ndm.denoiser.num_res_blocks=1", "ndm.denoiser.attn_resolutions=[4]",
            "stage.images.steps=2"]
RECIPES = {  # experiment -> (its stage's size overrides, its other settings on a CPU)
    "celebahq256": (["stage=vae", *VAE_SIZE], []),
    "celebahq256_ndm": (NDM_SIZE, ["stage.collapsed_vae=warn"]),
    "celebahq256_lsgm": (NDM_SIZE, ["stage.collapsed_vae=warn"]),
}
# what the overrides may change: sizes (channels, groups, depth, resolution, batch, steps, how many images a check or
# a grid uses, how often it runs) and where a CPU differs from the recipe's GPUs
SIZE_KEYS = {"data.resolution", "data.batch_size", "data.shuffle_buffer", "data.num_workers", "data.root",
             "trainer.devices", "trainer.num_nodes", "trainer.strategy", "trainer.enable_progress_bar",
             "trainer.max_steps", "trainer.val_check_interval", "trainer.limit_val_batches",
             "trainer.log_every_n_steps", "optim.scheduler.warmup_steps", "optim.scheduler.total_steps",
             "stage.images.num", "stage.images.steps", "stage.watch.images", "stage.watch.units",
             "stage.collapsed_vae", "run_dir", "vae_export"}
SIZE_PREFIXES = ("vae.encoder.base_channels", "vae.encoder.num_groups", "vae.decoder.base_channels",
                 "vae.decoder.num_groups", "ndm.latent.resolution", "ndm.denoiser.", "ndm.transform.net.",
                 "ndm.F_size.depth")


def recipe_args(experiment: str, run: Path, data: Path, steps: int, vae_export: Path | None = None) -> list[str]:
    stage, cpu = RECIPES[experiment]
    return [f"experiment={experiment}", *stage, f"run_dir={run}", f"data.root={data}", f"trainer.max_steps={steps}",
            *CPU, *SIZE, *cpu, *([f"vae_export={vae_export}"] if vae_export else [])]


def command(module: str, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    output = proc.stdout[-2000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, f"python -m {module} {' '.join(args)} failed:\n{output}"
    assert "Traceback" not in proc.stderr
    return proc


def checkpoint(run: Path) -> dict:
    """The run's resume point, read as a resume reads it: data only."""
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


def train_and_resume(experiment: str, run: Path, data: Path, vae_export: Path | None = None) -> dict:
    """One step, then the same command with max_steps=2, which must resume from last.ckpt; the final checkpoint."""
    command("latent_ndm.train", *recipe_args(experiment, run, data, 1, vae_export))
    assert checkpoint(run)["global_step"] == 1 and (run / "export").is_dir()
    again = command("latent_ndm.train", *recipe_args(experiment, run, data, 2, vae_export))
    assert f"resuming from {run / 'checkpoints' / 'last.ckpt'}" in again.stdout + again.stderr
    ckpt = checkpoint(run)
    assert ckpt["global_step"] == 2
    return ckpt


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 synthetic 64x64 faces in local shards: 4 to train on, 4 to validate."""
    return write_synthetic(tmp_path_factory.mktemp("recipes") / "faces-64", n=8, resolution=RESOLUTION,
                           shard_size=4, split="train=0.5,val=0.5", workers=0, progress=False)


def test_every_recipe_is_run() -> None:
    assert set(RECIPES) == {p.stem for p in (REPO / "configs" / "experiment").glob("*.yaml")}


@pytest.mark.parametrize("experiment", sorted(RECIPES))
def test_the_shrinking_overrides_change_sizes_only(experiment: str, tmp_path: Path) -> None:
    """Against the recipe as the docs give it, the shrunk one differs only in sizes and CPU settings."""
    stage = RECIPES[experiment][0][:1] if experiment == "celebahq256" else []
    full = compose_config("train", [f"experiment={experiment}", *stage, "data.root=/data"])
    vae = None if experiment == "celebahq256" else tmp_path / "vae"
    small = compose_config("train", recipe_args(experiment, tmp_path / "run", Path("/data"), 2, vae))
    a, b = (OmegaConf.to_container(c, resolve=False) for c in (full, small))
    changed = sorted(set(flat(a).items()) ^ set(flat(b).items()))
    outside = {k for k, _ in changed if k not in SIZE_KEYS and not k.startswith(SIZE_PREFIXES)}
    assert not outside, f"overrides that change more than sizes: {outside}"
    assert small.trainer.precision == full.trainer.precision  # auto: the project maps it to the CPU's 32-true


def flat(tree: object, path: str = "") -> dict[str, str]:
    if isinstance(tree, dict):
        return {k: v for key, value in tree.items() for k, v in flat(value, f"{path}.{key}" if path else key).items()}
    return {path: repr(tree)}


def test_the_paper_recipes_train_resume_evaluate_and_sample(tmp_path: Path, shards: Path) -> None:
    vae_run = tmp_path / "vae"
    ckpt = train_and_resume("celebahq256", vae_run, shards)  # LSGM's warm-up shares (1e-4 + 1.0) and Adamax
    group = ckpt["optimizer_states"][0]["param_groups"][0]
    assert group["eps"] == 1e-3 and group["weight_decay"] == 3e-4 and "exp_inf" in ckpt["optimizer_states"][0][
        "state"][0]  # Adamax's own state
    assert (vae_run / "export" / "ema.safetensors").is_file()

    def prior(experiment: str) -> tuple[dict, Path]:
        run = tmp_path / experiment
        ckpt = train_and_resume(experiment, run, shards, vae_run / "export")
        if experiment.endswith("_ndm"):  # sampling runs F_phi (and dF/dt) in the ODE's velocity
            command("latent_ndm.sample", f"ckpt={run}", "num=1", "batch_size=1", "sampler=rk4", "sampler.steps=1",
                    "progress=false", f"out={tmp_path / 'samples'}")
        else:  # the same bound as the NDM's (section 5), on held-out images
            command("latent_ndm.evaluate", f"ckpt={run}", "metrics=[nelbo]", "limit=2", "batch_size=2",
                    "progress=false")
        return ckpt, run

    with ThreadPoolExecutor(max_workers=2) as pool:  # two independent chains of processes, one per core
        results = dict(zip(("ndm", "lsgm"), pool.map(prior, ("celebahq256_ndm", "celebahq256_lsgm")), strict=True))
    for name, (ckpt, _) in results.items():
        groups = {g["name"] for g in ckpt["optimizer_states"][0]["param_groups"]}
        assert groups == ({"denoiser", "transform", "vae"} if name == "ndm" else {"denoiser", "vae"})  # joint
    assert Image.open(tmp_path / "samples" / "grid.png").size == (RESOLUTION, RESOLUTION)
    evaluation = json.loads((results["lsgm"][1] / "export" / "evaluation.json").read_text())
    assert evaluation["metrics"]["nelbo"]["nelbo_bpd"] > 0
