"""`vae_export` names the VAE export a command builds on; `vae_ckpt`, its old name, is still read with a one-line
warning (`latent_ndm.runs.config.vae_export_of`)."""

from __future__ import annotations

import warnings

import pytest
from omegaconf import OmegaConf
from omegaconf.errors import MissingMandatoryValue

from latent_ndm.runs.config import compose_config, vae_export_of
from latent_ndm.runs.validate import CommandLineError, check_command_line


def test_vae_export_is_read_without_a_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert vae_export_of(OmegaConf.create({"vae_export": "runs/vae/a/export", "vae_ckpt": None})) == \
            "runs/vae/a/export"
        assert vae_export_of({"vae_export": None}) is None and vae_export_of({}) is None


def test_vae_ckpt_still_works_with_a_one_line_warning() -> None:
    cfg = compose_config("encode", ["vae_ckpt=runs/vae/old/export", "shards=data/x"])
    with pytest.warns(FutureWarning, match=r"^vae_ckpt= is deprecated: use vae_export=$"):
        assert vae_export_of(cfg) == "runs/vae/old/export"
    with pytest.warns(FutureWarning):
        assert vae_export_of({"vae_export": "same", "vae_ckpt": "same"}) == "same"


def test_two_different_exports_are_refused_in_one_sentence(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"^vae_export=a and vae_ckpt=b name two VAE exports; give vae_export= alone"):
        vae_export_of({"vae_export": "a", "vae_ckpt": "b"})
    with pytest.raises(CommandLineError, match=r"name two VAE exports"):
        check_command_line("encode", ["vae_export=a", "vae_ckpt=b", f"shards={tmp_path}"])


def test_a_required_vae_export_stays_required() -> None:
    with pytest.raises(MissingMandatoryValue):
        vae_export_of(compose_config("encode", ["shards=data/x"]))
