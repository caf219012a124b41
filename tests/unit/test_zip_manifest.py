"""The manifest: what an archive holds, read from its central directory only, bounded whatever it holds."""

from __future__ import annotations

import io
import json
import struct
import tracemalloc
import unicodedata
import zipfile
import zlib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.harness.archives import build_from_spec
from tiktok_archive.models.tiktok_errors import ArchiveInvalidError
from tiktok_archive.models.zip_manifest import (
    MAX_DIRECTORY_BYTES,
    MAX_ENTRIES,
    MAX_EXAMPLES,
    MAX_FOLDERS,
    MAX_NAME_CHARS,
    DirectoryLocation,
    build_manifest,
    display_name,
    is_suspicious,
)
from tiktok_archive.models.zip_tail import TAIL_BYTES, ZipTail

MANIFEST_KEYS = {
    "entries",
    "listed_entries",
    "uncompressed_bytes",
    "compressed_bytes",
    "max_compression_ratio",
    "folders",
    "folders_omitted",
    "suspicious_names",
    "suspicious_examples",
    "truncated",
    "truncated_reason",
}


def _through_tail(data: bytes, piece: int = 256 * 1024) -> ZipTail:
    tail = ZipTail()
    for at in range(0, len(data), piece):
        tail.feed(data[at : at + piece])
    tail.verify()
    return tail


class _StoredArchive:
    """The archive as S3 holds it: only ranged reads, each one recorded."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.ranges: list[tuple[int, int]] = []

    def read_range(self, start: int, length: int) -> bytes:
        self.ranges.append((start, length))
        return self._data[start : start + length]


def _manifest_of(
    data: bytes,
    *,
    max_bytes: int = MAX_DIRECTORY_BYTES,
    max_entries: int = MAX_ENTRIES,
    stored: _StoredArchive | None = None,
) -> dict[str, Any]:
    """The manifest as the transfer builds it: from the held tail, else by one ranged read of the archive."""
    tail = _through_tail(data)
    location = tail.directory
    assert location is not None
    directory = tail.held_directory(max_bytes)
    if directory is None:
        stored = stored or _StoredArchive(data)
        directory = stored.read_range(location.offset, min(location.size, max_bytes))
    return build_manifest(location, directory, max_bytes=max_bytes, max_entries=max_entries)


def _zip(entries: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data, compress_type=method)
    return buffer.getvalue()


def _zip_raw(
    entries: list[tuple[bytes, int, bytes]], *, extra: bytes = b"", sizes: tuple[int, int] | None = None
) -> bytes:
    """A stored zip of ``(raw name, flags, data)`` entries, with an optional central extra field.

    For what ``zipfile`` refuses to write: an empty name, names not valid in their encoding, sizes
    claimed rather than real.
    """
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


def _videos(count: int) -> bytes:
    """``count`` one-byte stored entries named like TikTok's media, all central headers 73 bytes long."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for index in range(count):
            archive.writestr(f"Posts/Media/video_{index:06d}.mp", b"v")
    return buffer.getvalue()


VIDEO_HEADER_BYTES = 46 + len("Posts/Media/video_000000.mp")


@pytest.fixture(scope="module")
def hundred_thousand_videos() -> bytes:
    return _videos(100_000)


def _has_hidden_characters(text: str) -> bool:
    return any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in text)


def _assert_bounded(manifest: dict[str, Any]) -> None:
    """What every manifest keeps, whatever the archive: its shape, its bounds and inert names."""
    assert set(manifest) == MANIFEST_KEYS
    assert manifest["truncated_reason"] in (None, "size", "entries", "damaged")
    assert manifest["truncated"] is (manifest["truncated_reason"] is not None)
    assert len(manifest["folders"]) <= MAX_FOLDERS
    assert len(manifest["suspicious_examples"]) <= MAX_EXAMPLES
    assert sum(folder["entries"] for folder in manifest["folders"]) <= manifest["listed_entries"]
    if manifest["folders_omitted"] == 0:
        assert sum(folder["entries"] for folder in manifest["folders"]) == manifest["listed_entries"]
    for shown in [folder["name"] for folder in manifest["folders"]] + manifest["suspicious_examples"]:
        assert len(shown) <= MAX_NAME_CHARS
        assert not _has_hidden_characters(shown), shown
    json.dumps(manifest, allow_nan=False)  # it goes into DynamoDB and EventBridge as JSON


