"""`python -m latent_ndm.train stage=ndm`: tiny NDM priors on the latents of a tiny VAE (CPU, 16x16 images)."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from omegaconf import OmegaConf

from latent_ndm.diffusion import schedule, time_sampling, transforms
from latent_ndm.errors import NonFiniteLossError, TrainingError
from latent_ndm.networks import UNet
from latent_ndm.runs.config import compose_config
from latent_ndm.runs.export import NDM_CONFIG as NDM_CONFIG_NAME
from latent_ndm.runs.export import NDM_WEIGHTS as NDM_WEIGHTS_NAME
from latent_ndm.runs.export import load_vae
from latent_ndm.training import ndm_loss, ndm_module
from latent_ndm.training import run as train_module
from latent_ndm.training.ndm_stage import build_model
from latent_ndm.training.run import train
from tests.support.tiny_runs import base_overrides, ndm_cfg, record_ndm_losses


@pytest.fixture(scope="module")
def data_root(tiny_data: Path) -> Path:
    return tiny_data


_base = base_overrides


@pytest.fixture(scope="module")
def vae_export(tiny_vae_run: Path) -> Path:
    """The session's tiny VAE: (3, 16, 16) images -> (3, 4, 4) latents."""
    return tiny_vae_run / "export"


@pytest.mark.parametrize(("mode", "transform", "time"), [
    ("disjoint", "neural", "continuous"), ("disjoint", "identity", "discrete"), ("disjoint", "separable", "discrete"),
    ("joint", "neural", "discrete"), ("joint", "identity", "continuous"),
])
def test_fast_dev_run_trains_validates_and_exports(tmp_path: Path, data_root: Path, vae_export: Path, mode: str,
                                                   transform: str, time: str) -> None:
    run = tmp_path / "run"
    result = train(ndm_cfg(run, data_root, vae_export, "trainer.fast_dev_run=true", f"ndm.mode={mode}",
                           f"ndm/transform={transform}", "ndm.mixing=true", time=time))
    run = result.run_dir  # fast_dev_run: a throwaway folder
    m = result.report["ndm_metrics"]
    assert all(math.isfinite(v) for v in m.values())
    assert m["nelbo_bpd"] == pytest.approx(m["rec_bpd"] + m["neg_entropy_bpd"] + m["cross_entropy_bpd"])
    assert m["count"] > 0
    for name in (NDM_WEIGHTS_NAME, NDM_CONFIG_NAME, "metrics.yaml", "vae/ema.safetensors"):
        assert (run / "export" / name).is_file(), name
    assert (run / "images" / "samples_final.png").is_file()
    assert yaml.safe_load((run / "export" / NDM_CONFIG_NAME).read_text())["mode"] == mode
    trained, original = result.module.model.vae.state_dict(), load_vae(vae_export).state_dict()
    changed = any(not torch.equal(trained[k], original[k]) for k in original)
    assert changed == (mode == "joint")  # disjoint: the VAE is frozen


def test_training_loss_is_the_cross_entropy_or_the_whole_nelbo(tmp_path: Path, data_root: Path,
                                                                vae_export: Path) -> None:
    cfg = ndm_cfg(tmp_path, data_root, vae_export, "ndm/transform=neural", "ndm.mode=joint")
    module = build_model(cfg, None)
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    joint = module.loss(module.model, x, torch.Generator().manual_seed(1))
    ref = module.model.nelbo(x, torch.Generator().manual_seed(1))
    assert joint.loss.item() == pytest.approx(ref.total.mean().item() / (3 * 16 * 16), rel=1e-6)
    disjoint = ndm_loss.NDMTrainingLoss("disjoint", 3 * 16 * 16)
    out = disjoint(module.model, x, torch.Generator().manual_seed(1))
    assert out.loss.item() == pytest.approx(ref.cross_entropy.mean().item() / (3 * 16 * 16), rel=1e-5)
    out.loss.backward()
    assert all(p.grad is None for p in module.model.vae.parameters())


