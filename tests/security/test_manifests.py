"""A manifest is data: the shard names it lists must be the names data_tools writes, so none reaches a shell, a path
outside the folder or another host; object-store clients run with an argument list, never through a shell; and
`pipe:` is run only where the user typed it. Served on 127.0.0.1 only, with stand-in `aws` / `gsutil` clients."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
from pathlib import Path

import pytest

from data_tools import inspect
from data_tools.errors import DataToolError
from data_tools.latent_shards import stored_vae_record
from data_tools.manifest import read_manifest
from data_tools.reading import read_bytes
from data_tools.shard_index import shards_by_split
from latent_ndm import evaluate
from latent_ndm.training.run import train
from tests.support.hostile import error_lines
from tests.support.http_server import ShardServer
from tests.support.tiny_runs import base_overrides, command

HOSTILE_NAMES = ["synthetic-val-000000.tar$(touch {marker})", "synthetic-val-000000.tar`touch {marker}`",
                 "synthetic-val-000000.tar; touch {marker}", "pipe:touch {marker}", "../../../etc/passwd",
                 "https://elsewhere.example/synthetic-val-000000.tar", "synthetic-val-000000.tar\n"]


@pytest.fixture
def bucket(tmp_path: Path, tiny_data: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the tiny dataset as `s3://bucket/synthetic-16` and `gs://bucket/synthetic-16`: stand-in clients
    first on PATH print the local copy's files and record their arguments, one per line, in `<folder>/args`."""
    folder = tmp_path / "bucket" / "synthetic-16"
    shutil.copytree(tiny_data, folder)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for client, arg in (("aws", 3), ("gsutil", 2)):
        script = bin_dir / client
        script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" >> "{folder}/args"\n'
                          f'eval "key=\\${{{arg}}}"\ncat "{tmp_path / "bucket"}/${{key#*://bucket/}}"\n')
        script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return folder