# -- ordinary archives ---------------------------------------------------------------------------------
def test_a_tiktok_export_gives_its_exact_manifest() -> None:
    # Given a small export as TikTok shapes it (stored, so every size is known to the byte)
    data = _zip(
        {
            "user_data_tiktok.json": b'{"Profile": {}}' * 100,
            "Posts/Media/": b"",
            "Posts/Media/video_00001.mp4": b"\1" * 4096,
            "Posts/Media/video_00002.mp4": b"\2" * 8192,
            "Direct Messages/Inbox/chat_history.json": b"[]" * 350,
        },
        zipfile.ZIP_STORED,
    )
    # When its manifest is read from the tail the stream kept
    stored = _StoredArchive(data)
    manifest = _manifest_of(data, stored=stored)
    # Then it says exactly what the archive holds, without reading anything back from storage
    assert stored.ranges == []
    assert manifest == {
        "entries": 5,
        "listed_entries": 5,
        "uncompressed_bytes": 1500 + 4096 + 8192 + 700,
        "compressed_bytes": 1500 + 4096 + 8192 + 700,
        "max_compression_ratio": 1.0,
        "folders": [
            {"name": "Posts", "entries": 3, "bytes": 12288},
            {"name": ".", "entries": 1, "bytes": 1500},
            {"name": "Direct Messages", "entries": 1, "bytes": 700},
        ],
        "folders_omitted": 0,
        "suspicious_names": 0,
        "suspicious_examples": [],
        "truncated": False,
        "truncated_reason": None,
    }


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
    _assert_bounded(manifest)


def test_an_empty_archive_has_an_empty_manifest() -> None:
    manifest = _manifest_of(_zip({}))
    assert manifest["entries"] == 0
    assert manifest["folders"] == []
    assert manifest["truncated"] is False


# -- ZIP64 ---------------------------------------------------------------------------------------------
def test_zip64_end_records_give_the_count_beyond_65535_entries(hundred_thousand_videos: bytes) -> None:
    # Given an archive of 100,000 entries: zipfile writes its counts in the ZIP64 end records
    data = hundred_thousand_videos
    assert b"PK\x06\x06" in data[-200:]
    assert struct.unpack_from("<H", data, data.rindex(b"PK\x05\x06") + 10)[0] == 0xFFFF
    # When the whole directory is read
    manifest = _manifest_of(data, max_bytes=100_000 * VIDEO_HEADER_BYTES)
    # Then every entry is counted, from the ZIP64 count, and nothing is missing
    assert manifest["entries"] == manifest["listed_entries"] == 100_000
    assert manifest["uncompressed_bytes"] == manifest["compressed_bytes"] == 100_000
    assert manifest["folders"] == [{"name": "Posts", "entries": 100_000, "bytes": 100_000}]
    assert manifest["truncated"] is False


