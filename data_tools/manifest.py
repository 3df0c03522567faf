"""``manifest.json``: the record of a shard directory (one dataset per directory).

Layout (all keys sorted when written)::

    {"format": 1, "kind": "images" | "latents", "name": ..., "complete": bool,
     "config": {...everything that determines the shards' bytes...},
     "splits": {"train": {"complete": bool, "count": int, "shards": [ShardRecord, ...]}, ...},
     "skipped": [{"file": ..., "reason": ..., "split": ..., "position": ...}, ...]}

While a run is in progress the manifest is rewritten (atomically) after every shard, with
``complete: false``; it doubles as the journal a rerun resumes from.

A manifest may come from someone else (a downloaded folder, a bucket, a web server), so reading one checks what it
names before anything uses it: the dataset and split names are the characters `data_tools` writes, every shard is
named ``{name}-{split}-NNNNNN.tar`` (a file beside the manifest: never a path, a URL or a command), every count
is a whole number from 0 to `MAX_COUNT`, and every value a reader uses has the type and range data_tools writes
(`check_values`); a bad one is one sentence naming the file and the key. Counts that lie about the tars are caught
where the tars are read.
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


class LongNumber:
    """A JSON number written with more digits than any value of a manifest has, kept as its length only: Python
    refuses to convert one of over 4,300 digits (and a shorter one is no count either). It is no int, so the check
    of the key that holds it names that key."""

    def __init__(self, text: str) -> None:
        self.digits = len(text.lstrip("-"))

    def __repr__(self) -> str:
        return f"a {self.digits}-digit number"


def _json_int(text: str) -> int | LongNumber:
    return int(text) if len(text) <= 24 else LongNumber(text)


def _parse_manifest(data: bytes, where: str) -> dict[str, Any]:
    try:
        manifest = json.loads(data.decode("utf-8"), parse_int=_json_int)
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise DataToolError(f"{where} is not readable JSON ({err}); delete it or choose another directory") from err
    if not isinstance(manifest, dict) or type(manifest.get("format")) is not int \
            or manifest["format"] != FORMAT_VERSION:
        raise DataToolError(f"{where} is not a data_tools manifest (format {FORMAT_VERSION})")
    check_names(manifest, where)
    check_values(manifest, where)
    return manifest


DATASET_NAME = re.compile(r"[A-Za-z0-9_-]+")
SPLIT_NAME = re.compile(r"[A-Za-z0-9_]+")
_SHARD_INDEX = re.compile(r"\d{6,}")
MAX_COUNT = 10**12  # samples in a shard or split: far above any dataset, far below what breaks a sum or a progress bar
MAX_NBYTES = 1 << 50  # bytes in one shard (1 PiB)
MAX_SIDE = 1 << 16  # an image resolution, or one side of a latent array


def _whole(value: Any, most: int = MAX_COUNT) -> bool:
    """A whole number from 0 to `most` (JSON gives ints, bools and floats apart; `True` is no count)."""
    return type(value) is int and 0 <= value <= most


def check_names(manifest: dict[str, Any], where: str) -> None:
    """Refuse (one-sentence `DataToolError`) a manifest whose dataset, split or shard names are not the ones
    `data_tools` writes, or whose counts are not whole numbers from 0 to `MAX_COUNT` (see the module doc)."""
    name = manifest.get("name")
    if not isinstance(name, str) or not DATASET_NAME.fullmatch(name):
        raise DataToolError(f"{where} names its dataset {str(name)[:60]!r}, not letters, digits, '-' or '_'; it is "
                            "not a manifest data_tools wrote, so nothing it lists is read")
    splits = manifest.get("splits", {})
    if not isinstance(splits, dict):
        raise DataToolError(f"{where} is not a data_tools manifest (its splits are not a mapping)")
    for split, state in splits.items():
        if not SPLIT_NAME.fullmatch(split) or not isinstance(state, dict) or not isinstance(state.get("shards"), list):
            raise DataToolError(f"{where} has a malformed split {split[:40]!r} (a split is letters, digits or '_', "
                                "with a count and a list of shards); nothing it lists is read")
        if not _whole(state.get("count")):
            raise _refuse(where, f"splits.{split}.count", state.get("count"), f"a whole number from 0 to {MAX_COUNT}")
        prefix = f"{name}-{split}-"
        for i, record in enumerate(state["shards"]):
            file = record.get("file") if isinstance(record, dict) else None
            named = isinstance(file, str) and file.startswith(prefix) and file.endswith(".tar") \
                and _SHARD_INDEX.fullmatch(file[len(prefix):-len(".tar")]) is not None
            if not named:
                raise DataToolError(f"{where} lists a shard named {str(file)[:60]!r}, not a data_tools shard name "
                                    f"({prefix}NNNNNN.tar); a manifest names files beside it, never paths, URLs or "
                                    "commands, so nothing it lists is read")
            for key, most in (("count", MAX_COUNT), ("nbytes", MAX_NBYTES)):  # a count is needed, a size is not
                if not _whole(record.get(key, None if key == "count" else 0), most):
                    raise _refuse(where, f"splits.{split}.shards[{i}].{key} ({file})", record.get(key),
                                  f"a whole number from 0 to {most}")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _refuse(where: str, key: str, value: Any, wanted: str) -> DataToolError:
    return DataToolError(f"{where} gives {key} the value {_shown(value)}, not {wanted}; it is not a manifest "
                         "data_tools wrote (or it was changed since), so nothing it lists is read")


def _side_list(value: Any) -> bool:
    return isinstance(value, list) and len(value) <= 8 and all(_whole(n, MAX_SIDE) for n in value)


_NAME = re.compile(r"[A-Za-z0-9_]+")
_CONFIG_VALUES: dict[str, tuple[Any, str]] = {  # key of "config" -> (test of its value, what the value should be)
    "resolution": (lambda v: v is None or (_whole(v, MAX_SIDE) and v > 0), f"a side from 1 to {MAX_SIDE} pixels"),
    "shard_size": (lambda v: _whole(v) and v > 0, f"a whole number from 1 to {MAX_COUNT}"),
    "split": (lambda v: isinstance(v, dict) and all(_whole(n) for n in v.values()), "a mapping of split to count"),
    "fields": (lambda v: isinstance(v, dict) and all(isinstance(k, str) and _NAME.fullmatch(k) and _side_list(s)
                                                     for k, s in v.items()),
               f"a mapping of field name (letters, digits, '_') to a shape (at most 8 sides of 0 to {MAX_SIDE})"),
    "dtypes": (lambda v: isinstance(v, dict) and all(isinstance(d, str) for d in v.values()),
               "a mapping of field name to dtype"),
    "encoded_splits": (lambda v: isinstance(v, list) and all(isinstance(n, str) for n in v), "a list of split names"),
    "vae": (lambda v: isinstance(v, dict), "a mapping (the record of a VAE)"),
}


def check_values(manifest: dict[str, Any], where: str) -> None:
    """Refuse (one-sentence `DataToolError` naming the key) a manifest whose values that readers use are not of the
    type and range `data_tools` writes: the kind, the completion flags, the config's resolution, shard size, split
    counts, latent fields, and the list of skipped files. Names and counts are `check_names`'s."""
    if manifest.get("kind") not in ("images", "latents"):
        raise _refuse(where, "kind", manifest.get("kind"), "'images' or 'latents'")
    if type(manifest.get("complete")) is not bool:
        raise _refuse(where, "complete", manifest.get("complete"), "true or false")
    for split, state in manifest.get("splits", {}).items():
        if type(state.get("complete", False)) is not bool:
            raise _refuse(where, f"splits.{split}.complete", state["complete"], "true or false")
        for i, record in enumerate(state["shards"]):
            if not isinstance(record.get("sha256", ""), str):
                raise _refuse(where, f"splits.{split}.shards[{i}].sha256", record["sha256"], "a hex digest")
    config = manifest.get("config")
    if not isinstance(config, dict):
        raise _refuse(where, "config", config, "a mapping")
    for key, (ok, wanted) in _CONFIG_VALUES.items():
        if key in config and not ok(config[key]):
            raise _refuse(where, f"config.{key}", config[key], wanted)
    skipped = manifest.get("skipped", [])
    if not isinstance(skipped, list):
        raise _refuse(where, "skipped", skipped, "a list")
    for i, entry in enumerate(skipped):
        fine = isinstance(entry, dict) and isinstance(entry.get("file"), str) and isinstance(entry.get("reason"), str) \
            and (entry.get("split") is None or isinstance(entry["split"], str)) \
            and (entry.get("position") is None or _whole(entry["position"]))
        if not fine:
            raise _refuse(where, f"skipped[{i}]", entry, "a record {file, reason, split, position}")


def write_manifest(out_dir: Path, manifest: dict[str, Any]) -> None:
    atomic_write_json(manifest_path(out_dir), manifest)


def new_manifest(kind: str, name: str, config: dict[str, Any]) -> dict[str, Any]:
    return {"format": FORMAT_VERSION, "kind": kind, "name": name, "complete": False,
            "config": config, "splits": {}, "skipped": []}


def _own_file_pattern(name: str) -> re.Pattern[str]:
    shard = rf"{re.escape(name)}-[A-Za-z0-9_]+-\d{{6,}}\.tar"
    own = rf"({shard}|{re.escape(MANIFEST_NAME)}|{re.escape(PREVIEW_NAME)})"
    tmp = re.escape(TMP_SUFFIX)
    return re.compile(rf"^({own}({tmp})?|\.{own}\.[A-Za-z0-9_]+{tmp})$")  # a shard's, or atomic_write's temporary


def foreign_files(out_dir: Path, name: str) -> list[str]:
    """Entries of `out_dir` that a run writing dataset `name` did not create."""
    own = _own_file_pattern(name)
    return sorted(p.name for p in Path(out_dir).iterdir() if not own.match(p.name))


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
