"""A manifest is data: the shard names it lists must be the names data_tools writes, so none reaches a shell, a path
outside the folder or another host; object-store clients run with an argument list, never through a shell; and
`pipe:` is run only where the user typed it. Served on 127.0.0.1 only, with stand-in `aws` / `gsutil` clients."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest

from data_tools import inspect
from data_tools.errors import DataToolError
from data_tools.manifest import read_manifest
from data_tools.reading import read_bytes
from data_tools.shard_index import shards_by_split
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
    (lambda m: m["splits"]["val"]["shards"][0].update(count=-3), "a count or size that is not a whole number"),
    (lambda m: m["splits"]["val"].update(count="many"), "malformed split 'val'"),
])
def test_a_malformed_manifest_is_one_sentence(change: object, message: str, tmp_path: Path, tiny_data: Path) -> None:
    folder = tmp_path / "synthetic-16"
    shutil.copytree(tiny_data, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    change(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataToolError, match=message):
        read_manifest(folder)
