"""Where images come from: a folder tree or a .zip of JPEG/PNG files (the synthetic set lives elsewhere).

A source lists its candidate files in sorted order (the only input to the split, together with the seed)
and loads them by index. Loading returns PIL images or `UnusableImage` reasons, never raises for bad files.
"""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from data_tools.errors import DataToolError
from data_tools.imageproc import UnusableImage, decode_image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


@dataclass
class Skip:
    """A file left out of the shards, and why."""

    file: str
    reason: str


@dataclass
class Listing:
    """Sorted candidate files, files ignored up front (not images), and a fingerprint of the file list."""

    names: list[str]
    ignored: list[Skip] = field(default_factory=list)
    fingerprint: str = ""


class ImageSource(Protocol):
    """What the sharder needs from an image source."""

    def describe(self) -> dict[str, Any]: ...

    def listing(self) -> Listing: ...

    def load(self, indices: Sequence[int]) -> list[Image.Image | UnusableImage]: ...


def _is_hidden(rel: str) -> bool:
    return any(part.startswith(".") or part == "__MACOSX" for part in Path(rel).parts)


def _split_candidates(entries: list[tuple[str, int]]) -> Listing:
    """Sort (name, size) entries into image candidates and ignored files; fingerprint names and sizes."""
    entries = sorted(e for e in entries if not _is_hidden(e[0]))
    names = [n for n, _ in entries if n.lower().endswith(IMAGE_EXTENSIONS)]
    ignored = [Skip(n, "not a JPEG/PNG file (extension)") for n, _ in entries
               if not n.lower().endswith(IMAGE_EXTENSIONS)]
    digest = hashlib.sha256("".join(f"{n}\t{s}\n" for n, s in entries).encode("utf-8"))
    return Listing(names=names, ignored=ignored, fingerprint=digest.hexdigest())


class _FileListSource:
    """A source whose files are named entries with a size (`_entries`) and bytes (`_read`): the listing and the
    loading by index are the same for every kind of container."""

    _names: list[str] | None = None

    def _entries(self) -> list[tuple[str, int]]:
        raise NotImplementedError

    def _read(self, name: str) -> bytes:
        raise NotImplementedError

    def listing(self) -> Listing:
        listing = _split_candidates(self._entries())
        self._names = listing.names
        return listing

    def load(self, indices: Sequence[int]) -> list[Image.Image | UnusableImage]:
        """Decoded images (or the reason each one is unusable), never raising for a bad file."""
        if self._names is None:
            self.listing()
        results: list[Image.Image | UnusableImage] = []
        for i in indices:
            try:
                results.append(decode_image(self._read(self._names[i])))
            except UnusableImage as err:
                results.append(err)
            except OSError as err:
                results.append(UnusableImage(f"unreadable file ({err.strerror or err})"))
        return results


class FolderSource(_FileListSource):
    """All files below a directory (recursively); relative POSIX paths are the file names."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._names = None

    def describe(self) -> dict[str, Any]:
        return {"type": "folder", "path": str(self.root)}

    def _entries(self) -> list[tuple[str, int]]:
        return [(p.relative_to(self.root).as_posix(), p.stat().st_size) for p in self.root.rglob("*") if p.is_file()]

    def _read(self, name: str) -> bytes:
        return (self.root / name).read_bytes()


class ZipSource(_FileListSource):
    """The members of a .zip archive; opened lazily, once per process."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._names = None
        self._zip: zipfile.ZipFile | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "_names": self._names, "_zip": None}

    def describe(self) -> dict[str, Any]:
        return {"type": "zip", "path": str(self.path)}

    def _archive(self) -> zipfile.ZipFile:
        if self._zip is None:
            try:
                self._zip = zipfile.ZipFile(self.path)
            except (OSError, zipfile.BadZipFile) as err:
                raise DataToolError(f"cannot open {self.path} as a zip archive ({err})") from err
        return self._zip

    def _entries(self) -> list[tuple[str, int]]:
        return [(i.filename, i.file_size) for i in self._archive().infolist() if not i.is_dir()]

    def _read(self, name: str) -> bytes:
        try:
            return self._archive().read(name)
        except (zipfile.BadZipFile, EOFError) as err:
            raise UnusableImage(f"corrupt zip member ({err})") from err


def open_source(path: Path) -> FolderSource | ZipSource:
    """A `FolderSource` for a directory, a `ZipSource` for a .zip file; anything else is an error."""
    path = Path(path)
    if path.is_dir():
        return FolderSource(path)
    if path.is_file() and zipfile.is_zipfile(path):
        return ZipSource(path)
    if not path.exists():
        raise DataToolError(f"source {path} does not exist")
    raise DataToolError(f"source {path} must be a directory or a .zip file of JPEG/PNG images")
