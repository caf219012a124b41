"""The manifest: what an archive holds, read from its central directory only, bounded whatever it holds."""

from __future__ import annotations

import io
import json
import struct
import zipfile
import zlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.harness.archives import build_from_spec
from tiktok_archive.models import zip_manifest
from tiktok_archive.models.zip_manifest import (
    MAX_DIRECTORY_BYTES,
    MAX_FOLDERS,
    MAX_NAME_CHARS,
    DirectoryLocation,
    build_manifest,
    display_name,
    is_suspicious,
)
from tiktok_archive.models.zip_tail import ZipTail


def _through_tail(data: bytes, piece: int = 256 * 1024) -> ZipTail:
    tail = ZipTail()
    for at in range(0, len(data), piece):
        tail.feed(data[at : at + piece])
    tail.verify()
    return tail


def _manifest_of(data: bytes) -> dict[str, Any]:
    """The manifest as the transfer builds it: from the held tail, else from the archive's bytes (S3)."""
    tail = _through_tail(data)
    assert tail.directory is not None
    held = tail.held_directory(MAX_DIRECTORY_BYTES)
    location = tail.directory
    directory = held if held is not None else data[location.offset : location.offset + MAX_DIRECTORY_BYTES]
    return build_manifest(location, directory)


def _zip(entries: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data, compress_type=method)
    return buffer.getvalue()


def test_counts_sizes_ratio_and_folders_agree_with_zipfile() -> None:
    data = _zip(
        {
            "user_data_tiktok.json": b'{"profile": 1}' * 100,
            "Activity/Like List.json": b"x" * 5000,
            "Activity/Login History.json": b"y" * 300,
            "Posts/video_1.mp4": bytes(range(256)) * 40,
            "Posts/": b"",
        }
    )
    manifest = _manifest_of(data)
    infos = zipfile.ZipFile(io.BytesIO(data)).infolist()
    assert manifest["entries"] == manifest["listed_entries"] == len(infos)
    assert manifest["uncompressed_bytes"] == sum(i.file_size for i in infos)
    assert manifest["compressed_bytes"] == sum(i.compress_size for i in infos)
    assert manifest["max_compression_ratio"] == round(
        max(i.file_size / i.compress_size for i in infos if i.file_size), 1
    )
    assert manifest["folders"] == [
        {"name": "Posts", "entries": 2, "bytes": 10240},
        {"name": "Activity", "entries": 2, "bytes": 5300},
        {"name": ".", "entries": 1, "bytes": 1400},
    ]
    assert manifest["truncated"] is False
    assert manifest["truncated_reason"] is None
    assert manifest["suspicious_names"] == 0
    json.dumps(manifest)  # it goes into DynamoDB and EventBridge as JSON


def test_an_empty_archive_has_an_empty_manifest() -> None:
    manifest = _manifest_of(_zip({}))
    assert manifest["entries"] == 0
    assert manifest["folders"] == []
    assert manifest["truncated"] is False


def test_hostile_names_are_counted_and_shown_as_inert_text() -> None:
    archive = build_from_spec(1, {"kind": "hostile_names"})
    manifest = _manifest_of(archive.data)
    assert manifest["entries"] == manifest["listed_entries"] == len(archive.entries)
    expected = [name for name in archive.entries if is_suspicious(name)]
    assert manifest["suspicious_names"] == len(expected) >= 9
    assert manifest["suspicious_examples"] == [display_name(name) for name in expected[:5]]
    for shown in [folder["name"] for folder in manifest["folders"]] + manifest["suspicious_examples"]:
        assert not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in shown), shown
    assert all(len(folder["name"]) <= MAX_NAME_CHARS for folder in manifest["folders"])
    # The zip bomb is described, not unpacked: its ratio is there for the backend to judge.
    assert manifest["max_compression_ratio"] > 1000
    posts = next(folder for folder in manifest["folders"] if folder["name"] == "Posts")
    assert posts["bytes"] > 150 * 1024 * 1024


