"""Reading shards from any location, as stages of a webdataset pipeline.

A shard is read by three stages, composed with webdataset's `DataPipeline` by the data module and used alone by the
command-line tools (`iter_shard_samples`):

    {"url": location}  --open_shards-->  + "stream"  --tar_members-->  {"fname", "data", "__url__"}, ..., {}
                       --webdataset's group_by_keys-->  {"__key__", "__url__", field: bytes, ...}

`open_shards` opens local files, ``http(s)://`` URLs (`data_tools.http_stream`: retries, stall timeout, resume
after a cut), ``pipe:`` commands (run by a shell, webdataset's convention, with the same stall timeout) and ``s3://``
/ ``gs://`` URLs (through the `aws` / `gsutil` clients, started with an argument list and no shell). `tar_members`
is the tar expander (`data_tools.tarread`). Errors go to a webdataset-style handler (``handler(exn) -> True``
continues with the next shard); every error is a `ShardReadError` naming the shard.
"""

from __future__ import annotations

import io
import os
import select
import subprocess
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from webdataset.handlers import reraise_exception
from webdataset.tariterators import group_by_keys

from data_tools import tarread
from data_tools.http_stream import DEFAULT_READ, HttpStream, ReadOptions, ShardReadError
from data_tools.locations import HTTP_SCHEMES, OBJECT_STORES, local_path, object_store_command, scheme

BUFFER = 1 << 20
Handler = Callable[[BaseException], bool]


class SampleError(ValueError):
    """A sample that cannot be used as it is (e.g. two members for one field, which would silently drop one); the
    message names the shard and the sample's key. Handlers pass it over like an undecodable sample."""

    def __init__(self, location: str, key: str, reason: str) -> None:
        super().__init__(f"sample {key} in shard {location} {reason}")
        self.location, self.key = location, key


class TimedPipe(io.RawIOBase):
    """The standard output of a command, read with a stall timeout: a ``pipe:COMMAND`` location (a string, run by a
    shell: the user typed it) or a client's argument list (no shell).

    No byte for `timeout` seconds kills the command; a non-zero exit status is an error naming the location.
    """

    def __init__(self, url: str, command: str | list[str], timeout: float) -> None:
        super().__init__()
        self.url, self.timeout = url, timeout
        shell = isinstance(command, str)
        self.proc = subprocess.Popen(command, shell=shell, stdin=subprocess.DEVNULL,  # noqa: S602 - see above
                                     stdout=subprocess.PIPE, bufsize=0)
        self.fd = self.proc.stdout.fileno()

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
            status = self.proc.wait()
            if status != 0:
                raise ShardReadError(self.url, f"the command exited with status {status}", missing=True)
        return len(data)

    def _kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def close(self) -> None:
        if not self.closed:
            self._kill()  # a command whose output was not read to the end
            self.proc.stdout.close()
        super().close()


def open_location(location: str | Path, options: ReadOptions = DEFAULT_READ) -> BinaryIO:
    """A buffered binary stream of `location` (see the module doc); `ShardReadError` when it cannot be opened."""
    text, kind = str(location), scheme(location)
    try:
        if kind in HTTP_SCHEMES:
            return io.BufferedReader(HttpStream(text, options), BUFFER)
        if kind in OBJECT_STORES:
            return io.BufferedReader(TimedPipe(text, object_store_command(text), options.timeout), BUFFER)
        if kind == "pipe":
            return io.BufferedReader(TimedPipe(text, text.removeprefix("pipe:"), options.timeout), BUFFER)
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