def test_zip64_extra_fields_give_the_sizes(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given an archive zipfile wrote with ZIP64 extra fields in its central directory: it does so for
    # sizes beyond ZIP64_LIMIT (4 GiB), lowered here so that a few KiB need them
    monkeypatch.setattr(zipfile, "ZIP64_LIMIT", 1000)
    data = _zip({"Posts/Media/video_00001.mp4": b"\0" * 50_000, "user_data_tiktok.json": b"{}"})
    directory = data[data.index(b"PK\x01\x02") :]
    assert struct.unpack_from("<2L", directory, 20) == (0xFFFFFFFF, 0xFFFFFFFF)
    infos = zipfile.ZipFile(io.BytesIO(data)).infolist()
    # When its manifest is read
    manifest = _manifest_of(data)
    # Then the sizes are the 64-bit ones, as zipfile reads them back
    assert manifest["uncompressed_bytes"] == 50_002 == sum(i.file_size for i in infos)
    assert manifest["compressed_bytes"] == sum(i.compress_size for i in infos)
    assert manifest["max_compression_ratio"] == round(50_000 / infos[0].compress_size, 1)
    assert manifest["truncated"] is False


def test_forced_zip64_local_headers_do_not_change_the_sizes() -> None:
    # Given entries written with force_zip64: zipfile puts ZIP64 extras in the local headers only
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in (("Posts/Media/video_00001.mp4", b"\3" * 70_000), ("user_data_tiktok.json", b"{}")):
            with archive.open(name, "w", force_zip64=True) as entry:
                entry.write(data)
    infos = zipfile.ZipFile(buffer).infolist()
    # When its manifest is read
    manifest = _manifest_of(buffer.getvalue())
    # Then the sizes are the central directory's, equal to what zipfile reads
    assert manifest["uncompressed_bytes"] == 70_002 == sum(i.file_size for i in infos)
    assert manifest["compressed_bytes"] == sum(i.compress_size for i in infos)
    assert manifest["listed_entries"] == 2


def test_zip64_sizes_come_from_the_extra_field() -> None:
    six_gib, five_gib = 6 * 1024**3, 5 * 1024**3
    extra = struct.pack("<2H2Q", 0x0001, 16, six_gib, five_gib)
    data = _zip_raw([(b"Posts/huge.mp4", 0, b"")], extra=extra, sizes=(0xFFFFFFFF, 0xFFFFFFFF))
    manifest = _manifest_of(data)
    assert manifest["uncompressed_bytes"] == six_gib
    assert manifest["compressed_bytes"] == five_gib
    assert manifest["max_compression_ratio"] == 1.2


def test_a_zip64_archive_from_the_harness_is_summarized_from_its_first_4_mib() -> None:
    archive = build_from_spec(1, {"kind": "many_entries", "count": 70_000})  # beyond 65,535: ZIP64 records
    tail = _through_tail(archive.data)
    assert tail.directory is not None
    assert tail.directory.entries == 70_000
    manifest = _manifest_of(archive.data)
    assert manifest["entries"] == 70_000
    assert manifest["truncated"] is True  # its directory is more than 4 MiB: summarized from the first 4
    assert manifest["truncated_reason"] == "size"
    assert 0 < manifest["listed_entries"] < 70_000
    _assert_bounded(manifest)


# -- the bounds ----------------------------------------------------------------------------------------
def test_a_hundred_thousand_entries_are_counted_exactly(hundred_thousand_videos: bytes) -> None:
    # Given the central directory of 100,000 entries, all of it
    tail = _through_tail(hundred_thousand_videos)
    location = tail.directory
    assert location is not None
    directory = hundred_thousand_videos[location.offset : location.offset + location.size]
    assert len(directory) == 100_000 * VIDEO_HEADER_BYTES
    # When it is summarized with room for exactly that many entries
    manifest = build_manifest(location, directory, max_bytes=len(directory), max_entries=100_000)
    # Then every entry is counted and nothing is truncated (time is not asserted here: about 0.2 s)
    assert manifest["listed_entries"] == manifest["entries"] == 100_000
    assert manifest["truncated"] is False


def test_entries_beyond_the_entry_bound_are_not_listed() -> None:
    # Given 150,000 entries, with every byte of their directory readable
    data = _videos(150_000)
    # When at most 100,000 may be listed
    manifest = _manifest_of(data, max_bytes=150_000 * VIDEO_HEADER_BYTES, max_entries=100_000)
    # Then 100,000 are, and the manifest says it stopped because of their number
    assert manifest["entries"] == 150_000
    assert manifest["listed_entries"] == 100_000
    assert manifest["uncompressed_bytes"] == 100_000
    assert manifest["truncated"] is True
    assert manifest["truncated_reason"] == "entries"


def test_a_directory_beyond_the_tail_is_read_with_one_ranged_read_of_at_most_4_mib(
    hundred_thousand_videos: bytes,
) -> None:
    # Given an archive whose directory (7 MiB) is larger than the tail the stream keeps
    data = hundred_thousand_videos
    tail = _through_tail(data)
    location = tail.directory
    assert location is not None
    assert location.size > TAIL_BYTES
    assert tail.held_directory(MAX_DIRECTORY_BYTES) is None
    # When its manifest is read
    stored = _StoredArchive(data)
    manifest = _manifest_of(data, stored=stored)
    # Then one ranged read fetched the directory's first 4 MiB, from where the end records say it starts,
    # and the manifest covers the entries whole in them
    assert stored.ranges == [(location.offset, MAX_DIRECTORY_BYTES)]
    assert data[location.offset : location.offset + 4] == b"PK\x01\x02"
    assert manifest["entries"] == 100_000
    assert manifest["listed_entries"] == MAX_DIRECTORY_BYTES // VIDEO_HEADER_BYTES
    assert manifest["truncated_reason"] == "size"
    _assert_bounded(manifest)


def test_a_directory_beyond_the_tail_but_under_the_bound_is_read_whole() -> None:
    archive = build_from_spec(1, {"kind": "big_central_directory"})
    tail = _through_tail(archive.data)
    location = tail.directory
    assert location is not None
    assert location.size > 1024 * 1024
    assert tail.held_directory(MAX_DIRECTORY_BYTES) is None
    stored = _StoredArchive(archive.data)
    manifest = _manifest_of(archive.data, stored=stored)
    assert stored.ranges == [(location.offset, location.size)]
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


# -- hostile archives are data -------------------------------------------------------------------------
def test_hostile_names_written_by_zipfile_are_reported_as_inert_text() -> None:
    # Given names meant to escape a folder, drive a terminal or hide their end, and the longest name a
    # zip can hold (65,535 bytes; zipfile refuses one longer: the length field has 16 bits)
    long_folder = "L" * 65_000
    names = [
        "dir/\x1b[31mred\x1b[0m",
        "line\nbreak",
        "\u202eevil",
        "para\u2029graph.json",
        "../../etc/passwd",
        "/abs/path",
        "C:\\windows\\x",
        long_folder + "/f",
        "z" * 65_535,
        "Posts/Media/video_00001.mp4",
    ]
    data = _zip(dict.fromkeys(names, b"x"), zipfile.ZIP_STORED)
    # When its manifest is read
    manifest = _manifest_of(data)
    # Then every name is counted, the suspicious ones are shown escaped, and folders are only text
    assert manifest["listed_entries"] == len(names)
    assert manifest["suspicious_names"] == 7
    assert manifest["suspicious_examples"] == [
        "dir/\\x1b[31mred\\x1b[0m",
        "line\\x0abreak",
        "\\u202eevil",
        "para\\u2029graph.json",
        "../../etc/passwd",
    ]
    assert manifest["folders"] == [
        {"name": ".", "entries": 5, "bytes": 5},
        {"name": "..", "entries": 1, "bytes": 1},
        {"name": "/", "entries": 1, "bytes": 1},  # "/abs/path": its top-level folder is empty
        {"name": "L" * (MAX_NAME_CHARS - 1) + "…", "entries": 1, "bytes": 1},
        {"name": "Posts", "entries": 1, "bytes": 1},
        {"name": "dir", "entries": 1, "bytes": 1},
    ]
    assert manifest["truncated"] is False
    _assert_bounded(manifest)


def test_names_zipfile_refuses_are_reported_as_inert_text() -> None:
    # Given an empty name, a name in code page 437 (UTF-8 flag clear) and one flagged UTF-8 but not
    data = _zip_raw(
        [
            (b"", 0, b"x"),
            (b"\x81\x9a\xe4/not-utf8.json", 0, b"{}"),
            (b"Profile/\xff\xfe\x1b.json", 0x0800, b"{}"),
        ]
    )
    # When its manifest is read
    manifest = _manifest_of(data)
    # Then each is read as the zip spec says (cp437: 0x81 ü, 0x9a Ü, 0xe4 Σ), what cannot be decoded is
    # replaced, and nothing is raised (zipfile itself refuses the archive for its bad UTF-8)
    assert manifest["listed_entries"] == 3
    assert manifest["folders"] == [
        {"name": "Profile", "entries": 1, "bytes": 2},
        {"name": "üÜΣ", "entries": 1, "bytes": 2},
        {"name": ".", "entries": 1, "bytes": 1},
    ]
    assert manifest["suspicious_examples"] == ["Profile/\ufffd\ufffd\\x1b.json"]


def test_the_harness_hostile_archive_is_described_not_unpacked() -> None:
    archive = build_from_spec(1, {"kind": "hostile_names"})
    manifest = _manifest_of(archive.data)
    assert manifest["entries"] == manifest["listed_entries"] == len(archive.entries)
    expected = [name for name in archive.entries if is_suspicious(name)]
    assert manifest["suspicious_names"] == len(expected) >= 9
    assert manifest["suspicious_examples"] == [display_name(name) for name in expected[:5]]
    _assert_bounded(manifest)
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
        ("Posts/isolate\u2067.mp4", True),
        ("Posts/line\u2028separator.mp4", True),
        ("Posts/next-line\x85.mp4", True),  # C1
        ("Activity/..hidden..json", False),
        ("Profile/ünïcödé-名前.json", False),
        ("Posts/video 1.mp4", False),
        ("Posts/no-break\u00a0space.mp4", False),
        ("", False),
    ],
)
def test_what_counts_as_a_suspicious_name(name: str, suspicious: bool) -> None:
    assert is_suspicious(name) is suspicious


