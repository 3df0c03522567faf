"""Every command that reads shards takes them from a URL (a loopback HTTP server serving the tiny dataset) and gives
what it gives on the local folder: training (fast_dev_run, and an exact mid-epoch resume), two-process DDP with
exact-once evaluation, latent encoding, FID statistics, evaluation and `data_tools.inspect`."""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import numpy as np
import pytest

from data_tools import inspect
from data_tools.shard_index import iter_tar_samples, split_shards
from latent_ndm import encode, fid_stats
from latent_ndm.comparison.measure import training_images
from latent_ndm.data.module import ShardDataModule
from latent_ndm.evaluation.runner import evaluate
from latent_ndm.runs.config import compose_config
from latent_ndm.runs.load import load_run
from latent_ndm.training.builders import build_strategy
from latent_ndm.training.run import train
from tests.support.data_fixtures import KeyRecorder, tiny_synthetic
from tests.support.fid_stand_in import STAND_IN
from tests.support.http_server import ShardServer
from tests.support.tiny_runs import command, ndm_cfg, record_ndm_losses, vae_cfg


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_data: Path) -> Iterator[tuple[Path, str]]:
    """(local copy of the tiny dataset, its URL)."""
    www = tmp_path_factory.mktemp("www")
    shutil.copytree(tiny_data, www / "synthetic-16")
    with ShardServer(www) as running:
        yield www / "synthetic-16", f"{running.url}/synthetic-16"


def test_stage_vae_fast_dev_run_from_a_url(tmp_path: Path, server: tuple[Path, str]) -> None:
    _, url = server
    result = train(vae_cfg(tmp_path / "run", url, "trainer.fast_dev_run=true"))
    assert result.trainer.global_step == 1


