"""The fast tar reader agrees with `tarfile` on ustar, PAX and GNU archives and rejects damaged ones; as the expander
stage of the webdataset pipeline it gives the samples webdataset's own expander gives."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
import webdataset as wds

from data_tools.reading import iter_shard_samples
from data_tools.tarread import iter_tar_members


def _tar(path: Path, fmt: int, members: list[tuple[str, bytes]], mtime: float = 0) -> Path:
    with tarfile.open(path, "w", format=fmt) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), mtime
            tar.addfile(info, io.BytesIO(data))
        folder = tarfile.TarInfo("a_directory")
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
    return path


MEMBERS = [("d/" + "x" * 120 + ".png", b"abc"), ("d/" + "x" * 120 + ".json", b"{}"), ("k\u00e9y.TXT", b"hi"),
           ("big.npy", bytes(100_000)), ("000001.png", b"")]


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.PAX_FORMAT, tarfile.GNU_FORMAT])
def test_members_match_tarfile(tmp_path: Path, fmt: int) -> None:
    members = MEMBERS if fmt != tarfile.USTAR_FORMAT else [m for m in MEMBERS if len(m[0]) < 100]
    path = _tar(tmp_path / "a.tar", fmt, members, mtime=1.5 if fmt == tarfile.PAX_FORMAT else 0)
    with open(path, "rb") as f:
        assert list(iter_tar_members(f, str(path))) == members


def test_samples_match_webdataset(tmp_path: Path) -> None:
    path = tmp_path / "s.tar"
    with wds.TarWriter(str(path)) as writer:  # webdataset's default float mtime adds PAX headers
        for i in range(5):
            writer.write({"__key__": f"{i:06d}", "png": bytes([i]) * (i * 300), "cls": str(i).encode()})
    ours = list(iter_shard_samples(path))
    theirs = [dict(s) for s in wds.tarfile_samples([{"url": str(path)}])]
    assert ours == theirs and len(ours) == 5


def test_damaged_archives_raise(tmp_path: Path) -> None:
    path = _tar(tmp_path / "a.tar", tarfile.USTAR_FORMAT, [("a.png", bytes(5000)), ("b.png", b"x")])
    data = path.read_bytes()
    with pytest.raises(ValueError, match="cut.tar is truncated .a tar member ends early"):
        list(iter_tar_members(io.BytesIO(data[:2000]), "cut.tar"))
    with pytest.raises(ValueError, match="between members, without the end-of-archive block"):
        list(iter_tar_members(io.BytesIO(data[:512 * 11]), "cut.tar"))  # after the first member (1 + 10 blocks)
    bad = bytearray(data)
    bad[10] ^= 0x01  # inside the first header's name
    with pytest.raises(ValueError, match="corrupt tar header at byte 0"):
        list(iter_tar_members(io.BytesIO(bytes(bad)), "bad.tar"))


def test_a_refused_member_is_yielded_without_its_bytes(tmp_path: Path) -> None:
    """`admit` sees each regular member's name and declared size before its bytes are read; the members after a
    refused one (long names, PAX records) are read as before."""
    path = _tar(tmp_path / "a.tar", tarfile.PAX_FORMAT, MEMBERS)
    asked: list[tuple[str, int]] = []
    with open(path, "rb") as f:
        got = list(iter_tar_members(f, str(path), lambda name, size: asked.append((name, size)) or size < 1000))
    assert asked == [(name, len(data)) for name, data in MEMBERS]
    assert got == [(name, data if len(data) < 1000 else None) for name, data in MEMBERS]
