"""``manifest.json``: the record of a shard directory (one dataset per directory).

Layout (all keys sorted when written)::

    {"format": 1, "kind": "images" | "latents", "name": ..., "complete": bool,
     "config": {...everything that determines the shards' bytes...},
     "splits": {"train": {"complete": bool, "count": int, "shards": [ShardRecord, ...]}, ...},
     "skipped": [{"file": ..., "reason": ..., "split": ..., "position": ...}, ...]}

While a run is in progress the manifest is rewritten (atomically) after every shard, with
``complete: false``; it doubles as the journal a rerun resumes from.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from data_tools.errors import DataToolError
from data_tools.files import TMP_SUFFIX, atomic_write_json, sha256_file
from data_tools.http_stream import ReadOptions, ShardReadError
from data_tools.locations import is_remote, join, scheme
from data_tools.reading import read_optional

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
PREVIEW_NAME = "preview.png"


def manifest_path(out_dir: Path) -> Path:
    return Path(out_dir) / MANIFEST_NAME


def read_manifest(out_dir: str | Path, options: ReadOptions | None = None) -> dict[str, Any] | None:
    """The manifest of the shard folder `out_dir` (a local folder or a URL prefix), or None if there is none; a
    corrupt one is a `DataToolError`, and so is a remote one that cannot be read."""
    if is_remote(out_dir):
        where = join(out_dir, MANIFEST_NAME)
        if scheme(out_dir) == "pipe":
            return None
        try:
            data = read_optional(where, options or ReadOptions())
        except ShardReadError as err:
            raise DataToolError(f"cannot read the manifest {err}; check the address and that the server is up") from err
        if data is None:
            return None
        return _parse_manifest(data, where)
    path = manifest_path(Path(out_dir))
    if not path.is_file():
        return None
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DataToolError(f"{path} is not readable ({err}); delete it or choose another directory") from err
    return _parse_manifest(data, str(path))


def _parse_manifest(data: bytes, where: str) -> dict[str, Any]:
    try:
        manifest = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataToolError(f"{where} is not readable JSON ({err}); delete it or choose another directory") from err
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_VERSION:
        raise DataToolError(f"{where} is not a data_tools manifest (format {FORMAT_VERSION})")
    return manifest


def write_manifest(out_dir: Path, manifest: dict[str, Any]) -> None:
    atomic_write_json(manifest_path(out_dir), manifest)


def new_manifest(kind: str, name: str, config: dict[str, Any]) -> dict[str, Any]:
    return {"format": FORMAT_VERSION, "kind": kind, "name": name, "complete": False,
            "config": config, "splits": {}, "skipped": []}


def _own_file_pattern(name: str) -> re.Pattern[str]:
    shard = rf"{re.escape(name)}-[A-Za-z0-9_]+-\d{{6,}}\.tar"
    own = rf"({shard}|{re.escape(MANIFEST_NAME)}|{re.escape(PREVIEW_NAME)})"
    return re.compile(rf"^{own}({re.escape(TMP_SUFFIX)})?$")


def foreign_files(out_dir: Path, name: str) -> list[str]:
    """Entries of `out_dir` that a run writing dataset `name` did not create."""
    own = _own_file_pattern(name)
    return sorted(p.name for p in Path(out_dir).iterdir() if not own.match(p.name))


def remove_temporaries(out_dir: Path) -> None:
    """Delete ``*.tmp`` leftovers of a killed run."""
    for path in Path(out_dir).glob(f"*{TMP_SUFFIX}"):
        path.unlink(missing_ok=True)


def shard_is_intact(out_dir: Path, record: dict[str, Any], full: bool = True) -> bool:
    """Whether the shard of `record` exists with its recorded size (and sha256 when `full`)."""
    path = Path(out_dir) / record["file"]
    if not path.is_file() or path.stat().st_size != record["nbytes"]:
        return False
    return not full or sha256_file(path) == record["sha256"]


def prepare_out_dir(out_dir: Path, kind: str, name: str, config: dict[str, Any]) -> dict[str, Any] | None:
    """Create `out_dir` or check it holds this very dataset; return the existing manifest, if any.

    Raises a `DataToolError` when the directory holds other files or a manifest of another configuration.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise DataToolError(f"output {out_dir} exists and is not a directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    others = foreign_files(out_dir, name)
    if others:
        shown = ", ".join(others[:3]) + (" ..." if len(others) > 3 else "")
        raise DataToolError(f"output directory {out_dir} holds other data ({shown}); choose an empty directory")
    manifest = read_manifest(out_dir)
    if manifest is None:
        if any(out_dir.glob("*.tar")):
            raise DataToolError(f"output directory {out_dir} holds shards but no {MANIFEST_NAME}; "
                                "choose an empty directory")
        return None
    if manifest.get("kind") != kind or manifest.get("name") != name or manifest.get("config") != config:
        diff = _config_diff(manifest, kind, name, config)
        raise DataToolError(f"output directory {out_dir} holds a different dataset (differs in {diff}); "
                            "choose an empty directory")
    return manifest


def _config_diff(manifest: dict[str, Any], kind: str, name: str, config: dict[str, Any]) -> str:
    wanted = {"kind": kind, "name": name, **config}
    found = {"kind": manifest.get("kind"), "name": manifest.get("name"), **(manifest.get("config") or {})}
    keys = sorted(k for k in set(wanted) | set(found) if wanted.get(k) != found.get(k))
    return ", ".join(keys)
