"""A killed sharding run, rerun, produces exactly the files of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from data_tools.images_to_shards import ShardOptions, shard_images
from data_tools.sources import FolderSource
from tests.support.data_fixtures import dir_bytes, write_random_images

OPTIONS = {"name": "faces", "resolution": 16, "shard_size": 5, "split": "train=0.7,val=0.3"}

# Runs the sharder in a child process that SIGKILLs itself after `kill_at` processed files (mid-shard).
KILLER = """
import json, os, signal, sys
from pathlib import Path
import data_tools.images_to_shards as images_to_shards
from data_tools.sources import FolderSource
real, done = images_to_shards.process_images, [0]
def dying(*args, **kwargs):
    for outcome in real(*args, **kwargs):
        if done[0] == int(sys.argv[3]):
            os.kill(os.getpid(), signal.SIGKILL)
        done[0] += 1
        yield outcome
images_to_shards.process_images = dying
options = images_to_shards.ShardOptions(**json.loads(sys.argv[4]), workers=0, progress=False)
images_to_shards.shard_images(FolderSource(Path(sys.argv[1])), Path(sys.argv[2]), options)
"""


@pytest.fixture(scope="module")
def source_and_reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("resume")
    write_random_images(root / "src", n=28, size=16)
    (root / "src" / "img_005_empty.png").write_bytes(b"")
    (root / "src" / "img_017_text.png").write_text("not an image")
    shard_images(FolderSource(root / "src"), root / "reference", ShardOptions(**OPTIONS, workers=0, progress=False))
    return root / "src", root / "reference"


def _run(src: Path, out: Path) -> int:
    result = shard_images(FolderSource(src), out, ShardOptions(**OPTIONS, workers=0, progress=False))
    return result.reused_shards


@pytest.mark.parametrize("kill_at", [12, 26])  # inside the train split / inside the val split
def test_sigkilled_run_resumes_to_identical_shards(source_and_reference: tuple[Path, Path], tmp_path: Path,
                                                   kill_at: int) -> None:
    src, reference = source_and_reference
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.run([sys.executable, "-c", KILLER, str(src), str(out), str(kill_at), json.dumps(OPTIONS)],
                           env=env, capture_output=True, text=True, timeout=120)
    assert child.returncode == -signal.SIGKILL, child.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert not manifest["complete"] and list(out.glob("*.tar.tmp")), "the kill should leave a partial shard"
    complete = [r["file"] for s in manifest["splits"].values() for r in s["shards"]]
    assert complete and all((out / f).is_file() for f in complete)

    assert _run(src, out) == len(complete)
    assert dir_bytes(out) == dir_bytes(reference)


def test_corrupted_shard_is_rewritten_and_complete_run_is_a_no_op(source_and_reference: tuple[Path, Path],
                                                                  tmp_path: Path) -> None:
    src, reference = source_and_reference
    out = tmp_path / "out"
    assert _run(src, out) == 0
    n_shards = len(list(out.glob("*.tar")))
    assert _run(src, out) == n_shards  # already complete: everything reused
    victim = out / "faces-train-000001.tar"
    data = bytearray(victim.read_bytes())
    data[700] ^= 0xFF
    victim.write_bytes(bytes(data))
    (out / "faces-val-000000.tar.tmp").write_bytes(b"partial")
    n_train = len(list(out.glob("faces-train-*.tar")))
    assert _run(src, out) == n_shards - (n_train - 1)  # train shards from 1 on are redone, val is kept
    assert dir_bytes(out) == dir_bytes(reference)
