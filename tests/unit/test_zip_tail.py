"""The end-of-archive check: whole zips pass, cut, padded or stitched bodies do not."""

from __future__ import annotations

import io
import struct
import zipfile

import pytest

from tests.harness.archives import build_archive
from tiktok_archive.models.tiktok_errors import ArchiveInvalidError
from tiktok_archive.models.zip_tail import TAIL_BYTES, ZipTail


def zip_of(entries: dict[str, bytes], comment: bytes = b"") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data, compress_type=zipfile.ZIP_STORED)
        archive.comment = comment
    return buffer.getvalue()


def zip64_of(entries: dict[str, bytes], monkeypatch: pytest.MonkeyPatch) -> bytes:
    """A real ZIP64 archive (zipfile writes the ZIP64 end records past this entry count)."""
    monkeypatch.setattr(zipfile, "ZIP_FILECOUNT_LIMIT", 1)
    data = zip_of(entries)
    assert b"PK\x06\x06" in data[-200:]
    assert b"PK\x06\x07" in data[-200:]
    return data


def verify(data: bytes, piece: int = 7919) -> None:
    tail = ZipTail()
    for start in range(0, len(data), piece):
        tail.feed(data[start : start + piece])
    assert tail.size == len(data)
    tail.verify()


@pytest.mark.parametrize("piece", [1, 4096, 1 << 20, 1 << 30])
def test_a_whole_archive_passes_whatever_the_piece_size(piece: int) -> None:
    verify(build_archive(7, 300 * 1024).data, piece)


def test_empty_archive_and_archive_with_a_comment_pass() -> None:
    verify(zip_of({}))
    verify(zip_of({"a.txt": b"x" * 100}, comment=b"PK\x05\x06 looks like a record" * 100))


def test_zip64_archive_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    data = zip64_of({"a.json": b"{}", "b.mp4": b"\0" * 70_000}, monkeypatch)
    assert zipfile.ZipFile(io.BytesIO(data)).testzip() is None
    verify(data)


def test_archive_larger_than_the_tail_kept_passes() -> None:
    data = zip_of({f"media/{n}.bin": bytes([n]) * 50_000 for n in range(10)})
    assert len(data) > TAIL_BYTES * 2
    verify(data, piece=65536)


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda d: d[: len(d) // 2], "no end-of-central-directory"),
        (lambda d: d[:-1], "no end-of-central-directory"),
        (lambda d: d + b"\0", "no end-of-central-directory"),
        # The archive's own first half again, then its end: the directory no longer ends at the record.
        (lambda d: d[:1000] + d, "does not end where"),
        (lambda d: d[:200] + d[400:], "does not end where"),
        (lambda d: b"", "no end-of-central-directory"),
    ],
    ids=["half", "last-byte-missing", "padded", "stitched", "bytes-missing-inside", "empty"],
)
def test_cut_padded_or_stitched_bodies_fail(mangle: object, reason: str) -> None:
    data = zip_of({"a.json": b"{}" * 500, "b.mp4": b"\1" * 9000})
    with pytest.raises(ArchiveInvalidError, match=reason) as raised:
        verify(mangle(data))  # type: ignore[operator]
    assert raised.value.error_code == "archive_invalid"
    assert raised.value.status == 502


def test_zip_without_central_directory_fails() -> None:
    data = zip_of({"a.json": b"{}" * 500})
    directory_at = data.index(b"PK\x01\x02")
    with pytest.raises(ArchiveInvalidError, match="no end-of-central-directory"):
        verify(data[:directory_at])


def test_end_record_pointing_at_the_wrong_place_fails() -> None:
    data = bytearray(zip_of({"a.json": b"{}" * 500, "b.txt": b"b"}))
    eocd = data.rindex(b"PK\x05\x06")
    size, offset = struct.unpack_from("<2L", data, eocd + 12)
    # Same end, directory claimed to start 10 bytes later and be 10 bytes shorter.
    struct.pack_into("<2L", data, eocd + 12, size - 10, offset + 10)
    with pytest.raises(ArchiveInvalidError, match="not where its end record says"):
        verify(bytes(data))


def test_multi_disk_archive_fails() -> None:
    data = bytearray(zip_of({"a.json": b"{}"}))
    eocd = data.rindex(b"PK\x05\x06")
    struct.pack_into("<H", data, eocd + 4, 1)
    with pytest.raises(ArchiveInvalidError, match="several disks"):
        verify(bytes(data))


def test_zip64_values_without_locator_fail() -> None:
    data = bytearray(zip_of({"a.json": b"{}"}))
    eocd = data.rindex(b"PK\x05\x06")
    struct.pack_into("<L", data, eocd + 16, 0xFFFFFFFF)
    with pytest.raises(ArchiveInvalidError, match="no ZIP64 locator"):
        verify(bytes(data))


def test_zip64_archive_cut_inside_its_directory_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    data = zip64_of({"a.json": b"{}", "b.bin": b"\2" * 5000}, monkeypatch)
    directory_at = data.index(b"PK\x01\x02")
    cut = data[: directory_at + 10] + data[directory_at + 30 :]
    with pytest.raises(ArchiveInvalidError):
        verify(cut)


def test_damaged_zip64_record_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    data = bytearray(zip64_of({"a.json": b"{}", "b.bin": b"\2" * 5000}, monkeypatch))
    record = data.rindex(b"PK\x06\x06")
    data[record] = ord("X")
    with pytest.raises(ArchiveInvalidError, match="ZIP64 end record is missing or damaged"):
        verify(bytes(data))
