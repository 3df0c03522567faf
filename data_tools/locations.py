"""Where a shard lives: a local path or a URL, and the names derived from it.

A shard *location* is a string: a local path (``data/x-train-000000.tar``, or ``file:///...``), an ``http://`` or
``https://`` URL, an ``s3://`` or ``gs://`` URL (read through the ``aws`` / ``gsutil`` command-line clients, started
with an argument list: no shell ever sees the URL), or a ``pipe:COMMAND`` whose standard output is the shard
(webdataset's convention; a shell runs it, so it is accepted only where the user typed it, never from a file).
Folders are named the same way: the manifest of a shard lives beside it (``<folder>/manifest.json``), whatever the
scheme. Shard names read from a manifest must match the names `data_tools` writes (`data_tools.manifest`).

No I/O here except `expand_shards` on local paths (globbing) and `is_local_dir`.
"""

from __future__ import annotations

import glob
import shutil
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

import braceexpand

from data_tools.errors import DataToolError

HTTP_SCHEMES = ("http", "https")
OBJECT_STORES = {"s3": ("aws", ("aws", "s3", "cp", "{url}", "-"),
                        "pip install awscli, or give the shards as https:// URLs"),
                 "gs": ("gsutil", ("gsutil", "cat", "{url}"),
                        "install the Google Cloud CLI, or give the shards as https:// URLs")}
REMOTE_SCHEMES = (*HTTP_SCHEMES, *OBJECT_STORES, "pipe")

Location = str


def scheme(location: str | Path) -> str:
    """The URL scheme of `location` ("" for a local path; ``file:`` URLs count as local)."""
    text = str(location)
    if text.startswith("pipe:"):
        return "pipe"
    found = urlsplit(text).scheme.lower()
    return found if found in REMOTE_SCHEMES else ""


def is_remote(location: str | Path) -> bool:
    """Whether `location` is read over the network or through a command (not a local file)."""
    return scheme(location) != ""


def local_path(location: str | Path) -> Path:
    """The file system path of a local location (``file://`` URLs included)."""
    text = str(location)
    if text.startswith("file:"):
        return Path(url2pathname(urlsplit(text).path))
    return Path(text)


def join(folder: str | Path, name: str) -> Location:
    """`name` inside `folder` (a local folder or a URL prefix)."""
    if is_remote(folder):
        return f"{str(folder).rstrip('/')}/{name}"
    return str(local_path(folder) / name)


def split_location(location: str | Path) -> tuple[Location, str]:
    """(folder, file name) of a shard location; a ``pipe:`` command has no folder (``""``)."""
    text = str(location)
    if scheme(text) == "pipe":
        return "", text
    if is_remote(text):
        folder, _, name = text.rstrip("/").rpartition("/")
        return folder, name
    path = local_path(text)
    return str(path.parent), path.name


def folder_of(location: str | Path) -> Location:
    return split_location(location)[0]


def name_of(location: str | Path) -> str:
    return split_location(location)[1]


def is_local_dir(location: str | Path) -> bool:
    return not is_remote(location) and local_path(location).is_dir()


def object_store_command(url: str) -> list[str]:
    """The argument list of the client command that streams an ``s3://`` or ``gs://`` object to standard output
    (run without a shell: the URL is one argument, whatever characters it holds).

    A one-sentence `DataToolError` names the client when it is not installed.
    """
    kind = scheme(url)
    client, command, how = OBJECT_STORES[kind]
    executable = shutil.which(client)
    if executable is None:
        raise DataToolError(f"reading {url} needs the `{client}` command-line client, which is not on PATH; {how}")
    return [executable, *(url if part == "{url}" else part for part in command[1:])]


def expand_shards(spec: str | Path | Sequence[str | Path]) -> list[Location]:
    """Shard locations named by a folder, a glob or brace pattern (``x-{000000..000009}.tar``), a URL pattern
    (``https://host/x-{000000..000009}.tar``, braces only: a server cannot be globbed) or a list of them.

    A local folder means every ``*.tar`` in it; local names that do not exist are dropped, URLs are kept as given
    (they are checked when read). The result is sorted and free of duplicates; it may be empty.
    """
    specs = [spec] if isinstance(spec, str | Path) else list(spec)
    found: set[str] = set()
    for item in specs:
        item = str(item)
        if is_remote(item):
            found.update(item if scheme(item) == "pipe" else braceexpand.braceexpand(item))
            continue
        if local_path(item).is_dir():
            found.update(str(p) for p in local_path(item).glob("*.tar"))
            continue
        for pattern in braceexpand.braceexpand(str(local_path(item))):
            matches = glob.glob(pattern) if glob.has_magic(pattern) else [pattern]
            found.update(m for m in matches if Path(m).is_file())
    return sorted(found)