def _list_in_manifest(folder: Path, name: str) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["splits"]["val"]["shards"][0]["file"] = name
    (folder / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("hostile", HOSTILE_NAMES)
def test_a_hostile_shard_name_in_a_bucket_manifest_is_refused(hostile: str, bucket: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "marker"
    _list_in_manifest(bucket, hostile.format(marker=marker))
    assert inspect.main(["s3://bucket/synthetic-16", "--preview-images", "0"]) == 1
    err = capsys.readouterr().err
    assert "lists a shard named" in err and "not a data_tools shard name" in err and len(error_lines(err)) == 1
    code = command("train", train, ["stage=vae", *base_overrides(tmp_path / "run", "gs://bucket/synthetic-16"),
                                    "trainer.max_steps=1"])
    assert code == 1 and "not a data_tools shard name" in error_lines(capsys.readouterr().err)[0]
    assert not marker.exists(), "a name from a manifest reached a shell"


def test_a_hostile_name_in_a_served_manifest_is_refused(tmp_path: Path, tiny_data: Path) -> None:
    shutil.copytree(tiny_data, tmp_path / "www" / "synthetic-16")
    _list_in_manifest(tmp_path / "www" / "synthetic-16", "../../secret.tar")
    with ShardServer(tmp_path / "www") as server:
        with pytest.raises(DataToolError, match=r"lists a shard named '\.\./\.\./secret\.tar'"):
            shards_by_split(f"{server.url}/synthetic-16")


def test_object_store_clients_get_the_url_as_one_argument(bucket: Path, tmp_path: Path) -> None:
    """A URL the user typed with shell characters in it reaches the client as one argument; no shell runs it."""
    marker = tmp_path / "marker"
    url = f"s3://bucket/synthetic-16/x.tar;touch {marker}"
    with pytest.raises(OSError, match="the command exited with status"):
        read_bytes(url)
    assert not marker.exists()
    assert (bucket / "args").read_text().splitlines() == ["s3", "cp", url, "-"]
    assert read_bytes("gs://bucket/synthetic-16/manifest.json") == (bucket / "manifest.json").read_bytes()


def test_a_typed_pipe_still_runs(tiny_data: Path) -> None:
    shard = tiny_data / "synthetic-val-000000.tar"
    assert read_bytes(f"pipe:cat {shard}") == shard.read_bytes()


@pytest.mark.parametrize(("change", "message"), [
    (lambda m: m.update(name="../x"), "names its dataset '../x'"),
    (lambda m: m["splits"].update({"val; rm": m["splits"]["val"]}), "malformed split 'val; rm'"),
    (lambda m: m["splits"]["val"]["shards"][0].update(count=-3),
     r"gives splits\.val\.shards\[0\]\.count \(synthetic-val-000000\.tar\) the value -3, not a whole number"),
    (lambda m: m["splits"]["val"].update(count="many"), r"gives splits\.val\.count the value 'many'"),
])
def test_a_malformed_manifest_is_one_sentence(change: object, message: str, tmp_path: Path, tiny_data: Path) -> None:
    folder = tmp_path / "synthetic-16"
    shutil.copytree(tiny_data, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    change(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataToolError, match=message):
        read_manifest(folder)


LONG = "9" * 5000  # Python refuses to turn more than 4,300 digits into an int


def _write_with(folder: Path, change: object) -> Path:
    """Apply `change` to the manifest of `folder`; the string "LONG" it puts anywhere becomes a 5,000-digit number."""
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest).replace('"LONG"', LONG))
    return path


COUNT0, NBYTES0 = (f"splits.val.shards[0].{k} (synthetic-val-000000.tar)" for k in ("count", "nbytes"))
BAD_VALUES = [  # (change, the key the sentence names, what it says of the value)
    (lambda m: m["splits"]["val"]["shards"][0].update(count="LONG"), COUNT0, "5000-digit"),
    (lambda m: m["splits"]["val"].update(count="LONG"), "splits.val.count", "5000-digit"),
    (lambda m: m["splits"]["val"]["shards"][0].update(count=10**13), COUNT0, "10000000000000"),
    (lambda m: m["splits"]["val"]["shards"][0].update(nbytes=2**60), NBYTES0, str(2**60)),
    (lambda m: m["splits"]["val"].update(complete="no"), "splits.val.complete", "'no'"),
    (lambda m: m["config"].update(resolution="16"), "config.resolution", "'16'"),
    (lambda m: m["config"].update(resolution=0), "config.resolution", "0"),
    (lambda m: m["config"].update(resolution="LONG"), "config.resolution", "5000-digit"),
    (lambda m: m["config"].update(shard_size=-1), "config.shard_size", "-1"),
    (lambda m: m["config"].update(split=[36, 12]), "config.split", "[36, 12]"),
    (lambda m: m["config"].update(fields={"mean": "3x4x4"}), "config.fields", "3x4x4"),
    (lambda m: m.update(config=["resolution", 16]), "config", "['resolution', 16]"),
    (lambda m: m.update(kind="videos"), "kind", "'videos'"),
    (lambda m: m.update(complete="yes"), "complete", "'yes'"),
    (lambda m: m.update(skipped=[{"file": 3, "reason": "x"}]), "skipped[0]", "3"),
]


@pytest.mark.parametrize(("change", "key", "shown"), BAD_VALUES, ids=[f"{k}={v}" for _, k, v in BAD_VALUES])
def test_a_bad_value_in_a_manifest_is_one_sentence_naming_the_file_and_key(change: object, key: str, shown: str,
                                                                           tmp_path: Path, tiny_data: Path) -> None:
    folder = tmp_path / "synthetic-16"
    shutil.copytree(tiny_data, folder)
    path = _write_with(folder, change)
    with pytest.raises(DataToolError, match=f"^{re.escape(str(path))} gives {re.escape(key)} the value .*"
                                            f"{re.escape(shown)}.*, so nothing it lists is read$"):
        read_manifest(folder)


def test_commands_name_the_manifest_of_a_5000_digit_count(tmp_path: Path, tiny_data: Path, tiny_vae_run: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """`data_tools.inspect` printed a traceback; train and evaluate printed Python's sentence without the file."""
    folder = tmp_path / "synthetic-16"
    shutil.copytree(tiny_data, folder)
    path = _write_with(folder, lambda m: m["splits"]["val"]["shards"][0].update(count="LONG"))
    named = f"{path} gives splits.val.shards[0].count (synthetic-val-000000.tar) the value a 5000-digit number"
    assert inspect.main([str(folder), "--preview-images", "0"]) == 1
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and named in lines[0], lines
    common = [o for o in base_overrides(tmp_path / "run", folder) if not o.startswith("data.num_images")]
    assert command("train", train, ["stage=vae", "data=shards", *common, "trainer.max_steps=1"]) == 1
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and named in lines[0], lines
    assert command("evaluate", evaluate.run, [f"ckpt={tiny_vae_run}", f"shards={folder}", "metrics=[nelbo]",
                                              "progress=false", "accelerator=cpu"]) == 1
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and named in lines[0], lines


VAE_RECORD = {"path": "vae", "weights_file": "ema.safetensors", "sha256": "0" * 64, "latent_scale": 1.7, "bits": 8,
              "latent_shape": [3, 4, 4], "image_resolution": 16}


@pytest.mark.parametrize(("key", "value"), [("latent_scale", "big"), ("latent_scale", -1.0), ("latent_scale", True),
                                            ("image_resolution", "16"), ("latent_shape", "3x4x4"), ("sha256", 12)])
def test_a_bad_vae_record_is_one_sentence_naming_the_key(key: str, value: object) -> None:
    manifest = {"kind": "latents", "complete": True, "splits": {}, "config": {"vae": {**VAE_RECORD, key: value}}}
    assert stored_vae_record({**manifest, "config": {"vae": VAE_RECORD}}, "latents/") == VAE_RECORD
    with pytest.raises(DataToolError, match=rf"^the manifest of the latent shards in latents/ gives config\.vae\.{key} "
                                            "the value .*; re-encode them with"):
        stored_vae_record(manifest, "latents/")
