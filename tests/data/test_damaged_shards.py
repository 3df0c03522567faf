"""Damaged shards are named: a shard whose size differs from its manifest record is left out of training with a
warning (or stops the run with data.on_error=raise); a shard that cannot be read while training is passed over; the
evaluator refuses to report a number over fewer samples than the manifest promises."""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

import pytest
import torch

from data_tools.shard_index import split_pattern
from latent_ndm.data.module import ShardDataModule
from latent_ndm.data.streams import SampleDecoder, TrainStream
from latent_ndm.errors import EvaluationError
from latent_ndm.evaluation.runner import evaluate
from latent_ndm.runs.config import compose_config
from latent_ndm.training.run import train


def cut(shard: Path, at_sample: int | None = None, at_byte: int | None = None) -> None:
    """Cut `shard` where sample `at_sample` begins (the tar still parses) or at byte `at_byte` (inside a member)."""
    if at_sample is not None:
        with tarfile.open(shard) as tar:
            keys, offset = [], None
            for member in tar.getmembers():
                key = member.name.split(".")[0]
                if key not in keys:
                    keys.append(key)
                    if len(keys) == at_sample + 1:
                        offset = member.offset
                        break
        at_byte = offset
    shard.write_bytes(shard.read_bytes()[:at_byte])


@pytest.fixture
def damaged(tmp_path: Path, tiny_data: Path) -> Path:
    """A copy of the tiny dataset whose second training shard lost its second half (cut at a sample boundary)."""
    root = tmp_path / "data"
    shutil.copytree(tiny_data, root)
    cut(root / "synthetic-train-000001.tar", at_sample=6)
    return root


def test_a_shard_cut_at_a_sample_boundary_is_named_and_left_out(damaged: Path) -> None:
    module = ShardDataModule(split_pattern(damaged, "train"), split_pattern(damaged, "val"), batch_size=8)
    with pytest.warns(UserWarning, match=r"damaged training shard .*synthetic-train-000001.tar \(\d+ bytes, the "
                                         r"manifest says \d+ bytes\): going on without its 12 samples"):
        module.setup("fit")
    assert [Path(p).name for p in module.info["train"].paths] == ["synthetic-train-000000.tar",
                                                             "synthetic-train-000002.tar"]
    assert module.info["train"].total == 24 and module.info["val"].total == 12
    strict = ShardDataModule(split_pattern(damaged, "train"), batch_size=8, on_error="raise")
    with pytest.raises(ValueError, match=r"damaged training shards: .*synthetic-train-000001.tar .*data_tools.inspect "
                                         r".* --verify"):
        strict.setup("fit")


def test_a_shard_that_cannot_be_read_is_passed_over_while_training(tmp_path: Path, tiny_data: Path) -> None:
    root = tmp_path / "data"
    shutil.copytree(tiny_data, root)
    bad = root / "synthetic-train-000001.tar"
    cut(bad, at_byte=1536)  # inside the second member: the tar reader stops there
    paths = sorted(str(p) for p in root.glob("*-train-*.tar"))
    stream = TrainStream(paths, SampleDecoder("images", 16), batch_size=8, batches_per_epoch=8, shuffle_buffer=1,
                         seed=0, flip=False, on_error="warn")
    with pytest.warns(UserWarning, match=r"training shard .*synthetic-train-000001.tar cannot be read"):
        batches = list(stream)
    assert len(batches) == 8 and all(b.shape == (8, 3, 16, 16) and torch.isfinite(b).all() for b in batches)
    strict = TrainStream(paths, SampleDecoder("images", 16), 8, 8, 1, seed=0, flip=False, on_error="raise")
    with pytest.raises(ValueError, match=r"training shard .*synthetic-train-000001.tar cannot be read"):
        list(strict)


def test_training_goes_on_without_the_damaged_shard(tmp_path: Path, damaged: Path) -> None:
    """`data=shards` (the embedded set, `data=synthetic`, re-creates its own damaged shards instead)."""
    cfg = compose_config("train", ["stage=vae", "vae=tiny", "data=shards", f"data.root={damaged}", "data.batch_size=8",
                          "data.num_workers=0", "data.shuffle_buffer=8", f"run_dir={tmp_path / 'run'}",
                          "trainer.max_steps=2", "trainer.val_check_interval=2", "trainer.enable_progress_bar=false",
                          "logger=[csv]", "stage.images.num=2"])
    with pytest.warns(UserWarning, match="synthetic-train-000001.tar"):
        result = train(cfg)
    assert result.trainer.global_step == 2


def test_evaluation_refuses_fewer_samples_than_the_manifest_promises(tmp_path: Path, tiny_vae_run: Path,
                                                                      tiny_data: Path) -> None:
    root = tmp_path / "data"
    shutil.copytree(tiny_data, root)
    cut(root / "synthetic-val-000000.tar", at_sample=4)
    cfg = compose_config("evaluate", [f"ckpt={tiny_vae_run}", "metrics=[nelbo]", f"shards={root}", "progress=false",
                                      "accelerator=cpu"])
    with pytest.raises(EvaluationError, match=r"damaged evaluation shards: .*synthetic-val-000000.tar"):
        evaluate(cfg)