def test_a_resumed_run_on_url_shards_reproduces_the_uninterrupted_losses(tmp_path: Path, server: tuple[Path, str],
                                                                         tiny_vae_run: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """As the local-shard resume test (tests/training/test_train_ndm.py), with `data=shards data.root=<URL>`."""
    _, url = server
    losses = record_ndm_losses(monkeypatch)
    common = ("trainer.val_check_interval=2",
              "trainer.limit_val_batches=1", "stage.images.every_n_steps=0")
    vae = tiny_vae_run / "export"
    train(ndm_cfg(tmp_path / "full", url, vae, "trainer.max_steps=6", *common))
    full = dict(losses)
    losses.clear()
    train(ndm_cfg(tmp_path / "cut", url, vae, "trainer.max_steps=2", *common))
    losses.clear()
    train(ndm_cfg(tmp_path / "cut", url, vae, "trainer.max_steps=6", *common))  # resumed mid-epoch 0
    assert sorted(losses) == [2, 3, 4, 5]
    assert [losses[s] for s in range(2, 6)] == pytest.approx([full[s] for s in range(2, 6)], rel=1e-6, abs=0)
    # evaluate and benchmark read a run's own data config: its URL
    run = load_run(tmp_path / "full")
    assert training_images(run, 4).shape == (4, 3, 16, 16)
    out = evaluate(compose_config("evaluate", [f"ckpt={tmp_path / 'full'}", "metrics=[nelbo]", "progress=false",
                                               "accelerator=cpu"]))
    assert out.results["nelbo"]["count"] == 12


def test_two_process_ddp_from_urls_evaluates_every_sample_once(tmp_path: Path) -> None:
    root = tiny_synthetic(tmp_path / "www" / "syn", n=96, resolution=16, shard_size=8)  # 9 train, 3 val shards
    with ShardServer(tmp_path / "www") as running:
        url = f"{running.url}/syn"
        dm = ShardDataModule(split_shards(url, "train"), split_shards(url, "val"), batch_size=4, num_workers=1,
                             batches_per_epoch=3, shuffle_buffer=8, return_meta=True,
                             multiprocessing_context="spawn", read={"timeout": 10, "retries": 1})
        trainer = L.Trainer(accelerator="cpu", devices=2, strategy=build_strategy("ddp_spawn", 120), max_epochs=1,
                            num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False)
        trainer.fit(KeyRecorder(str(tmp_path)), datamodule=dm)
    seen = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    shards = [set(s["train_shards"]) for s in seen]
    assert shards[0] and shards[1] and not shards[0] & shards[1] and all(s.startswith(url) for s in shards[0])
    assert [s["train_batches"] for s in seen] == [[4, 4, 4], [4, 4, 4]]
    assert len(seen[0]["val_batches"]) == len(seen[1]["val_batches"])
    val = Counter(seen[0]["val_keys"] + seen[1]["val_keys"])
    expected = {f"{url}/{p.name}/{k}" for p in sorted(root.glob("*-val-*.tar")) for k, _ in iter_tar_samples(p)}
    assert set(val) == expected and set(val.values()) == {1}


def test_a_rank_that_loses_all_its_shards_stops_the_run_instead_of_leaving_the_other_waiting(tmp_path: Path) -> None:
    """Rank 1 reads training shards 1, 3 and 5 of 6, all 404: it stops with an error naming them, and the run ends
    (the other rank is not left waiting in a collective for `ddp_timeout_s`)."""
    tiny_synthetic(tmp_path / "www" / "syn", n=64, resolution=16, shard_size=8)  # 6 train shards, 2 val shards
    faults = {f"synthetic-train-00000{i}.tar": "404" for i in (1, 3, 5)}
    with ShardServer(tmp_path / "www", faults) as running:
        url = f"{running.url}/syn"
        dm = ShardDataModule(split_shards(url, "train"), split_shards(url, "val"), batch_size=4, batches_per_epoch=3,
                             shuffle_buffer=1, return_meta=True, read={"timeout": 5, "retries": 0})
        trainer = L.Trainer(accelerator="cpu", devices=2, strategy=build_strategy("ddp_spawn", 600), max_epochs=1,
                            num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False)
        start = time.monotonic()
        with pytest.raises(Exception, match=r"none of the training shards .*synthetic-train-000001.tar.*"
                                            r"synthetic-train-000005.tar.* can be read"):
            trainer.fit(KeyRecorder(str(tmp_path)), datamodule=dm)
    assert time.monotonic() - start < 120


def test_encode_from_a_url_writes_the_latents_of_the_local_folder(tmp_path: Path, server: tuple[Path, str],
                                                                  tiny_vae_run: Path) -> None:
    local, url = server
    vae = tiny_vae_run / "export"
    for name, shards in (("local", local), ("url", url)):
        assert command("encode", encode.run, [f"vae_export={vae}", f"shards={shards}", f"out={tmp_path / name}",
                                              "device=cpu"]) == 0
    for shard in sorted((tmp_path / "local").glob("*.tar")):
        a = list(iter_tar_samples(shard))
        b = list(iter_tar_samples(tmp_path / "url" / shard.name))
        assert [k for k, _ in a] == [k for k, _ in b] and all(x == y for (_, x), (_, y) in zip(a, b, strict=True))
    assert command("encode", encode.run, [f"vae_export={vae}", f"shards={url}", "device=cpu"]) == 1  # out= needed
    with ShardServer(tmp_path) as latents:  # data=latents from a URL: the manifest's VAE record is checked as ever
        cfg = compose_config("train", [
            "stage=ndm", "data=latents", f"data.root={latents.url}/url", "data.batch_size=8", "data.read.timeout=5",
            f"run_dir={tmp_path / 'ndm'}", f"vae_export={vae}", "ndm/denoiser=tiny", "ndm.latent.channels=3",
            "ndm.latent.resolution=4", "ndm.denoiser.channel_mult=[1]", "stage.images.num=2", "stage.images.steps=4",
            "stage.collapsed_vae=warn", "trainer.enable_progress_bar=false", "logger=[csv]",
            "trainer.fast_dev_run=true"])
        assert train(cfg).trainer.global_step == 1


def test_fid_stats_and_evaluate_from_a_url_match_the_local_folder(tmp_path: Path, server: tuple[Path, str],
                                                                   tiny_vae_run: Path) -> None:
    local, url = server
    for name, shards in (("local", local), ("url", url)):
        assert command("fid_stats", fid_stats.run, [
            f"shards={shards}", f"out={tmp_path / name}", f"extractor={STAND_IN}", "batch_size=20", "device=cpu",
            "register=[tests.support.fid_stand_in:register]", "progress=false"]) == 0
    a, b = (json.loads((tmp_path / n / "fid_stats.json").read_text()) for n in ("local", "url"))
    assert a["source"]["shards"] == b["source"]["shards"] and a["source"]["counts"] == b["source"]["counts"]
    assert a["source"]["manifest_sha256"] == b["source"]["manifest_sha256"] and b["source"]["root"] == url
    assert np.array_equal(np.load(tmp_path / "local" / "fid_stats.npz")["mu"],
                          np.load(tmp_path / "url" / "fid_stats.npz")["mu"])
    results = [evaluate(compose_config("evaluate", [f"ckpt={tiny_vae_run}", "metrics=[nelbo]", f"shards={shards}",
                                                    "progress=false", "accelerator=cpu"]))
               for shards in (local, url)]
    local_nelbo, url_nelbo = (r.results["nelbo"] for r in results)
    assert url_nelbo["nelbo_bpd"] == local_nelbo["nelbo_bpd"] and url_nelbo["count"] == 12


def test_inspect_checks_url_shards_against_their_manifest(server: tuple[Path, str], tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    _, url = server
    status = inspect.main([f"{url}/synthetic-{{train,val}}-000000.tar", "--verify", "--preview",
                           str(tmp_path / "p.png")])
    out = capsys.readouterr().out
    assert status == 0 and "integrity (size, count and sha256): 2/2 shards match the manifest" in out
    assert (tmp_path / "p.png").is_file()
    assert inspect.main([url, "--preview-images", "0"]) == 0  # a URL folder: the shards its manifest lists
    assert "integrity (size and count; --verify adds the sha256): 4/4 shards match" in capsys.readouterr().out
