"""Two-process DDP on CPU (gloo): disjoint training shards per rank, the full validation set exactly once."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import lightning as L

from data_tools.shard_index import iter_tar_samples, split_pattern
from latent_ndm.data.module import ShardDataModule
from latent_ndm.training.builders import build_strategy
from tests.support.data_fixtures import KeyRecorder, tiny_synthetic


def test_two_process_ddp_sees_disjoint_train_shards_and_all_val_once(tmp_path: Path) -> None:
    """Workers start with spawn: forking a rank that already runs gloo's threads can deadlock the child (a CI run
    hung that way for gloo's 30-minute default); the 120 s collective timeout turns any such hang into a failure."""
    root = tiny_synthetic(tmp_path / "syn", n=96, resolution=16, shard_size=8)  # 9 train shards, 3 val shards
    dm = ShardDataModule(split_pattern(root, "train"), split_pattern(root, "val"), batch_size=4, num_workers=1,
                         batches_per_epoch=3, shuffle_buffer=8, return_meta=True, multiprocessing_context="spawn")
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy=build_strategy("ddp_spawn", 120), max_epochs=1,
                        num_sanity_val_steps=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.fit(KeyRecorder(str(tmp_path)), datamodule=dm)

    seen = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    shards = [set(s["train_shards"]) for s in seen]
    assert shards[0] and shards[1] and not shards[0] & shards[1]
    assert [s["train_batches"] for s in seen] == [[4, 4, 4], [4, 4, 4]]
    assert len(seen[0]["val_batches"]) == len(seen[1]["val_batches"])  # no rank waits for the other
    val = Counter(seen[0]["val_keys"] + seen[1]["val_keys"])
    expected = {f"{p}/{k}" for p in sorted(root.glob("*-val-*.tar")) for k, _ in iter_tar_samples(p)}
    assert set(val) == expected and set(val.values()) == {1}
