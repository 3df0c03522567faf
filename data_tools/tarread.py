"""A fast sequential reader for webdataset tar shards.

Python's `tarfile` spends ~70 us per member on header handling (webdataset adds ~50 us per sample on top),
more than opening a cached loose file costs. Shards are read strictly front to back, so this reader parses
the 512-byte headers itself: ustar / GNU regular files, plus the PAX ('x', 'g') and GNU long-name ('L')
records other tools write. Corrupt headers (bad checksum), truncated streams and members that declare an impossible
size (negative, or more than `MAX_MEMBER_BYTES`: a shard is data someone else may have made) raise `ValueError`
before anything is allocated for them. A caller may also refuse a member by its name and declared size before its
bytes are read (`admit`): the grouping of members into samples (`data_tools.reading.tar_members`) does, so that the
members of one sample hold at most `MAX_SAMPLE_BYTES` together.

It reads any binary stream (a local file, an HTTP response, a pipe) and is used as the tar expander stage of the
webdataset pipeline (`data_tools.reading.tar_members`).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from typing import BinaryIO

BLOCK = 512
MAX_MEMBER_BYTES = 1 << 28  # 256 MiB: far above any image or latent of a sample, far below a machine's memory
# All members of one sample together: the same 256 MiB. A sample of this project is one image (a 1024 px PNG is
# ~3 MiB) or a few latent arrays; without a bound per sample, 12 members just under `MAX_MEMBER_BYTES` held 3 GiB.
MAX_SAMPLE_BYTES = 1 << 28
SKIP_CHUNK = 1 << 20  # a refused member's bytes are read past in pieces of this size, never held whole
_ZERO_BLOCK = bytes(BLOCK)
_REGULAR = (b"0", b"\0", b"7")


def _octal(field: bytes) -> int:
    """A numeric header field: NUL/space-terminated octal, or GNU base-256 when the high bit is set."""
    if field[0] & 0x80:
        return int.from_bytes(field[1:], "big")
    digits = field.split(b"\0", 1)[0].strip()
    return int(digits, 8) if digits else 0


def _checksum_ok(header: bytes) -> bool:
    """The header checksum (chksum field counted as spaces), unsigned or, as some old tars wrote it, signed."""
    stored = _octal(header[148:156])
    if stored == sum(header[:148]) + 8 * 32 + sum(header[156:]):
        return True
    signed = struct.unpack("148b8x356b", header)
    return stored == sum(signed) + 8 * 32


def _pax_records(data: bytes) -> dict[str, str]:
    """Parse ``"<len> <key>=<value>\\n"`` records of a PAX extended header."""
    records, pos = {}, 0
    while pos < len(data) and data[pos:pos + 1] != b"\0":
        space = data.index(b" ", pos)
        length = int(data[pos:space])
        if length <= space - pos:
            raise ValueError(f"a PAX record of length {length} at byte {pos} is malformed")
        key, _, value = data[space + 1:pos + length - 1].partition(b"=")
        records[key.decode("utf-8")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return records


def _read_exact(f: BinaryIO, n: int, where: str) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise ValueError(f"{where} is truncated (a tar member ends early)")
    return data


def _skip_exact(f: BinaryIO, n: int, where: str) -> None:
    """Read past `n` bytes of `f`, at most `SKIP_CHUNK` at a time."""
    while n > 0:
        n -= len(_read_exact(f, min(n, SKIP_CHUNK), where))


Admit = Callable[[str, int], bool]


def iter_tar_members(stream: BinaryIO, where: str = "the tar stream", admit: Admit | None = None
                     ) -> Iterator[tuple[str, bytes | None]]:
    """Yield (member name, content) for every regular file of a tar stream, in order.

    `where` names the shard in errors. The stream must end with the end-of-archive block (a zero block): a tar
    that stops between members is truncated, not complete. When `admit` is given, it is asked ``admit(name,
    declared size)`` before a regular member's bytes are read; a refused member's bytes are read past without being
    kept, and it is yielded with None as its content. Without `admit` every content is bytes.
    """
    pax: dict[str, str] = {}
    long_name: str | None = None
    offset = 0
    while True:
        header = stream.read(BLOCK)
        if header == _ZERO_BLOCK:
            return
        if not header:
            raise ValueError(f"{where} is truncated (it ends at byte {offset}, between members, without the "
                             "end-of-archive block)")
        if len(header) != BLOCK or not _checksum_ok(header):
            raise ValueError(f"{where} has a corrupt tar header at byte {offset}")
        size = int(pax["size"]) if "size" in pax else _octal(header[124:136])
        if not 0 <= size <= MAX_MEMBER_BYTES:
            raise ValueError(f"{where} has a tar member at byte {offset} that declares {size} bytes (at most "
                             f"{MAX_MEMBER_BYTES} are read); the shard is damaged or not made by data_tools")
        kind = header[156:157]
        name = (pax.get("path") or long_name or _header_name(header)) if kind in _REGULAR else ""
        if admit is not None and kind in _REGULAR and not admit(name, size):
            _skip_exact(stream, size + (-size % BLOCK), where)
            offset += BLOCK + size + (-size % BLOCK)
            yield name, None
            pax, long_name = {}, None
            continue
        data = _read_exact(stream, size, where)
        _read_exact(stream, -size % BLOCK, where)
        offset += BLOCK + size + (-size % BLOCK)
        if kind == b"x":
            pax = _pax_records(data)
        elif kind == b"L":
            long_name = data.rstrip(b"\0").decode("utf-8", "surrogateescape")
        elif kind != b"g":
            if kind in _REGULAR:
                yield name, data
            pax, long_name = {}, None


def _header_name(header: bytes) -> str:
    name = header[:100].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
    if header[257:262] == b"ustar":
        prefix = header[345:500].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        if prefix:
            return f"{prefix}/{name}"
    return name
