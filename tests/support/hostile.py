"""Hostile files for the untrusted-input tests (tests/security/): built by hand, as someone who wants to run code on
a researcher's machine would build them. Nothing here ever contacts another address than 127.0.0.1."""

from __future__ import annotations

import hashlib
import io
import json
import struct
import tarfile
import zlib
from pathlib import Path
from typing import Any

import torch


class RunsCode:
    """Unpickling this object runs Python code (creates `marker`): what a hostile checkpoint hides in its pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, ...]:
        return (exec, (f"open({self.marker!r}, 'w').close()",))


def code_running_checkpoint(path: Path, marker: Path, **fields: Any) -> Path:
    """A torch.save'd dict shaped like a checkpoint ("state_dict", configs) with a code-running object inside."""
    path.parent.mkdir(parents=True, exist_ok=True)
    checkpoint = {"state_dict": {"w": torch.zeros(2)}, "global_step": 10**6, "payload": RunsCode(marker), **fields}
    torch.save(checkpoint, path)
    return path


def error_lines(stderr: str) -> list[str]:
    """The `error: ...` lines a command printed (the CLI prints one, then a hint about the full traceback)."""
    return [line for line in stderr.splitlines() if line.startswith("error:")]



def assert_evaluate_and_encode_refuse(dataset: Path, vae_run: Path, out: Path, capsys: Any, fault: str,
                                      shard: str) -> None:
    """`evaluate` and `encode` of the image shards `dataset` (with the VAE run `vae_run`) each stop in one line naming
    `fault` (evaluate also the `shard`), exit status 1."""
    from latent_ndm import encode, evaluate
    from tests.support.tiny_runs import command

    code = command("evaluate", evaluate.run, [f"ckpt={vae_run}", f"shards={dataset}", "metrics=[nelbo]",
                                              "progress=false", "accelerator=cpu"])
    lines = error_lines(capsys.readouterr().err)
    assert code == 1 and len(lines) == 1 and fault in lines[0] and shard in lines[0], lines
    code = command("encode", encode.run, [f"vae_export={vae_run / 'export'}", f"shards={dataset}", f"out={out}",
                                          "device=cpu"])
    lines = error_lines(capsys.readouterr().err)
    assert code == 1 and len(lines) == 1 and fault in lines[0], lines

# --- hostile shards ------------------------------------------------------------------------------------------------

def png_header_only(width: int, height: int) -> bytes:
    """A few dozen bytes of PNG that declare a `width` x `height` RGB image (a decompression bomb's calling card):
    signature, IHDR, a tiny IDAT, IEND, with valid CRCs."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def tar_of(members: list[tuple[str, bytes]], declared: dict[str, int] | None = None) -> bytes:
    """A tar of `members` (name, bytes); a member named in `declared` gets that size in its header (ustar octal, or
    GNU base-256 beyond 8 GiB) while only its real bytes follow."""
    out = io.BytesIO()
    for name, data in members:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), 0, 0o444
        if declared and name in declared:
            info.size = declared[name]
            out.write(info.tobuf(format=tarfile.GNU_FORMAT))
            out.write(data + b"\0" * (-len(data) % 512))
            continue
        out.write(info.tobuf(format=tarfile.USTAR_FORMAT))
        out.write(data + b"\0" * (-len(data) % 512))
    out.write(b"\0" * 1024)
    return out.getvalue()


def publish(folder: Path, split: str, index: int, tar: bytes, count: int) -> Path:
    """Put `tar` into the shard folder `folder` as `<name>-<split>-<index>.tar`, with a manifest record that claims
    `count` samples and matches its bytes (size, sha256): what someone publishing a hostile dataset would do."""
    manifest = json.loads((folder / "manifest.json").read_text())
    name = f"{manifest['name']}-{split}-{index:06d}.tar"
    (folder / name).write_bytes(tar)
    state = manifest["splits"][split]
    record = {"file": name, "count": count, "nbytes": len(tar), "sha256": hashlib.sha256(tar).hexdigest()}
    state["shards"] = [r for r in state["shards"] if r["file"] != name] + [record]
    state["shards"].sort(key=lambda r: r["file"])
    state["count"] = sum(r["count"] for r in state["shards"])
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return folder / name
