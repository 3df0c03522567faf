"""The samplers' configs come from their classes (`latent_ndm.runs.sampler_configs`): configs/sampler/<name>.yaml
holds comments and extends the node Hydra's ConfigStore holds for the class, so that each default is written once
(in the dataclass), every setting can be overridden, a misspelled one is refused in one sentence, and a new sampler
is its class and one YAML file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest
from hydra import initialize_config_dir
from omegaconf import OmegaConf

from latent_ndm.diffusion.samplers import RK4, FixedStepODE, Heun, Sampler, build_sampler
from latent_ndm.runs.config import CONFIG_DIR, compose_config
from latent_ndm.runs.validate import CommandLineError, check_command_line

SAMPLER_YAML = Path(CONFIG_DIR) / "sampler"


def built(settings) -> Sampler:
    return build_sampler(OmegaConf.to_container(settings, resolve=True))


def test_each_sampler_config_builds_exactly_its_classes_default_sampler() -> None:
    """One source of truth per setting: the YAML files hold no values, and each composes to the class's defaults."""
    assert sorted(p.stem for p in SAMPLER_YAML.glob("*.yaml")) == sorted(Sampler.registry)
    for name, cls in Sampler.registry.items():
        assert set(OmegaConf.load(SAMPLER_YAML / f"{name}.yaml")) == {"defaults"}, name
        assert built(compose_config("sample", [f"sampler={name}"]).sampler) == cls(), name
    assert built(compose_config("sample").sampler) == RK4()  # `sample`'s default


def test_every_setting_can_be_overridden_where_a_sampler_is_chosen() -> None:
    cfg = compose_config("sample", ["sampler=heun", "sampler.steps=4", "sampler.grid=edm", "sampler.t_end=0.01"])
    assert built(cfg.sampler) == Heun(steps=4, grid="edm", t_end=0.01)
    fid = compose_config("evaluate", ["sampler@fid.sampler=heun", "fid.sampler.rho=5"]).fid.sampler
    assert built(fid) == Heun(rho=5.0)


def test_a_wrong_setting_is_refused_in_one_sentence() -> None:
    with pytest.raises(CommandLineError, match=r"^sampler\.tol is not a key .*did you mean"):
        check_command_line("sample", ["ckpt=.", "sampler=heun", "sampler.tol=1e-3"])
    with pytest.raises(CommandLineError) as err:
        check_command_line("sample", ["ckpt=.", "sampler=euler", "sampler.steps=many"])
    assert str(err.value).startswith("sampler.steps=many is refused: Value 'many' of type 'str' could not be "
                                     "converted to Integer; give a value of that type")


def test_a_new_sampler_is_its_class_and_one_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Sampler, "registry", dict(Sampler.registry))  # the class below registers here only

    @dataclass(frozen=True)
    class Midpoint(FixedStepODE):
        """The explicit midpoint method (2 evaluations per step)."""

        name: ClassVar[str] = "midpoint"
        solver: ClassVar[str] = "midpoint"
        evals: ClassVar[int] = 2
        steps: int = 3

    (tmp_path / "sampler").mkdir()
    (tmp_path / "sampler" / "midpoint.yaml").write_text(
        "# The probability-flow ODE by the explicit midpoint method.\ndefaults:\n"
        "  - /sampler_schema/midpoint@_here_\n  - _self_\n")
    (tmp_path / "probe.yaml").write_text("defaults:\n  - sampler: midpoint\n  - _self_\n")
    with initialize_config_dir(config_dir=str(tmp_path), version_base="1.3"):
        assert built(compose_config("probe").sampler) == Midpoint()
        assert built(compose_config("probe", ["sampler.steps=5", "sampler.grid=logsnr"]).sampler) == \
            Midpoint(steps=5, grid="logsnr")