@pytest.mark.parametrize(
    ("name", "suspicious"),
    [
        ("../../../../tmp/evil.txt", True),
        ("Activity/../../escape.json", True),
        ("..\\..\\Windows\\evil.bat", True),
        ("/etc/passwd", True),
        ("\\\\server\\share", True),
        ("C:/Windows/evil.dll", True),
        ("Activity/\x1b[31mred.json", True),
        ("Direct Messages/line\nbreak.json", True),
        ("Posts/right-to-left\u202egnp.exe", True),  # looks like …exe.png
        ("Activity/..hidden..json", False),
        ("Profile/ünïcödé-名前.json", False),
        ("Posts/video 1.mp4", False),
        ("", False),
    ],
)
def test_what_counts_as_a_suspicious_name(name: str, suspicious: bool) -> None:
    assert is_suspicious(name) is suspicious


def test_names_are_escaped_and_cut_for_display() -> None:
    assert display_name("a\x1b[31mb\x07c\u202ed") == "a\\x1b[31mb\\x07c\\u202ed"
    assert display_name("Profile/ünïcödé-名前.json") == "Profile/ünïcödé-名前.json"
    long = display_name("x" * 5000)
    assert len(long) == MAX_NAME_CHARS
    assert long.endswith("…")


def test_a_name_that_is_not_utf8_is_read_as_the_zip_spec_says() -> None:
    # The UTF-8 flag clear: IBM code page 437, as zipfile reads it too (0x81 ü, 0x9a Ü, 0xe4 Σ).
    data = _zip_raw([(b"\x81\x9a\xe4/not-utf8.json", 0, b"{}"), (b"Profile/\xc3\xbc.json", 0x0800, b"{}")])
    manifest = _manifest_of(data)
    assert [folder["name"] for folder in manifest["folders"]] == ["Profile", "üÜΣ"]
    assert next(info.filename for info in zipfile.ZipFile(io.BytesIO(data)).infolist()) == "üÜΣ/not-utf8.json"


def _zip_raw(
    entries: list[tuple[bytes, int, bytes]], *, extra: bytes = b"", sizes: tuple[int, int] | None = None
) -> bytes:
    """A stored zip of ``(raw name, flags, data)`` entries, with an optional central extra field."""
    out, central = io.BytesIO(), io.BytesIO()
    for name, flags, data in entries:
        offset = out.tell()
        crc = zlib.crc32(data)
        out.write(
            struct.pack(
                "<4s5H3L2H", b"PK\x03\x04", 20, flags, 0, 0, 0, crc, len(data), len(data), len(name), 0
            )
        )
        out.write(name + data)
        compressed, uncompressed = sizes or (len(data), len(data))
        central.write(
            struct.pack(
                "<4s6H3L5H2L",
                b"PK\x01\x02",
                45,
                45,
                flags,
                0,
                0,
                0,
                crc,
                compressed,
                uncompressed,
                len(name),
                len(extra),
                0,
                0,
                0,
                0,
                offset,
            )
        )
        central.write(name + extra)
    start, directory = out.tell(), central.getvalue()
    out.write(directory)
    out.write(
        struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(entries), len(entries), len(directory), start, 0)
    )
    return out.getvalue()


def test_zip64_sizes_come_from_the_extra_field() -> None:
    six_gib, five_gib = 6 * 1024**3, 5 * 1024**3
    extra = struct.pack("<2H2Q", 0x0001, 16, six_gib, five_gib)
    data = _zip_raw([(b"Posts/huge.mp4", 0, b"")], extra=extra, sizes=(0xFFFFFFFF, 0xFFFFFFFF))
    manifest = _manifest_of(data)
    assert manifest["uncompressed_bytes"] == six_gib
    assert manifest["compressed_bytes"] == five_gib
    assert manifest["max_compression_ratio"] == 1.2


def test_an_archive_with_zip64_end_records_is_counted_from_them() -> None:
    archive = build_from_spec(1, {"kind": "many_entries", "count": 70_000})  # beyond 65,535: ZIP64 records
    tail = _through_tail(archive.data)
    assert tail.directory is not None
    assert tail.directory.entries == 70_000
    manifest = _manifest_of(archive.data)
    assert manifest["entries"] == 70_000
    assert manifest["truncated"] is True  # its directory is more than 4 MiB: summarized from the first 4
    assert manifest["truncated_reason"] == "size"
    assert 0 < manifest["listed_entries"] < 70_000
    assert sum(folder["entries"] for folder in manifest["folders"]) == manifest["listed_entries"]


