"""The messages a user sees first (issue 39, item 3): a typical mistake on a command line (a misspelled key, a wrong
stage, a missing folder, a folder of the wrong kind for vae_export, an empty data.root) is one sentence naming the
cause and the fix, exit status 1, no traceback and no Hydra boilerplate, found before torch or Lightning is imported.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from latent_ndm import sample as sample_command
from latent_ndm import train as train_command
from latent_ndm.runs import export, validate
from latent_ndm.runs.validate import CommandLineError, check_command_line
from tests.support.tiny_runs import command

REPO = Path(__file__).resolve().parents[2]


def refusal(name: str, *argv: str) -> str:
    with pytest.raises(CommandLineError) as err:
        check_command_line(name, list(argv))
    message = str(err.value)
    assert "\n" not in message and "HYDRA_FULL_ERROR" not in message
    return message


def test_a_misspelled_key_names_the_nearest_key_and_the_fix() -> None:
    message = refusal("train", "trainer.max_step=10")
    assert message.startswith("trainer.max_step is not a key") and "did you mean trainer.max_steps?" in message
    assert "trainer.max_steps=10" in message
    assert "stage.kl_warmup.anneal_portion=0.2" in refusal("train", "stage.kl_warmup.anneal_portio=0.2")
    assert "did you mean ndm/transform?" in refusal("train", "stage=ndm", "ndm/transfrm=identity")
    assert "did you mean sampler.steps?" in refusal("sample", "sampler=euler", "sampler.step=4")
    assert "did you mean limit?" in refusal("evaluate", "limt=64")


def test_a_wrong_option_of_a_group_lists_the_options() -> None:
    assert refusal("train", "stage=foo") == ("stage=foo is not an option of the config group stage (configs/stage/); "
                                             "choose one of ndm, vae")
    assert "did you mean experiment=celebahq256?" in refusal("train", "experiment=celebahq25")
    assert "'key=[a,b]'" in refusal("train", "data.flip=[1,")
    assert "add -m to sweep" in refusal("train", "trainer.max_steps=1,2")
    assert "drop the +" in refusal("train", "+trainer.max_steps=3")


def test_flags_and_sweeps_compose_like_the_command() -> None:
    assert check_command_line("train", ["stage=vae", "--cfg", "job"]).stage.name == "vae"
    cfg = check_command_line("train", ["-m", "stage=vae", "optim.optimizer.lr=1e-3,3e-3", "name=lr-sweep"])
    assert cfg.optim.optimizer.lr == 1e-3
    assert check_command_line("train", ["--config-name", "other"]) is None  # another config: Hydra's business


def test_missing_and_wrong_folders_are_named_with_the_fix(tmp_path: Path) -> None:
    message = refusal("train", "stage=ndm", f"vae_ckpt={tmp_path / 'none'}")
    assert "does not exist" in message and "python -m latent_ndm.train stage=vae" in message
    assert "holds no VAE export" in refusal("train", "stage=ndm", f"vae_ckpt={tmp_path}")
    ndm_run = tmp_path / "ndm"  # the layout `stage=ndm` writes: <run>/export/ndm.safetensors
    (ndm_run / "export").mkdir(parents=True)
    (ndm_run / "export" / export.NDM_WEIGHTS).touch()
    message = refusal("train", "stage=ndm", f"vae_export={ndm_run}")
    assert "is an NDM run, not a VAE export" in message and f"vae_export={ndm_run / 'export' / 'vae'}" in message
    vae_run = tmp_path / "vae"
    (vae_run / "export").mkdir(parents=True)
    for name in (export.VAE_WEIGHTS, export.VAE_CONFIG):
        (vae_run / "export" / name).touch()
    assert f"give its export: vae_export={vae_run / 'export'}" in refusal("train", "stage=ndm", f"vae_export={vae_run}")
    check_command_line("train", ["stage=ndm", f"vae_export={vae_run / 'export'}"])
    assert "is an NDM run" in refusal("encode", f"vae_export={ndm_run}", f"shards={tmp_path}")
    for name in ("sample", "evaluate"):
        message = refusal(name, f"ckpt={tmp_path / 'none'}")
        assert message.startswith(f"ckpt={tmp_path / 'none'} does not exist") and "stage=ndm" in message


def test_an_empty_or_missing_data_root_is_named() -> None:
    assert refusal("train", "data.root=").startswith("data.root is empty; give data.root=")
    assert refusal("train", "data=shards").startswith("data.root is required")


def test_the_validator_knows_the_export_layout() -> None:
    assert validate.VAE_FILES == (export.VAE_WEIGHTS, export.VAE_CONFIG) and validate.NDM_FILE == export.NDM_WEIGHTS


def test_a_command_prints_one_line_and_exits_1(monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture) -> None:
    for module, argv in ((train_command, ["trainer.max_step=10"]), (train_command, ["stage=foo"]),
                         (sample_command, ["ckpt=/no/such/run"])):
        monkeypatch.setattr(sys, "argv", ["x", *argv])
        with pytest.raises(SystemExit) as exit_:
            module.main()
        assert exit_.value.code == 1
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and "HYDRA_FULL_ERROR" not in err, err


def test_the_check_runs_before_torch_and_lightning_are_imported() -> None:
    probe = ("import sys\nsys.argv = ['train', 'trainer.max_step=10']\nfrom latent_ndm.train import main\n"
             "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\n"
             "print(code, sorted(m for m in ('torch', 'lightning', 'numpy') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.stdout.split("\n")[0] == "1 []", proc.stdout + proc.stderr
    assert proc.stderr.startswith("error: trainer.max_step is not a key") and proc.stderr.count("\n") == 1


def test_sample_keeps_samples_it_already_wrote(tmp_path: Path, tiny_vae_run: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    run = shutil.copytree(tiny_vae_run, tmp_path / "run")
    argv = [f"ckpt={run}", "num=2", "sampler=euler", "sampler.steps=1", "progress=false", "device=cpu"]
    assert command("sample", sample_command.run, argv) == 0
    first = run / "samples" / "euler-1-step-uniform-seed0"
    grid = (first / "grid.png").read_bytes()
    assert command("sample", sample_command.run, [*argv, "num=3"]) == 0  # the default folder is kept
    second = first.with_name(f"{first.name}-2")
    assert (first / "grid.png").read_bytes() == grid and json.loads((first / "samples.json").read_text())["num"] == 2
    assert json.loads((second / "samples.json").read_text())["num"] == 3
    assert command("sample", sample_command.run, [*argv, f"out={second}"]) == 1  # a given folder is refused
    assert "give overwrite=true" in capsys.readouterr().err
    assert command("sample", sample_command.run, [*argv, f"out={second}", "overwrite=true"]) == 0
    assert json.loads((second / "samples.json").read_text())["num"] == 2
