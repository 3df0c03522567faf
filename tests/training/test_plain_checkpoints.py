"""A checkpoint is plain data: with every optimizer config (configs/optim/*.yaml, each with its LR scheduler), one step
of the real training code writes a `last.ckpt` that `torch.load(weights_only=True)` reads, and a resumed run goes on
from it; and the guard where checkpoints are written names any other object by its place before the file exists."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import ListConfig

from latent_ndm.runs.plain_data import NotPlainDataError, check_plain_data, first_non_plain
from latent_ndm.training import vae_stage
from latent_ndm.training.run import train
from tests.support import REPO
from tests.support.tiny_runs import ndm_cfg, vae_cfg

OPTIMS = sorted(p.stem for p in (REPO / "configs" / "optim").glob("*.yaml"))


def reloaded(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


def test_every_optimizer_config_is_covered() -> None:
    assert {"adam", "adamax"} <= set(OPTIMS)


@pytest.mark.parametrize("optim", OPTIMS)
def test_a_vae_run_checkpoints_plain_data_and_resumes(optim: str, tmp_path: Path, tiny_data: Path) -> None:
    run = tmp_path / "run"
    first = train(vae_cfg(run, tiny_data, f"optim={optim}", "trainer.max_steps=1", "trainer.val_check_interval=1"))
    assert first.trainer.global_step == 1
    ckpt = reloaded(run)
    assert ckpt["global_step"] == 1 and first_non_plain(ckpt) is None
    group = ckpt["optimizer_states"][0]["param_groups"][0]
    assert type(group["betas"]) in (list, tuple) and ckpt["lr_schedulers"]  # plain betas; the scheduler's state too
    again = train(vae_cfg(run, tiny_data, f"optim={optim}", "trainer.max_steps=2", "trainer.val_check_interval=1"))
    assert again.trainer.global_step == 2 and reloaded(run)["global_step"] == 2


@pytest.mark.parametrize("optim", OPTIMS)
def test_an_ndm_run_checkpoints_plain_data_and_resumes(optim: str, tmp_path: Path, tiny_data: Path,
                                                       tiny_vae_run: Path) -> None:
    run, export = tmp_path / "ndm", tiny_vae_run / "export"
    args = [f"optim={optim}", "trainer.val_check_interval=1"]
    train(ndm_cfg(run, tiny_data, export, *args, "trainer.max_steps=1"))
    ckpt = reloaded(run)
    assert ckpt["global_step"] == 1 and first_non_plain(ckpt) is None and ckpt["lr_schedulers"]
    assert train(ndm_cfg(run, tiny_data, export, *args, "trainer.max_steps=2")).trainer.global_step == 2


def test_the_guard_names_the_object_and_its_place() -> None:
    plain = {"state_dict": {"w": torch.zeros(2)}, "step": 3, "shape": torch.Size([2]), "dtype": torch.float32,
             "groups": [{"betas": (0.9, 0.999), "name": "vae", "fused": None}], "seen": {1, 2}}
    check_plain_data(plain)
    bad = {**plain, "optimizer_states": [{"param_groups": [{"betas": ListConfig([0.9, 0.999])}]}]}
    with pytest.raises(NotPlainDataError, match=r"^checkpoint\['optimizer_states'\]\[0\]\['param_groups'\]\[0\]"
                                                r"\['betas'\] is a omegaconf.listconfig.ListConfig, which a "
                                                r"weights-only load \(how a run resumes\) refuses"):
        check_plain_data(bad)
    assert first_non_plain({"a": {"b": {1: Path("x")}}})[0] == "checkpoint['a']['b'][1]"


def test_a_config_object_reaching_the_optimizer_stops_the_save_not_the_resume(
        tmp_path: Path, tiny_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Built without `_convert_` (as before), Adamax keeps a ListConfig in its state: the guard refuses to write it."""
    real = vae_stage.instantiate_trusted

    def as_before(cfg, *args, **kwargs):  # noqa: ANN001, ANN202 - the optimizer built from the config object itself
        return real(cfg, *args) if str(cfg.get("_target_")).startswith("torch.optim") else real(cfg, *args, **kwargs)

    monkeypatch.setattr(vae_stage, "instantiate_trusted", as_before)
    run = tmp_path / "run"
    with pytest.raises(NotPlainDataError, match=r"\['betas'\] is a omegaconf.listconfig.ListConfig"):
        train(vae_cfg(run, tiny_data, "optim=adamax", "trainer.max_steps=1", "trainer.val_check_interval=1"))
    assert not (run / "checkpoints" / "last.ckpt").exists()
