"""Pre-encoded latents as shards: the same atomic writer and manifest, arrays stored as ``.npy``, and the record of
the VAE that encoded them.

A latent sample is ``{key}.{field}.npy`` for each field (e.g. ``mean`` and ``logvar`` of the encoder),
keyed like the image it was encoded from, so ``stage=ndm`` can stream latents instead of re-encoding.
One call writes one split; calling again for another split adds it to the same directory's manifest.

The VAE record (``manifest["config"]["vae"]``, written by ``python -m latent_ndm.encode``) is ``{"path",
"weights_file", "sha256", "latent_scale", "bits", "latent_shape", "image_resolution"}``; two VAEs are the same when
the sha256 of their weights files and their latent scales agree (the path may differ). No torch here: the caller
names the VAE's weights file.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Callable, Iterable, Mapping
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

from data_tools.errors import DataToolError
from data_tools.files import remove_temporaries, sha256_file
from data_tools.manifest import MAX_SIDE, new_manifest, prepare_out_dir, write_manifest
from data_tools.writer import AtomicShardWriter, ShardRecord

_FIELD = re.compile(r"^[A-Za-z0-9_]+$")
ENCODE_COMMAND = "python -m latent_ndm.encode vae_export=<VAE export> shards=<image shards>"


def npy_bytes(array: np.ndarray) -> bytes:
    """An array in .npy format (deterministic bytes)."""
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


NPY_KINDS = "fiu"  # the dtype kinds a stored latent may have: floats, signed and unsigned integers


def npy_array(data: bytes) -> np.ndarray:
    """The array stored in the .npy bytes `data`, checked before anything is allocated for it.

    The header must be format 1.0 or 2.0 and declare a plain numeric dtype (`NPY_KINDS`: no objects, records or
    sub-arrays) and a shape whose byte size is exactly the bytes that follow it; a few bytes declaring 64 GiB are
    refused, not allocated. The array is a read-only view of `data`. `ValueError` saying what is wrong otherwise.
    """
    stream = io.BytesIO(data)
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
    else:
        raise ValueError(f"its .npy format version {version[0]}.{version[1]} is not 1.0 or 2.0")
    if dtype.kind not in NPY_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise ValueError(f"its dtype {dtype} is not a plain number type")
    if any(n < 0 for n in shape):
        raise ValueError(f"its shape {shape} has a negative side")
    declared, present = math.prod(shape) * dtype.itemsize, len(data) - stream.tell()
    if declared != present:
        raise ValueError(f"its header declares {declared} bytes ({dtype} of shape {shape}) but {present} follow")
    array = np.frombuffer(data, dtype, offset=stream.tell()) if declared else np.empty(0, dtype)
    return array.reshape(shape, order="F" if fortran else "C")


def _layout(arrays: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Field names, shapes and dtypes: the part of the config every sample must match."""
    for name in arrays:
        if not _FIELD.match(name):
            raise DataToolError(f"latent field name {name!r} must be letters, digits or '_'")
    return {"fields": {k: list(np.shape(v)) for k, v in sorted(arrays.items())},
            "dtypes": {k: np.asarray(v).dtype.str for k, v in sorted(arrays.items())}}