def test_names_are_escaped_and_cut_for_display() -> None:
    assert display_name("a\x1b[31mb\x07c\u202ed") == "a\\x1b[31mb\\x07c\\u202ed"
    assert display_name("a\u2028b\u2029c\x7fd\x9be\U000e0001") == "a\\u2028b\\u2029c\\x7fd\\x9be\\U000e0001"
    assert display_name("../..\\C:/x") == "../..\\C:/x"
    assert display_name("Profile/ünïcödé-名前.json") == "Profile/ünïcödé-名前.json"
    long = display_name("x" * 5000)
    assert len(long) == MAX_NAME_CHARS
    assert long.endswith("…")


def test_a_zip_bomb_is_a_ratio_not_an_allocation() -> None:
    # Given 50 MiB of zeros deflated by zipfile (about 50 KiB stored)
    data = _zip({"Posts/Media/zeros.bin": bytes(50 * 1024 * 1024)})
    tail = _through_tail(data)
    assert tail.directory is not None
    directory = tail.held_directory(MAX_DIRECTORY_BYTES)
    assert directory is not None
    # When its manifest is read
    tracemalloc.start()
    try:
        manifest = build_manifest(tail.directory, directory)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Then the ratio shows the bomb, and reading it allocated nothing near its size
    assert manifest["uncompressed_bytes"] == 50 * 1024 * 1024
    assert manifest["max_compression_ratio"] >= 900
    assert peak < 64 * 1024


