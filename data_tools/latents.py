"""Pre-encoded latents as shards: the same atomic writer and manifest, arrays stored as ``.npy``.

A latent sample is ``{key}.{field}.npy`` for each field (e.g. ``mean`` and ``logvar`` of the encoder),
keyed like the image it was encoded from, so ``stage=ndm`` can stream latents instead of re-encoding.
One call writes one split; calling again for another split adds it to the same directory's manifest.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable, Mapping
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

from data_tools.errors import DataToolError
from data_tools.manifest import new_manifest, prepare_out_dir, remove_temporaries, write_manifest
from data_tools.writer import AtomicShardWriter, ShardRecord

_FIELD = re.compile(r"^[A-Za-z0-9_]+$")


def npy_bytes(array: np.ndarray) -> bytes:
    """An array in .npy format (deterministic bytes)."""
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


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