def write_latent_shards(
    out_dir: Path | str,
    name: str,
    split: str,
    items: Iterable[tuple[str, Mapping[str, np.ndarray]]],
    shard_size: int = 1000,
    meta: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write (key, {field: array}) items as shards ``{name}-{split}-{000000}.tar``; return the manifest.

    All items must have the same fields, shapes and dtypes; keys must be unique-looking names without dots.
    Rewriting a split replaces its shards; other splits already in the directory are kept. `meta` (JSON values,
    e.g. the VAE that encoded the latents) joins the manifest's config: a directory holds one config only.
    """
    out_dir = Path(out_dir)
    iterator = iter(items)
    try:
        first = next(iterator)
    except StopIteration:
        raise DataToolError(f"no latents given for split {split!r}; nothing written") from None
    layout = _layout(first[1])
    config = {"shard_size": shard_size, **layout, **(meta or {})}
    manifest = prepare_out_dir(out_dir, "latents", name, config) or new_manifest("latents", name, config)
    remove_temporaries(out_dir)
    for path in out_dir.glob(f"{name}-{split}-*.tar"):
        path.unlink()
    state: dict[str, Any] = {"complete": False, "count": 0, "shards": []}
    manifest["splits"][split] = state
    manifest["complete"] = False
    write_manifest(out_dir, manifest)

    def commit(record: ShardRecord) -> None:
        state["shards"].append(record.to_dict())
        state["count"] += record.count
        write_manifest(out_dir, manifest)

    with AtomicShardWriter(out_dir, name, split, shard_size, on_shard=commit) as writer:
        for position, (key, arrays) in enumerate(chain([first], iterator)):
            if _layout(arrays) != layout:
                raise DataToolError(f"latent {key!r} has layout {_layout(arrays)}, expected {layout}")
            sample = {"__key__": key, **{f"{k}.npy": npy_bytes(np.asarray(v)) for k, v in arrays.items()}}
            writer.write(sample, position)
    state["complete"] = True
    manifest["complete"] = all(s["complete"] for s in manifest["splits"].values())
    write_manifest(out_dir, manifest)
    return manifest


def vae_record(vae_export: str | Path, weights_file: Path, latent_scale: float, bits: int,
               latent_shape: tuple[int, ...], image_resolution: int) -> dict[str, Any]:
    """What the manifest of latent shards stores about the VAE `vae_export` (weights in `weights_file`)."""
    if not weights_file.is_file():
        raise DataToolError(f"no VAE weights file {weights_file}; give vae_export=<a VAE export folder>")
    return {"path": str(vae_export), "weights_file": weights_file.name, "sha256": sha256_file(weights_file),
            "latent_scale": float(latent_scale), "bits": int(bits), "latent_shape": [int(n) for n in latent_shape],
            "image_resolution": int(image_resolution)}


def stored_vae_record(manifest: dict[str, Any] | None, where: str) -> dict[str, Any]:
    """The VAE record of a complete latent-shard manifest; one-sentence errors otherwise."""
    if manifest is None or manifest.get("kind") != "latents":
        raise DataToolError(f"{where} holds no latent-shard manifest; create one with `{ENCODE_COMMAND}`")
    if not manifest.get("complete"):
        raise DataToolError(f"the latent shards in {where} are incomplete (an interrupted encode?); rerun "
                            f"`{ENCODE_COMMAND}`")
    splits = manifest.get("splits", {})
    if any(not splits.get(s, {}).get("complete") for s in manifest.get("config", {}).get("encoded_splits", [])):
        raise DataToolError(f"the latent shards in {where} are incomplete (an interrupted encode?); rerun "
                            f"`{ENCODE_COMMAND}`")
    record = manifest.get("config", {}).get("vae")
    if not isinstance(record, dict) or not set(_VAE_VALUES) <= set(record):
        raise DataToolError(f"the latent shards in {where} do not say which VAE encoded them; re-encode them with "
                            f"`{ENCODE_COMMAND}`")
    for key, (ok, wanted) in _VAE_VALUES.items():
        if not ok(record[key]):
            raise DataToolError(f"the manifest of the latent shards in {where} gives config.vae.{key} the value "
                                f"{str(record[key])[:40]!r}, not {wanted}; re-encode them with `{ENCODE_COMMAND}`")
    return record


def _positive_number(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value) and value > 0


def _side(value: Any) -> bool:
    return type(value) is int and 0 < value <= MAX_SIDE


_VAE_VALUES: dict[str, tuple[Callable[[Any], bool], str]] = {  # what a reader takes from the VAE record
    "sha256": (lambda v: isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v) is not None, "a sha256 hex digest"),
    "latent_scale": (_positive_number, "a positive number"),
    "image_resolution": (_side, f"a side from 1 to {MAX_SIDE} pixels"),
    "latent_shape": (lambda v: isinstance(v, list) and 0 < len(v) <= 8 and all(_side(n) for n in v),
                     "a shape (a list of sides)"),
}


def check_same_vae(stored: dict[str, Any], vae_export: str | Path, weights_file: Path, latent_scale: float,
                   where: str) -> None:
    """Refuse latents (whose manifest recorded `stored`) unless `vae_export` (weights in `weights_file`) has the same
    weights and latent scale."""
    sha = sha256_file(weights_file) if weights_file.is_file() else "(no weights file)"
    if sha == stored["sha256"] and float(latent_scale) == float(stored["latent_scale"]):
        return
    raise DataToolError(
        f"the latent shards in {where} were encoded with the VAE {stored.get('path', '?')} (sha256 "
        f"{stored['sha256'][:12]}, latent scale {stored['latent_scale']:.6g}), not with vae_export={vae_export} "
        f"(sha256 {sha[:12]}, latent scale {float(latent_scale):.6g}); give the VAE they were encoded with, or "
        f"re-encode them with `python -m latent_ndm.encode vae_export={vae_export} shards=<image shards>`"
    )
