"""A config read back from a file is plain data (issue 33): no interpolation of any kind reaches OmegaConf, a YAML
alias bomb is refused while it is read, targets are checked by the role of the file, building writes nothing to
disk, a trusted package is trusted for what it defines, and a bad value is one sentence naming the file and key.
Each hostile file is built here, by hand, from a real tiny run."""

from __future__ import annotations

import shutil
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
import yaml

import latent_ndm
from latent_ndm import encode, evaluate, sample
from latent_ndm.errors import EvaluationError, TrainingError
from latent_ndm.runs.config import compose_config, resolved
from latent_ndm.runs.export import NDM_CONFIG, TRAIN_CONFIG, VAE_CONFIG
from latent_ndm.runs.file_config import NDM_SCHEMA, RUN_SCHEMA, VAE_SCHEMA, check_config
from latent_ndm.runs.targets import TRUST_ENV, UnsafeConfigError
from latent_ndm.training.ndm_stage import check_vae_informative
from latent_ndm.training.run import train
from tests.support.hostile import error_lines
from tests.support.tiny_runs import command, ndm_cfg


@pytest.fixture(autouse=True)
def deadline() -> Iterator[None]:
    """Fail a test that hangs (an alias bomb walked on the code before issue 33) instead of hanging the suite."""
    def expired(signum: int, frame: object) -> None:
        raise TimeoutError("a hostile file kept latent-ndm busy for 120 s")
    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(120)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def makes_dir(marker: Path, escaped: bool = False) -> str:
    """An OmegaConf interpolation that, once resolved and instantiated, creates the folder `marker` (any code would
    do; Hydra's own blocklist stops builtins.exec, not os.makedirs)."""
    return ("\\" if escaped else "") + f"${{oc.create:{{_target_: os.makedirs, name: '{marker}'}}}}"


def export_copy(ndm_run: Path, tmp_path: Path) -> Path:
    export = tmp_path / "export"
    shutil.copytree(ndm_run / "export", export)
    return export


def edit(path: Path, change: Callable[[dict], None]) -> None:
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data))


def put(where: str, value: object) -> Callable[[dict], None]:
    """A change that sets the dotted key `where` to `value`."""
    def change(data: dict) -> None:
        *parents, last = where.split(".")
        for key in parents:
            data = data[key]
        data[last] = value
    return change


def one_error(code: int, capsys: pytest.CaptureFixture[str]) -> str:
    lines = error_lines(capsys.readouterr().err)
    assert code == 1 and len(lines) == 1, (code, lines)
    return lines[0]


def run_sample(ckpt: Path, capsys: pytest.CaptureFixture[str]) -> str:
    return one_error(command("sample", sample.run, [f"ckpt={ckpt}", "num=1", "progress=false", "device=cpu",
                                                    "sampler=euler", "sampler.steps=2"]), capsys)


def run_evaluate(ckpt: Path, capsys: pytest.CaptureFixture[str]) -> str:
    return one_error(command("evaluate", evaluate.run, [f"ckpt={ckpt}", "metrics=[nelbo]", "progress=false",
                                                        "accelerator=cpu", "limit=2"]), capsys)


