"""Reading shards from any location, as stages of a webdataset pipeline.

A shard is read by three stages, composed with webdataset's `DataPipeline` by the data module and used alone by the
command-line tools (`iter_shard_samples`):

    {"url": location}  --open_shards-->  + "stream"  --tar_members-->  {"fname", "data", "__url__"}, ..., {}
                       --webdataset's group_by_keys-->  {"__key__", "__url__", field: bytes, ...}

`open_shards` opens local files, ``http(s)://`` URLs (`data_tools.http_stream`: retries, stall timeout, resume
after a cut), ``pipe:`` commands (webdataset's `gopen`, with the same stall timeout) and ``s3://`` / ``gs://`` URLs
(through the `aws` / `gsutil` clients). `tar_members` is the tar expander (`data_tools.tarread`). Errors go to a
webdataset-style handler (``handler(exn) -> True`` continues with the next shard); every error is a `ShardReadError`
naming the shard.
"""

from __future__ import annotations

import io
import os
import select
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from webdataset.gopen import gopen
from webdataset.handlers import reraise_exception
from webdataset.tariterators import group_by_keys

from data_tools.http_stream import DEFAULT_READ, HttpStream, ReadOptions, ShardReadError
from data_tools.locations import HTTP_SCHEMES, OBJECT_STORES, join, local_path, object_store_command, scheme
from data_tools.tarread import iter_tar_members

BUFFER = 1 << 20
Handler = Callable[[BaseException], bool]


class TimedPipe(io.RawIOBase):
    """The standard output of a webdataset ``pipe:`` stream, read with a stall timeout.

    No byte for `timeout` seconds kills the command; a non-zero exit status is an error naming the command.
    """

    def __init__(self, url: str, timeout: float) -> None:
        super().__init__()
        self.url, self.timeout = url, timeout
        self.pipe = gopen(url, "rb")
        self.fd = self.pipe.stream.fileno()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        ready, _, _ = select.select([self.fd], [], [], self.timeout)
        if not ready:
            self._kill()
            raise ShardReadError(self.url, f"stalled (no data for {self.timeout:g} s); the command was stopped")
        data = os.read(self.fd, len(buffer))
        buffer[:len(data)] = data
        if not data:
            status = self.pipe.proc.wait()
            if status != 0:
                raise ShardReadError(self.url, f"the command exited with status {status}", missing=True)
        return len(data)

    def _kill(self) -> None:
        if self.pipe.proc.poll() is None:
            self.pipe.proc.kill()
        self.pipe.proc.wait()

    def close(self) -> None:
        if not self.closed:
            self._kill()  # a command whose output was not read to the end
            self.pipe.stream.close()
        super().close()


def open_location(location: str | Path, options: ReadOptions = DEFAULT_READ) -> BinaryIO:
    """A buffered binary stream of `location` (see the module doc); `ShardReadError` when it cannot be opened."""
    text, kind = str(location), scheme(location)
    try:
        if kind in HTTP_SCHEMES:
            return io.BufferedReader(HttpStream(text, options), BUFFER)
        if kind in OBJECT_STORES or kind == "pipe":
            command = object_store_command(text) if kind in OBJECT_STORES else text
            return io.BufferedReader(TimedPipe(command, options.timeout), BUFFER)
        return open(local_path(text), "rb", buffering=BUFFER)
    except FileNotFoundError as err:
        raise ShardReadError(text, "no such file", missing=True) from err
    except ShardReadError:
        raise
    except OSError as err:
        raise ShardReadError(text, str(err)) from err


def read_bytes(location: str | Path, options: ReadOptions = DEFAULT_READ) -> bytes:
    """The whole content of `location`."""
    with open_location(location, options) as f:
        try:
            return f.read()
        except ShardReadError:
            raise
        except OSError as err:
            raise ShardReadError(str(location), str(err)) from err


def read_optional(location: str | Path, options: ReadOptions = DEFAULT_READ) -> bytes | None:
    """The content of `location`, or None when it does not exist (a missing file, HTTP 404/410, a failing client)."""
    try:
        return read_bytes(location, options)
    except ShardReadError as err:
        if err.missing:
            return None
        raise


def open_shards(sources: Iterable[dict[str, Any]], options: ReadOptions = DEFAULT_READ,
                handler: Handler = reraise_exception) -> Iterator[dict[str, Any]]:
    """Pipeline stage: ``{"url": location}`` -> the same dict with an open ``stream``."""
    for source in sources:
        try:
            stream = open_location(source["url"], options)
        except ShardReadError as err:
            if handler(err):
                continue
            break
        yield {**source, "stream": stream}


def tar_members(sources: Iterable[dict[str, Any]], handler: Handler = reraise_exception) -> Iterator[dict[str, Any]]:
    """Pipeline stage (a tar expander): every regular member of each open shard as ``{"fname", "data", "__url__"}``,
    then ``{}`` (the end-of-shard marker webdataset's `group_by_keys` expects).

    The members of a sample are passed on once the next sample begins (or the shard ends cleanly), so when a shard
    fails the samples before the fault are kept whole and the one it cut into is dropped, never passed on with
    fields missing; the error (a `ShardReadError`) goes to `handler`.
    """
    for source in sources:
        url, stream = source["url"], source["stream"]
        held: list[dict[str, Any]] = []
        held_key = None
        try:
            for name, data in iter_tar_members(stream, "the tar"):
                folder, _, base = name.rpartition("/")
                key = (folder, base.partition(".")[0])  # the sample key, as webdataset's base_plus_ext cuts it
                if key != held_key:
                    yield from held
                    held, held_key = [], key
                held.append({"fname": name, "data": data, "__url__": url})
            yield from held
        except (ValueError, OSError) as err:
            error = err if isinstance(err, ShardReadError) else ShardReadError(url, str(err))
            if not handler(error):
                return
        finally:
            stream.close()
        yield {}


def shard_samples(locations: Iterable[str], options: ReadOptions = DEFAULT_READ,
                  handler: Handler = reraise_exception) -> Iterator[dict[str, Any]]:
    """Samples (``{"__key__", "__url__", field: bytes}``) of the shards at `locations`, in order."""
    sources = ({"url": str(loc)} for loc in locations)
    return group_by_keys(tar_members(open_shards(sources, options, handler), handler), handler=handler)


def iter_shard_samples(location: str | Path, options: ReadOptions = DEFAULT_READ) -> Iterator[dict[str, Any]]:
    """Samples of one shard; a damaged or unreachable shard raises `ShardReadError`."""
    return shard_samples([str(location)], options)


def manifest_location(folder: str | Path) -> str:
    return join(folder, "manifest.json")