class _Grouping:
    """The members of the sample being grouped from one shard, held until the next sample begins; the key of the
    sample last dropped (its further members are passed over); the bytes held, checked against the per-sample bound
    before a member is read (`admit`)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.held, self.key, self.fields, self.nbytes = limit, [], None, set(), 0
        self.dropped: tuple[str, str] | None = None

    def admit(self, name: str, size: int) -> bool:
        """Whether to read member `name` of `size` bytes: not for a dropped sample, nor past the per-sample bound."""
        key = sample_key(name)
        return key != self.dropped and (self.nbytes if key == self.key else 0) + size <= self.limit

    def begin(self, key: tuple[str, str]) -> list[dict[str, Any]]:
        """Start the sample `key`; return the members of the one before (complete: passed on)."""
        done, self.held, self.key, self.fields, self.nbytes = self.held, [], key, set(), 0
        return done

    def fault(self, field: str, data: bytes | None) -> str | None:
        """Why the sample cannot take the member `field` (its content `data`, None: refused by `admit`), or None."""
        if data is None:
            return (f"has members of more than {self.limit} bytes together (the most read for one sample); the shard "
                    "is damaged or not made by data_tools")
        if field and field in self.fields:
            return f"has two '{field}' members"
        return None

    def drop(self, key: tuple[str, str]) -> None:
        self.held, self.key, self.fields, self.nbytes, self.dropped = [], None, set(), 0, key


def sample_key(name: str) -> tuple[str, str]:
    """(folder, stem) of a member name: the sample key, as webdataset's base_plus_ext cuts it."""
    folder, _, base = name.rpartition("/")
    return folder, base.partition(".")[0]


def tar_members(sources: Iterable[dict[str, Any]], handler: Handler = reraise_exception) -> Iterator[dict[str, Any]]:
    """Pipeline stage (a tar expander): every regular member of each open shard as ``{"fname", "data", "__url__"}``,
    then ``{}`` (the end-of-shard marker webdataset's `group_by_keys` expects).

    The members of a sample are passed on once the next sample begins (or the shard ends cleanly), so when a shard
    fails the samples before the fault are kept whole and the one it cut into is dropped, never passed on with
    fields missing; the error (a `ShardReadError`) goes to `handler`. A sample with two members for one field, or
    whose members declare more than `data_tools.tarread.MAX_SAMPLE_BYTES` together (checked before the member that
    would pass the bound is read), is dropped whole, and a `SampleError` naming it goes to `handler`.
    """
    for source in sources:
        url, stream = source["url"], source["stream"]
        group = _Grouping(tarread.MAX_SAMPLE_BYTES)
        try:
            for name, data in _members(stream, url, group.admit):
                key = sample_key(name)
                if key == group.dropped:
                    continue
                if key != group.key:
                    yield from group.begin(key)
                field = name.rpartition("/")[2].partition(".")[2].lower()
                fault = group.fault(field, data)
                if fault is not None:
                    group.drop(key)
                    if not handler(SampleError(url, f"{key[0]}/{key[1]}" if key[0] else key[1], fault)):
                        return
                    continue
                group.fields.add(field)
                group.nbytes += len(data)
                group.held.append({"fname": name, "data": data, "__url__": url})
            yield from group.held
        except ShardReadError as err:
            if not handler(err):
                return
        finally:
            stream.close()
        yield {}


def _members(stream: BinaryIO, url: str, admit: tarread.Admit | None = None) -> Iterator[tuple[str, bytes | None]]:
    """(name, content) of every regular member of one open shard (see `iter_tar_members` for `admit`); whatever goes
    wrong reading it is a `ShardReadError` naming the shard."""
    try:
        yield from tarread.iter_tar_members(stream, "the tar", admit)
    except ShardReadError:
        raise
    except (ValueError, OSError, MemoryError) as err:
        raise ShardReadError(url, str(err)) from err


def shard_samples(locations: Iterable[str], options: ReadOptions = DEFAULT_READ,
                  handler: Handler = reraise_exception) -> Iterator[dict[str, Any]]:
    """Samples (``{"__key__", "__url__", field: bytes}``) of the shards at `locations`, in order."""
    sources = ({"url": str(loc)} for loc in locations)
    return group_by_keys(tar_members(open_shards(sources, options, handler), handler), handler=handler)


def iter_shard_samples(location: str | Path, options: ReadOptions = DEFAULT_READ) -> Iterator[dict[str, Any]]:
    """Samples of one shard; a damaged or unreachable shard raises `ShardReadError`."""
    return shard_samples([str(location)], options)
