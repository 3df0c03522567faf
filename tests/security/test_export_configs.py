"""A downloaded export or run is data: its YAML and its checkpoint's run config build only latent-ndm's own classes
(the allow-list of `latent_ndm.runs.targets`), nested targets included, never run a `pipe:` command, and hold no Python
tags; each refusal is one line naming the file, and nothing runs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml
from hydra._internal.utils import _locate

from latent_ndm import evaluate, sample
from latent_ndm.runs.export import NDM_CONFIG, TRAIN_CONFIG, VAE_CONFIG
from latent_ndm.runs.targets import ALLOWED_TARGETS, TRUST_ENV, UnsafeConfigError, check_file_config, check_targets
from tests.support import REPO
from tests.support.hostile import error_lines
from tests.support.tiny_runs import command


def runs_code(marker: Path) -> dict:
    """A Hydra node that would run Python code when instantiated."""
    return {"_target_": "builtins.exec", "_args_": [f"open({str(marker)!r}, 'w').close()"]}


def _copy(run: Path, tmp_path: Path) -> Path:
    export = tmp_path / "export"
    shutil.copytree(run / "export", export)
    return export


def _edit(path: Path, change: object) -> None:
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data))


def _evaluate(export: Path, capsys: pytest.CaptureFixture[str]) -> str:
    code = command("evaluate", evaluate.run, [f"ckpt={export}", "metrics=[nelbo]", "progress=false",
                                              "accelerator=cpu", "limit=2"])
    lines = error_lines(capsys.readouterr().err)
    assert code == 1 and len(lines) == 1, lines
    return lines[0]


def _nested(where: str, marker: Path) -> object:
    def change(data: dict) -> None:
        node = data
        *parents, last = where.split(".")
        for key in parents:
            node = node[key]
        node[last] = runs_code(marker)
    return change


@pytest.mark.parametrize(("file", "where"), [
    (NDM_CONFIG, "transform.net"),        # nested two deep, inside an allowed target
    (NDM_CONFIG, "schedule"),
    (TRAIN_CONFIG, "data.read"),          # the data config evaluate builds the held-out set from
    (f"vae/{VAE_CONFIG}", "encoder"),
])
def test_a_nested_target_in_an_export_file_is_refused(file: str, where: str, ndm_run: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    export, marker = _copy(ndm_run, tmp_path), tmp_path / "marker"
    _edit(export / file, _nested(where, marker))
    line = _evaluate(export, capsys)
    assert not marker.exists(), "a config from a file ran code"
    assert "'builtins.exec'" in line and "not one of latent-ndm's own classes" in line and TRUST_ENV in line


def test_a_pipe_command_in_a_run_config_is_never_run(ndm_run: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    export, marker = _copy(ndm_run, tmp_path), tmp_path / "marker"

    def change(data: dict) -> None:
        data["data"].update(_target_="latent_ndm.data.datasets.shard_datamodule", root=f"pipe:touch {marker}")
        for key in ("num_images", "data_seed"):
            data["data"].pop(key, None)
    _edit(export / TRAIN_CONFIG, change)
    line = _evaluate(export, capsys)
    assert not marker.exists()
    assert "names the command 'pipe:touch" in line and "(data.root)" in line


def test_python_tags_in_yaml_are_refused_in_one_line(ndm_run: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    export, marker = _copy(ndm_run, tmp_path), tmp_path / "marker"
    (export / NDM_CONFIG).write_text(f"schedule: !!python/object/apply:os.system ['touch {marker}']\n")
    line = _evaluate(export, capsys)
    assert not marker.exists() and "is not plain YAML" in line


def test_a_checkpoints_run_config_is_checked_too(ndm_run: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """The configs inside a Lightning checkpoint are plain data (they pass weights_only), but what they would build
    is checked like an export's."""
    marker = tmp_path / "marker"
    checkpoint = torch.load(ndm_run / "checkpoints" / "last.ckpt", weights_only=True)
    checkpoint["config"]["ndm"]["transform"]["net"] = runs_code(marker)
    torch.save(checkpoint, tmp_path / "hostile.ckpt")
    code = command("sample", sample.run, [f"ckpt={tmp_path / 'hostile.ckpt'}", "num=1", "progress=false",
                                          "device=cpu"])
    lines = error_lines(capsys.readouterr().err)
    assert code == 1 and len(lines) == 1 and not marker.exists()
    assert "ndm.transform.net._target_" in lines[0]


def test_the_run_itself_still_loads(ndm_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = command("sample", sample.run, [f"ckpt={ndm_run}", "num=1", "sampler=euler", "sampler.steps=2",
                                          "progress=false", "device=cpu"])
    assert code == 0, capsys.readouterr().err


def test_sampling_a_downloaded_run_never_writes_through_a_link_planted_in_it(ndm_run: Path, tmp_path: Path,
                                                                               capsys: pytest.CaptureFixture[str]
                                                                               ) -> None:
    """`sample` writes its default folder inside the run (`<run>/samples/...`): a `samples` link planted in a
    downloaded run is refused in one line, and nothing lands where it points."""
    run = tmp_path / "downloaded"
    shutil.copytree(ndm_run, run, ignore=shutil.ignore_patterns("samples"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (run / "samples").symlink_to(elsewhere)
    code = command("sample", sample.run, [f"ckpt={run}", "num=1", "sampler=euler", "sampler.steps=2",
                                          "progress=false", "device=cpu"])
    lines = error_lines(capsys.readouterr().err)
    assert code == 1 and len(lines) == 1 and "symbolic link" in lines[0] and "samples" in lines[0]
    assert list(elsewhere.iterdir()) == []


def test_every_target_the_configs_use_is_allowed_and_every_allowed_one_exists() -> None:
    used = {line.split("_target_:")[1].strip() for path in (REPO / "configs").rglob("*.yaml")
            for line in path.read_text().splitlines() if "_target_:" in line}
    assert used and used <= ALLOWED_TARGETS, sorted(used - ALLOWED_TARGETS)
    wandb = {"lightning.pytorch.loggers.WandbLogger"}  # needs wandb installed to locate
    for target in sorted(ALLOWED_TARGETS - wandb):
        assert callable(_locate(target)), target


def test_your_own_class_is_built_only_when_you_name_it(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = {"net": {"_target_": "my_lab.nets.BigUNet", "width": 4}}
    with pytest.raises(UnsafeConfigError, match=r"my_lab.nets.BigUNet.*\(net._target_\)"):
        check_targets(cfg, "the config")
    monkeypatch.setenv(TRUST_ENV, "other.Thing, my_lab.nets.*")
    check_targets(cfg, "the config")
    with pytest.raises(UnsafeConfigError, match="my_lab.netsX"):
        check_targets({"_target_": "my_lab.netsX.Evil"}, "the config")
    with pytest.raises(UnsafeConfigError, match="pipe:"):
        check_file_config({"data": {"shards": ["a.tar", " pipe:curl x"]}}, "the file")