def test_sizes_of_exabytes_are_only_numbers() -> None:
    # Given a thousand entries each claiming 2**64 - 1 bytes from nothing compressed
    extra = struct.pack("<2H2Q", 0x0001, 16, 2**64 - 1, 0)
    entries = [(b"Posts/%d.mp4" % n, 0, b"") for n in range(1000)]
    data = _zip_raw(entries, extra=extra, sizes=(0xFFFFFFFF, 0xFFFFFFFF))
    # When its manifest is read
    manifest = _manifest_of(data)
    # Then the sums are exact integers and the ratio treats "nothing compressed" as one byte
    assert manifest["uncompressed_bytes"] == 1000 * (2**64 - 1)
    assert manifest["compressed_bytes"] == 0
    assert manifest["max_compression_ratio"] == round(float(2**64 - 1), 1)
    _assert_bounded(manifest)


# -- damaged directories -------------------------------------------------------------------------------
def test_a_wrong_signature_mid_directory_is_reported_as_damaged() -> None:
    data = bytearray(_zip({f"Activity/{i}.json": b"{}" for i in range(10)}, zipfile.ZIP_STORED))
    second = data.index(b"PK\x01\x02", data.index(b"PK\x01\x02") + 4)
    data[second : second + 4] = b"XXXX"
    manifest = _manifest_of(bytes(data))
    assert manifest["listed_entries"] == 1
    assert manifest["truncated"] is True
    assert manifest["truncated_reason"] == "damaged"


def test_a_name_length_running_past_the_directory_is_reported_as_damaged() -> None:
    # Given a whole archive whose last central header claims a 65,535-byte name it does not have
    data = bytearray(_zip({f"Activity/{i}.json": b"{}" for i in range(10)}, zipfile.ZIP_STORED))
    last = data.rindex(b"PK\x01\x02")
    struct.pack_into("<H", data, last + 28, 0xFFFF)
    # When its manifest is read
    manifest = _manifest_of(bytes(data))
    # Then the entries before it are listed and the manifest says the directory is damaged
    assert manifest["entries"] == 10
    assert manifest["listed_entries"] == 9
    assert manifest["truncated_reason"] == "damaged"