def test_missing_or_mismatched_vae_checkpoint_is_one_clear_error(tmp_path: Path, data_root: Path,
                                                                 vae_export: Path) -> None:
    with pytest.raises(TrainingError, match=r"no VAE checkpoint at .*nowhere: run `python -m latent_ndm.train "
                                            r"stage=vae` first"):
        train(ndm_cfg(tmp_path / "a", data_root, tmp_path / "nowhere"))
    with pytest.raises(TrainingError, match=r"encodes 16px images to latents of shape \(3, 4, 4\), but the NDM is "
                                            r"configured for \(4, 4, 4\); set ndm.latent.channels=3"):
        train(ndm_cfg(tmp_path / "b", data_root, vae_export, "ndm.latent.channels=4"))
    assert not (tmp_path / "b" / "checkpoints").exists()
    cfg = compose_config("train", ["stage=ndm"])
    assert cfg.vae_export == "runs/vae/default/export" and cfg.ndm.mode == "disjoint"


def test_resume_from_last_ckpt_reproduces_the_uninterrupted_losses(tmp_path: Path, data_root: Path,
                                                                   vae_export: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # Everything a resumed run must restore: weights, optimizer, LR schedule, EMA, the per-step noise, and the data
    # (every epoch's training stream is seeded by (seed, epoch, rank, worker), and the epoch comes from the checkpoint).
    losses = record_ndm_losses(monkeypatch)
    common = ("ndm/transform=neural", "trainer.val_check_interval=2", "trainer.limit_val_batches=1",  # 4 = an epoch
              "stage.images.every_n_steps=0")
    train(ndm_cfg(tmp_path / "full", data_root, vae_export, "trainer.max_steps=10", *common))
    full = dict(losses)
    losses.clear()
    train(ndm_cfg(tmp_path / "cut", data_root, vae_export, "trainer.max_steps=4", *common))
    assert sorted(losses) == [0, 1, 2, 3]
    for stop in (6, 10):  # resumed at the end of epoch 0, then in the middle of epoch 1 (and on into epoch 2)
        losses.clear()
        resumed = train(ndm_cfg(tmp_path / "cut", data_root, vae_export, f"trainer.max_steps={stop}", *common))
        steps = list(range(stop - (2 if stop == 6 else 4), stop))
        assert resumed.trainer.global_step == stop and sorted(losses) == steps
        assert [losses[s] for s in steps] == pytest.approx([full[s] for s in steps], rel=1e-6, abs=0)
    with pytest.raises(TrainingError, match=r"it was trained with another configuration \(ndm.transform._target_: "
                                            r"'.*NeuralTransform' -> '.*IdentityTransform', .*name=<new name>"):
        train(ndm_cfg(tmp_path / "cut", data_root, vae_export, "trainer.max_steps=9", "ndm/transform=identity"))


def _poison(monkeypatch: pytest.MonkeyPatch, at_call: int) -> None:
    real, calls = ndm_loss.NDMTrainingLoss.__call__, []

    def poisoned(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        calls.append(1)
        if len(calls) == at_call:
            out.terms["diff"] = out.terms["diff"] * float("nan")
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(ndm_loss.NDMTrainingLoss, "__call__", poisoned)


def test_non_finite_term_stops_naming_it_or_is_skipped(tmp_path: Path, data_root: Path, vae_export: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    _poison(monkeypatch, at_call=3)
    run = tmp_path / "stop"
    with pytest.raises(NonFiniteLossError, match=r"step 2: the NDM diffusion term L_diff \('diff'\) is nan"):
        train(ndm_cfg(run, data_root, vae_export, "trainer.max_steps=4", "trainer.val_check_interval=2",
                      "trainer.limit_val_batches=1"))
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 2

    _poison(monkeypatch, at_call=2)
    result = train(ndm_cfg(tmp_path / "skip", data_root, vae_export, "trainer.max_steps=3",
                           "stage.non_finite=skip", "trainer.limit_val_batches=1"))
    assert result.trainer.global_step == 3
    state = result.module.state_dict()
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    assert int(state["ema.num_updates"]) == 2  # the skipped step did not move the EMA


def test_paper_experiments_differ_only_in_the_transform() -> None:
    def resolved(name: str) -> dict:
        cfg = compose_config("train", [f"experiment={name}", "data.root=/data/celebahq256"])
        return OmegaConf.to_container(cfg, resolve=True)

    ndm, lsgm = resolved("celebahq256_ndm"), resolved("celebahq256_lsgm")
    assert ndm["ndm"]["transform"]["_target_"].endswith("NeuralTransform")
    assert lsgm["ndm"]["transform"] == {"_target_": "latent_ndm.diffusion.transforms.IdentityTransform"}
    for cfg in (ndm, lsgm):
        cfg["ndm"].pop("transform")
        cfg.pop("name"), cfg.pop("run_dir"), cfg.pop("logger")  # where the runs go
    assert ndm == lsgm
    n = ndm["ndm"]
    assert (n["latent"], n["schedule"]["b0"], n["schedule"]["b1"], n["t_eps"]) == (
        {"channels": 8, "resolution": 32}, 0.1, 20.0, 1e-2)
    assert ndm["stage"]["ema"]["decay"] == 0.9999 and ndm["data"]["batch_size"] * ndm["trainer"]["devices"] * ndm[
        "trainer"]["num_nodes"] == 64


class GradRecorder(L.Callback):
    """Saves, per rank and step, the flat gradient (after DDP's all-reduce) and the rank's own loss."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        grads = torch.cat([p.grad.flatten() for p in pl_module.parameters() if p.grad is not None])
        torch.save({"grad": grads, "loss": pl_module.last_terms["loss"]},
                   Path(self.out_dir) / f"rank{trainer.global_rank}_step{trainer.global_step}.pt")


def test_two_process_ddp_averages_gradients_identically(tmp_path: Path, data_root: Path, vae_export: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    stage = train_module.STAGES["ndm"]
    monkeypatch.setitem(train_module.STAGES, "ndm", train_module.Stage(
        stage.build_model, lambda cfg, run_dir: [*stage.build_callbacks(cfg, run_dir), GradRecorder(str(tmp_path))],
        stage.report))
    train(ndm_cfg(tmp_path / "run", data_root, vae_export, "ndm/transform=neural", "trainer.accelerator=cpu",
                  "trainer.devices=2", "trainer.strategy=ddp_spawn", "trainer.max_steps=2",
                  "trainer.val_check_interval=2", "trainer.limit_val_batches=1", "ddp_timeout_s=120"))
    assert torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 2
    for step in (0, 1):
        r0, r1 = (torch.load(tmp_path / f"rank{r}_step{step}.pt") for r in (0, 1))
        assert r0["loss"] != r1["loss"]  # each rank trained on its own batch ...
        assert torch.equal(r0["grad"], r1["grad"]) and r0["grad"].abs().sum() > 0  # ... and stepped on the mean
    assert (tmp_path / "run" / "export" / NDM_WEIGHTS_NAME).is_file()


@pytest.mark.parametrize("transform", ["neural", "separable"])
def test_bf16_mixed_keeps_schedule_transform_and_weights_in_fp32(tmp_path: Path, data_root: Path, vae_export: Path,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  transform: str) -> None:
    """Under bf16 autocast the networks run in bf16, while the schedule, F and dF/dt, the time weights and the loss
    terms stay float32 (what `SeparableTransform`, the jvp of `JvpTransform` and the math layer promise)."""
    seen: dict[str, set[torch.dtype]] = {}

    def record(name: str, *tensors: torch.Tensor | None) -> None:
        seen.setdefault(name, set()).update(t.dtype for t in tensors if t is not None)

    def wrap(cls: type, method: str, name: str, unpack) -> None:
        real = getattr(cls, method)

        def wrapped(self, *args, **kwargs):
            out = real(self, *args, **kwargs)
            record(name, *unpack(out))
            return out

        monkeypatch.setattr(cls, method, wrapped)

    wrap(schedule.VPSchedule, "__call__", "schedule", lambda o: o.__dict__.values())
    wrap(time_sampling.LikelihoodISTime, "sample", "time weight", lambda o: (o.t, o.weight))
    for cls in (transforms.Transform, transforms.SeparableTransform, transforms.JvpTransform):
        for method in ("evaluate", "F_and_dF_dt"):
            if method in cls.__dict__:
                wrap(cls, method, "F, dF/dt", lambda o: [t for r in (o if isinstance(o, list) else [o])
                                                         for t in (r.F, r.dF_dt)])
    real_unet = UNet.forward

    def unet(self, *args, **kwargs):
        out = real_unet(self, *args, **kwargs)
        record(f"net {id(self)}", out)
        return out

    monkeypatch.setattr(UNet, "forward", unet)
    real_step = ndm_module.NDMModule.training_step

    def step(self, batch, batch_idx):
        loss = real_step(self, batch, batch_idx)
        record("loss terms", loss, *self.last_terms.values())
        return loss

    monkeypatch.setattr(ndm_module.NDMModule, "training_step", step)
    result = train(ndm_cfg(tmp_path / "run", data_root, vae_export, f"ndm/transform={transform}",
                           "trainer.precision=bf16-mixed", "trainer.max_steps=2", "trainer.limit_val_batches=1",
                           "stage.images.every_n_steps=0", "stage.images.num=0"))
    assert str(result.trainer.precision) == "bf16-mixed"
    models = (result.module.model, result.module.ema.module)
    denoiser = set().union(*(seen.get(f"net {id(m.prior.denoiser.net)}", set()) for m in models))
    F_net = set().union(*(seen.get(f"net {id(m.prior.transform.net)}", set()) for m in models))
    assert denoiser == {torch.bfloat16}  # autocast was on: the denoiser ran in bf16 ...
    assert F_net == {torch.float32}  # ... and F_phi's network in fp32 (one function F at every t, jvp or not)
    for name in ("schedule", "time weight", "F, dF/dt", "loss terms"):
        assert seen[name] == {torch.float32}, (name, seen[name])
    assert all(math.isfinite(v) for v in result.report["ndm_metrics"].values())
    assert all(torch.isfinite(v).all() for v in result.module.last_terms.values())


def test_a_collapsed_vae_export_is_refused_by_name_and_numbers(tmp_path: Path, data_root: Path,
                                                               vae_export: Path, caplog) -> None:
    """The session's 2-step VAE decodes no better than each image's mean colour: stage=ndm refuses it in one
    sentence naming the export and its numbers (nothing is written), or warns with stage.collapsed_vae=warn."""
    with pytest.raises(TrainingError) as err:
        train(ndm_cfg(tmp_path / "run", data_root, vae_export, "stage.collapsed_vae=refuse"))
    message = str(err.value)
    assert message.startswith(f"the VAE export {vae_export} has a collapsed latent (") and "\n" not in message
    assert "of the variation within the images" in message and "stage.collapsed_vae=warn" in message
    assert not (tmp_path / "run").exists()
    with pytest.raises(TrainingError, match=r"stage.collapsed_vae must be one of \['refuse', 'warn'\]"):
        train(ndm_cfg(tmp_path / "run", data_root, vae_export, "stage.collapsed_vae=maybe"))
    with caplog.at_level("WARNING"):
        train(ndm_cfg(tmp_path / "run", data_root, vae_export, "trainer.fast_dev_run=true"))
    assert any("has a collapsed latent" in r.getMessage() for r in caplog.records)