def run_load(ckpt: Path, capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(EvaluationError) as err:
        latent_ndm.load(ckpt)
    return str(err.value)


@pytest.mark.parametrize(("file", "where", "escaped", "command_"), [
    (NDM_CONFIG, "schedule.b0", False, run_sample),
    (NDM_CONFIG, "transform.net.base_channels", True, run_sample),
    (NDM_CONFIG, "denoiser.dropout", True, run_evaluate),
    (TRAIN_CONFIG, "data.root", False, run_evaluate),
    (TRAIN_CONFIG, "data.flip", True, run_evaluate),
    (f"vae/{VAE_CONFIG}", "bits", False, run_load),
    (f"vae/{VAE_CONFIG}", "encoder.dropout", True, run_load),
])
def test_an_interpolation_in_an_export_file_is_refused_before_anything_runs(
        file: str, where: str, escaped: bool, command_: Callable[[Path, pytest.CaptureFixture[str]], str],
        ndm_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    export, marker = export_copy(ndm_run, tmp_path), tmp_path / "marker"
    if file.startswith("vae/"):  # the plain VAE config is built by VAE.from_config; a _target_ one by Hydra
        edit(export / file, lambda data: data.update(_target_="vae.model.VAE"))
    edit(export / file, put(where, makes_dir(marker, escaped)))
    line = command_(export, capsys)
    assert not marker.exists(), "an interpolation in a file ran code"
    assert "interpolation" in line and f"({where})" in line and "escaped or not" in line, line


def test_an_interpolation_in_a_checkpoints_stored_config_is_refused(ndm_run: Path, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "marker"
    checkpoint = torch.load(ndm_run / "checkpoints" / "last.ckpt", weights_only=True)
    checkpoint["config"]["ndm"]["transform"]["net"]["dropout"] = makes_dir(marker, escaped=True)
    torch.save(checkpoint, tmp_path / "hostile.ckpt")
    line = run_sample(tmp_path / "hostile.ckpt", capsys)
    assert not marker.exists() and "(ndm.transform.net.dropout)" in line and "interpolation" in line


def hostile_vae_export(ndm_run: Path, tmp_path: Path, marker: Path) -> Path:
    vae = tmp_path / "vae-export"
    shutil.copytree(ndm_run / "export" / "vae", vae)
    edit(vae / VAE_CONFIG, lambda data: data.update(_target_="vae.model.VAE", bits=makes_dir(marker)))
    return vae


def test_a_vae_export_with_an_interpolation_trains_nothing(ndm_run: Path, tiny_data: Path, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    vae = hostile_vae_export(ndm_run, tmp_path, marker)
    with pytest.raises(TrainingError, match=r"interpolation.*\(bits\)"):
        train(ndm_cfg(tmp_path / "run", tiny_data, vae, "trainer.max_steps=1"))
    assert not marker.exists()


def test_a_vae_export_with_an_interpolation_encodes_nothing(ndm_run: Path, tiny_data: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "marker"
    vae = hostile_vae_export(ndm_run, tmp_path, marker)
    line = one_error(command("encode", encode.run, [f"vae_export={vae}", f"shards={tiny_data}",
                                                    f"out={tmp_path / 'latents'}", "device=cpu"]), capsys)
    assert not marker.exists() and "interpolation" in line and "(bits)" in line


def test_an_environment_variable_never_leaves_in_a_data_root(ndm_run: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    secret = "s3cr3t-token-2f9a"
    monkeypatch.setenv("LATENT_NDM_TEST_TOKEN", secret)
    export = export_copy(ndm_run, tmp_path)
    edit(export / TRAIN_CONFIG, put("data.root", "http://127.0.0.1:9/data?token=${oc.env:LATENT_NDM_TEST_TOKEN}"))
    line = run_evaluate(export, capsys)
    assert secret not in line and "(data.root)" in line and "interpolation" in line, line


# a ~470-byte "billion laughs": 10 references per level, 9 levels (10^9 strings once expanded)
ALIAS_BOMB = "a: &a [lol,lol,lol,lol,lol,lol,lol,lol,lol,lol]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{','.join([f'*{chr(97 + i)}'] * 10)}]\n" for i in range(8))
# the same with merge keys, which PyYAML copies while it builds the mapping: 2^40 pairs
MERGE_BOMB = "k0: &k0 {x: 1}\n" + "".join(f"k{i}: &k{i} {{<<: [*k{i - 1}, *k{i - 1}], y{i}: 1}}\n"
                                            for i in range(1, 41))


@pytest.mark.parametrize("bomb", [ALIAS_BOMB, MERGE_BOMB], ids=["aliases", "merge-keys"])
def test_a_yaml_alias_bomb_is_refused_at_once(bomb: str, ndm_run: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    export = export_copy(ndm_run, tmp_path)
    (export / TRAIN_CONFIG).write_text(bomb + (export / TRAIN_CONFIG).read_text())
    start = time.perf_counter()
    line = run_sample(export, capsys)
    assert time.perf_counter() - start < 30
    assert TRAIN_CONFIG in line and "more than 20000 values" in line, line


def synthetic_into(victim: Path) -> dict:
    """An allow-listed data module whose constructor writes a data set into `victim`."""
    return {"_target_": "latent_ndm.data.datasets.synthetic_datamodule", "root": str(victim), "num_images": 8,
            "resolution": 8, "batch_size": 1}


def test_a_vae_config_naming_a_data_module_builds_nothing(ndm_run: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    export, victim = export_copy(ndm_run, tmp_path), tmp_path / "victim"
    (export / "vae" / VAE_CONFIG).write_text(yaml.safe_dump(synthetic_into(victim)))
    line = run_sample(export, capsys)
    assert not victim.exists(), "a VAE config wrote into a folder of its choosing"
    assert "synthetic_datamodule" in line and "builds only vae or vae_part classes" in line, line


def test_a_partial_factory_handed_to_from_factory_builds_nothing(ndm_run: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    export, victim = export_copy(ndm_run, tmp_path), tmp_path / "victim"
    transform = {"_target_": "latent_ndm.diffusion.transforms.SeparableTransform.from_factory", "in_channels": 3,
                 "num_basis": 4, "net": {**synthetic_into(victim), "_partial_": True}}
    edit(export / NDM_CONFIG, put("transform", transform))
    line = run_sample(export, capsys)
    assert not victim.exists(), "a factory from a file wrote into a folder of its choosing"
    assert "(transform.net._target_)" in line and "builds only ndm or network classes" in line, line


def test_a_stored_data_config_never_renders_data(ndm_run: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """The run's own data module, allow-listed and in its place, still writes nothing when read from a file."""
    export, victim = export_copy(ndm_run, tmp_path), tmp_path / "victim"
    edit(export / TRAIN_CONFIG, lambda data: data["data"].update(root=str(victim), num_images=8))
    line = run_evaluate(export, capsys)
    assert not victim.exists() and not (tmp_path / ".victim.lock").exists(), "a data config from a file wrote data"
    assert "never creates one" in line and str(victim) in line, line


def test_a_trusted_package_is_trusted_for_what_it_defines(ndm_run: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "lib" / "my_lab_33"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("import shutil\n\n\ndef own() -> None:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path / "lib"))
    monkeypatch.setenv(TRUST_ENV, "my_lab_33.*")
    secret, stolen = tmp_path / "secret.txt", tmp_path / "stolen.txt"
    secret.write_text("token")
    export = export_copy(ndm_run, tmp_path)
    (export / "vae" / VAE_CONFIG).write_text(yaml.safe_dump(
        {"_target_": "my_lab_33.shutil.copyfile", "src": str(secret), "dst": str(stolen)}))
    with pytest.raises(EvaluationError) as err:
        latent_ndm.load(export)
    assert not stolen.exists(), "a trusted package's import was trusted too"
    assert "defined in shutil, not in my_lab_33" in str(err.value)
    check_config({"_target_": "my_lab_33.own"}, VAE_SCHEMA, "the test config")  # its own names are trusted


def test_a_string_in_metrics_yaml_is_one_sentence(ndm_run: Path, tmp_path: Path) -> None:
    vae = tmp_path / "vae-export"
    shutil.copytree(ndm_run / "export" / "vae", vae)
    (vae / "metrics.yaml").write_text("step: 2\nexplained: lots\nactive_fraction: 1.0\n")
    with pytest.raises(ValueError, match=r"metrics.yaml has explained: 'lots', which is not a number"):
        check_vae_informative(vae, "refuse")


def test_a_checkpoint_whose_stage_is_text_is_one_sentence(ndm_run: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    checkpoint = torch.load(ndm_run / "checkpoints" / "last.ckpt", weights_only=True)
    checkpoint["config"]["stage"] = "ndm"
    torch.save(checkpoint, tmp_path / "odd.ckpt")
    line = run_sample(tmp_path / "odd.ckpt", capsys)
    assert "odd.ckpt has stage: 'ndm', which is not a mapping" in line, line


def test_a_bad_value_in_a_stored_config_names_the_file_and_key(ndm_run: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    export = export_copy(ndm_run, tmp_path)
    edit(export / TRAIN_CONFIG, put("data.resolution", "sixteen"))
    line = run_evaluate(export, capsys)
    assert f"{TRAIN_CONFIG} has data.resolution: 'sixteen', which is not an integer" in line, line


@pytest.mark.parametrize(("tree", "match"), [
    ({"_target_": "vae.model.VAE", "_args_": [1]}, r"sets _args_ \(its top\)"),
    ({"_target_": "vae.model.VAE", "_convert_": "all"}, r"sets _convert_"),
    ({"_target_": "vae.model.VAE", "_partial_": True}, r"sets _partial_ \(its top\)"),
    ({"_target_": "vae.model.VAE", "encoder": {"_target_": "torch.optim.Adam"}}, r"encoder._target_"),
    ({"_target_": "vae.model.VAE", "shell": "x"}, r"the argument shell"),
    ({"encoder": {}, "decoder": {}, "likelihood": "dml", "bits": 8, "extra": 1}, r"the key extra"),
])
def test_a_vae_config_holds_only_what_a_vae_config_may(tree: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        check_config(tree, VAE_SCHEMA, "the VAE config")


def test_a_data_module_may_not_be_told_to_create_its_data() -> None:
    with pytest.raises(UnsafeConfigError, match="sets create"):
        check_config({"stage": {"name": "vae"}, "data": {**synthetic_into(Path("x")), "create": True}}, RUN_SCHEMA,
                     "the run config")


@pytest.mark.parametrize(("name", "overrides"), [
    ("train", ["stage=vae"]),
    ("train", ["stage=vae", "optim=adamax", "logger=[tensorboard,csv]", "vae=celebahq256"]),
    ("train", ["stage=ndm", "ndm/transform=neural", "ndm/noise=neural", "ndm/objective=straight", "data=shards"]),
    ("train", ["stage=ndm", "ndm/transform=identity", "ndm/objective=discrete", "ndm/parameterisation=epsilon"]),
    ("train", ["stage=ndm", "ndm/time_sampler=inverse_g2", "data=latents"]),
    ("train", ["experiment=celebahq256_ndm", "ndm.latent.channels=8", "ndm.latent.resolution=32"]),
    ("export_vae", []),  # the train_config.yaml of a bring-your-own VAE export
])
def test_every_config_the_project_writes_is_accepted(name: str, overrides: list[str]) -> None:
    """The schemas hold exactly what latent-ndm itself stores: its resolved run configs, their ndm parts."""
    run = resolved(compose_config(name, [*overrides, "data.root=/data/x", "data.resolution=32"]))
    check_config(run, RUN_SCHEMA, "the run config")
    check_config(run["vae"], VAE_SCHEMA, "the VAE config")
    if "ndm" in run:
        run["ndm"]["latent"] = {"channels": 4, "resolution": 16}
        check_config(run["ndm"], NDM_SCHEMA, "the ndm config")