def test_a_hundred_thousand_entries_are_summarized_as_truncated() -> None:
    archive = build_from_spec(1, {"kind": "many_entries", "count": 100_000})
    manifest = _manifest_of(archive.data)
    assert manifest["entries"] == 100_000
    assert manifest["truncated"] is True
    assert manifest["listed_entries"] < 100_000
    assert len(json.dumps(manifest)) < 4096


def test_the_entry_bound_holds_when_the_size_bound_does_not(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zip_manifest, "MAX_ENTRIES", 1_000)
    data = _zip({f"Activity/{i}.json": b"{}" for i in range(1_500)}, zipfile.ZIP_STORED)
    manifest = _manifest_of(data)
    assert manifest["listed_entries"] == 1_000
    assert manifest["truncated_reason"] == "entries"


def test_a_directory_larger_than_the_held_tail_is_read_from_the_archive() -> None:
    archive = build_from_spec(1, {"kind": "big_central_directory"})
    tail = _through_tail(archive.data)
    assert tail.directory is not None
    assert tail.directory.size > 1024 * 1024
    assert tail.held_directory(MAX_DIRECTORY_BYTES) is None  # the transfer reads it with a ranged GET
    manifest = _manifest_of(archive.data)
    assert manifest["entries"] == manifest["listed_entries"] == 5_000
    assert manifest["truncated"] is False


def test_the_held_tail_gives_the_directory_when_it_holds_it() -> None:
    data = _zip({f"Activity/{i}.json": b"{}" for i in range(20)})
    tail = _through_tail(data, piece=100)
    assert tail.directory is not None
    held = tail.held_directory(MAX_DIRECTORY_BYTES)
    assert held == data[tail.directory.offset : tail.directory.offset + tail.directory.size]


def test_folders_beyond_the_bound_are_counted_not_named() -> None:
    data = _zip({f"folder_{i:03d}/file.json": b"{}" for i in range(MAX_FOLDERS + 50)}, zipfile.ZIP_STORED)
    manifest = _manifest_of(data)
    assert len(manifest["folders"]) == MAX_FOLDERS
    assert manifest["folders_omitted"] == 50


def test_a_damaged_directory_is_reported_not_raised() -> None:
    data = bytearray(_zip({f"Activity/{i}.json": b"{}" for i in range(10)}, zipfile.ZIP_STORED))
    tail = _through_tail(bytes(data))
    assert tail.directory is not None
    directory = bytearray(tail.held_directory(MAX_DIRECTORY_BYTES) or b"")
    second = directory.find(b"PK\x01\x02", 4)
    directory[second : second + 4] = b"XXXX"
    manifest = build_manifest(tail.directory, bytes(directory))
    assert manifest["listed_entries"] == 1
    assert manifest["truncated"] is True
    assert manifest["truncated_reason"] == "damaged"


@settings(max_examples=300, deadline=None)
@given(
    entries=st.integers(min_value=0, max_value=2**32),
    size=st.integers(min_value=0, max_value=2**40),
    directory=st.binary(max_size=4096),
)
def test_any_bytes_give_a_bounded_manifest_and_never_raise(entries: int, size: int, directory: bytes) -> None:
    manifest = build_manifest(DirectoryLocation(entries=entries, offset=0, size=size), directory)
    assert manifest["entries"] == entries
    assert manifest["listed_entries"] <= len(directory) // 46
    assert len(json.dumps(manifest)) < 64 * 1024


@settings(max_examples=100, deadline=None)
@given(names=st.lists(st.text(min_size=0, max_size=300), min_size=1, max_size=30))
def test_any_names_are_shown_without_control_characters(names: list[str]) -> None:
    entries = [(name.encode("utf-8", "surrogatepass"), 0x0800, b"x") for name in dict.fromkeys(names)]
    manifest = _manifest_of(_zip_raw(entries))
    shown = [folder["name"] for folder in manifest["folders"]] + manifest["suspicious_examples"]
    for name in shown:
        assert len(name) <= MAX_NAME_CHARS
        assert not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in name), name