def test_fewer_entries_than_the_end_record_counts_is_damaged() -> None:
    data = bytearray(_zip({"a.json": b"{}", "b.json": b"{}"}, zipfile.ZIP_STORED))
    struct.pack_into("<2H", data, data.rindex(b"PK\x05\x06") + 8, 3, 3)
    manifest = _manifest_of(bytes(data))
    assert (manifest["entries"], manifest["listed_entries"]) == (3, 2)
    assert manifest["truncated_reason"] == "damaged"


def test_random_bytes_are_not_an_archive() -> None:
    with pytest.raises(ArchiveInvalidError):
        _manifest_of(bytes(range(256)) * 64)


# -- properties ----------------------------------------------------------------------------------------
def _describe(data: bytes) -> dict[str, Any] | None:
    """Bytes through the end check and the manifest, as a download's end goes; None: not an archive."""
    try:
        return _manifest_of(data, max_bytes=64 * 1024)
    except ArchiveInvalidError:
        return None


def _base_archives() -> list[bytes]:
    names = ["user_data_tiktok.json", "Posts/Media/video_00001.mp4", "../x", "d/\x1b", "Activity/a.json"]
    plain = _zip({name: name.encode() * 20 for name in names})
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(zipfile, "ZIP_FILECOUNT_LIMIT", 1)  # ZIP64 end records for any count
        patch.setattr(zipfile, "ZIP64_LIMIT", 50)  # ZIP64 extra fields for any entry over 50 bytes
        zip64 = _zip({name: name.encode() * 20 for name in names})
    assert b"PK\x06\x06" in zip64
    return [plain, zip64, _zip({}), _zip({"a": b"x"}, zipfile.ZIP_STORED)]


BASE_ARCHIVES = _base_archives()


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=4096))
def test_any_bytes_give_a_manifest_or_archive_invalid(data: bytes) -> None:
    manifest = _describe(data)
    if manifest is not None:
        _assert_bounded(manifest)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    base=st.sampled_from(BASE_ARCHIVES),
    changes=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), max_size=6),
    near_end=st.integers(min_value=0, max_value=400),
    cut=st.integers(min_value=0, max_value=3),
)
def test_a_damaged_archive_gives_a_manifest_or_archive_invalid(
    base: bytes, changes: list[tuple[float, int]], near_end: int, cut: int
) -> None:
    # Given a real archive with a few bytes changed, most of them in its directory and end records
    data = bytearray(base)
    for where, value in changes:
        span = min(len(data), near_end or len(data))  # the last bytes the changes fall in (0: any)
        data[len(data) - span + int(where * span)] = value
    # When it goes through the end check and the manifest (perhaps cut short)
    manifest = _describe(bytes(data[: len(data) - cut]))
    # Then it is refused as not an archive, or described within the bounds: never another error
    if manifest is not None:
        _assert_bounded(manifest)


@settings(max_examples=300, deadline=None)
@given(
    entries=st.integers(min_value=0, max_value=2**64),
    size=st.integers(min_value=0, max_value=2**64),
    directory=st.binary(max_size=4096),
)
def test_any_directory_bytes_give_a_bounded_manifest(entries: int, size: int, directory: bytes) -> None:
    manifest = build_manifest(DirectoryLocation(entries=entries, offset=0, size=size), directory)
    assert manifest["entries"] == entries
    assert manifest["listed_entries"] <= len(directory) // 46
    _assert_bounded(manifest)


@settings(max_examples=100, deadline=None)
@given(names=st.lists(st.text(min_size=0, max_size=300), min_size=1, max_size=30))
def test_any_names_are_shown_without_hidden_characters(names: list[str]) -> None:
    entries = [(name.encode("utf-8", "surrogatepass"), 0x0800, b"x") for name in dict.fromkeys(names)]
    manifest = _manifest_of(_zip_raw(entries))
    assert manifest["listed_entries"] == len(entries)
    _assert_bounded(manifest)
