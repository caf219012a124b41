"""Realistic, generated TikTok portability archives (never committed), and hostile variants.

An archive holds a ``user_data_tiktok.json`` export shaped like TikTok's (profile, activity, comments,
direct messages, posts as links) and stored "media-sized" entries that bring it to the size asked for.
The same ``(request_id, size)`` always gives the same bytes.

``build_from_spec(request_id, spec)`` builds the archive an emulator request serves from a spec:

- ``{"kind": "default", "size": N}``: ``build_archive(request_id, N)`` (N defaults to 64 KiB).
- ``{"kind": "many_entries", "count": N}``: the export plus small JSON entries, N entries in all, spread
  over a few top-level folders. Beyond 65,535 entries ``zipfile`` writes the ZIP64 end records;
  100,000 entries build in about two seconds.
- ``{"kind": "hostile_names"}``: the export plus entries whose names a careless extractor mishandles:
  ``../`` traversal, absolute paths, a drive letter, backslashes, ANSI escapes (``\x1b[31m``), ``\n``
  and ``\r``, bytes that are not UTF-8 (the UTF-8 flag clear, so readers decode them as cp437), an
  empty name, a name of more than 8,000 characters; and ``ZIP_BOMB_ENTRIES`` deflated entries of
  ``ZIP_BOMB_BYTES`` zeros each (about 1,000:1). Written by hand (``zipfile`` will not write such
  names); the compressed zeros are computed once per process.
- ``{"kind": "big_central_directory", "count": N}``: N empty entries (default 5,000) with names long
  enough that the central directory is larger than 1 MiB.

Every variant is a valid zip that ``zipfile`` opens; only what its names and sizes mean is hostile.
"""

from __future__ import annotations

import functools
import io
import json
import math
import random
import struct
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

MEDIA_ENTRY_BYTES = 4 * 1024 * 1024
EXPORT_NAME = "user_data_tiktok.json"
DEFAULT_SIZE = 64 * 1024
KINDS = ("default", "many_entries", "hostile_names", "big_central_directory")
ZIP_BOMB_ENTRIES = 3
ZIP_BOMB_BYTES = 50 * 1024 * 1024
BIG_CENTRAL_DIRECTORY_BYTES = 1024 * 1024 + 64 * 1024  # comfortably more than 1 MiB
_TOP_FOLDERS = ("Activity", "Comment", "Direct Messages", "Posts", "Profile")
_UTF8_FLAG = 0x800
_MAX_NAME = 0xFFFF  # a zip name length is 16 bits


@dataclass(frozen=True)
class Archive:
    """One generated archive and the facts tests compare against."""

    data: bytes
    entries: tuple[str, ...]


class ArchiveSpecError(ValueError):
    """An archive spec the builders do not understand."""


def build_from_spec(request_id: int, spec: Mapping[str, Any] | None) -> Archive:
    """The archive ``spec`` describes (see the module docstring); ``None`` is the default archive."""
    spec = spec or {}
    kind = spec.get("kind", "default")
    if kind == "default":
        return build_archive(request_id, _count(spec, "size", DEFAULT_SIZE))
    if kind == "many_entries":
        return build_many_entries(_count(spec, "count", 1000))
    if kind == "hostile_names":
        return build_hostile_names()
    if kind == "big_central_directory":
        return build_big_central_directory(_count(spec, "count", 5000))
    raise ArchiveSpecError(f"unknown archive kind {kind!r}; one of {', '.join(KINDS)}")


def _count(spec: Mapping[str, Any], name: str, default: int) -> int:
    value = spec.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ArchiveSpecError(f"{name} must be a positive integer")
    return value


def build_archive(request_id: int, size: int) -> Archive:
    """A zip of about ``size`` bytes (at least the JSON export) for ``request_id``."""
    rng = random.Random(request_id * 1_000_003 + size)
    export = json.dumps(_user_data(rng, request_id), indent=2).encode()
    buffer = io.BytesIO()
    names = [EXPORT_NAME]
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(EXPORT_NAME, export, compress_type=zipfile.ZIP_DEFLATED)
        remaining = size - buffer.tell() - 200
        index = 0
        while remaining > 0:
            index += 1
            length = min(MEDIA_ENTRY_BYTES, remaining)
            name = f"Posts/Media/video_{index:05d}.mp4"
            archive.writestr(name, rng.randbytes(length), compress_type=zipfile.ZIP_STORED)
            names.append(name)
            remaining -= length + 100  # local header, central directory entry, name
    return Archive(buffer.getvalue(), tuple(names))


def _user_data(rng: random.Random, request_id: int) -> dict[str, object]:
    start = datetime(2025, 1, 1, tzinfo=UTC)

    def when(i: int) -> str:
        return (start + timedelta(minutes=37 * i)).strftime("%Y-%m-%d %H:%M:%S")

    def video_link() -> str:
        return f"https://www.tiktokv.com/share/video/{rng.randrange(10**18, 10**19)}/"

    return {
        "Profile": {
            "Profile Info": {
                "ProfileMap": {
                    "userName": f"user{request_id % 100000}",
                    "bioDescription": "Exported with the Data Portability API",
                    "birthDate": "01-Jan-1990",
                    "likesReceived": str(rng.randrange(10_000)),
                }
            }
        },
        "Activity": {
            "Video Browsing History": {
                "VideoList": [{"Date": when(i), "Link": video_link()} for i in range(200)]
            },
            "Like List": {"ItemFavoriteList": [{"Date": when(i), "Link": video_link()} for i in range(80)]},
            "Search History": {
                "SearchList": [{"Date": when(i), "SearchTerm": f"term {i}"} for i in range(40)]
            },
        },
        "Comment": {
            "Comments": {"CommentsList": [{"Date": when(i), "Comment": f"nice {i}"} for i in range(30)]}
        },
        "Direct Messages": {
            "Chat History": {
                "ChatHistory": {
                    "Chat History with friend1:": [
                        {"Date": when(i), "From": "friend1", "Content": f"hello {i}"} for i in range(25)
                    ]
                }
            }
        },
        "Video": {
            "Videos": {
                "VideoList": [
                    {"Date": when(i), "Link": video_link(), "Likes": str(rng.randrange(500))}
                    for i in range(12)
                ]
            }
        },
    }


@functools.lru_cache(maxsize=4)
def build_many_entries(count: int) -> Archive:
    """``count`` entries: the export, then small JSON documents in a few top-level folders."""
    export = json.dumps(_user_data(random.Random(count), count), indent=2).encode()
    buffer = io.BytesIO()
    names = [EXPORT_NAME]
    with zipfile.ZipFile(buffer, "w", allowZip64=True) as archive:
        archive.writestr(EXPORT_NAME, export, compress_type=zipfile.ZIP_DEFLATED)
        for index in range(1, count):
            folder = _TOP_FOLDERS[index % len(_TOP_FOLDERS)]
            name = f"{folder}/part_{index // 1000:03d}/item_{index:07d}.json"
            archive.writestr(name, b'{"index": %d}\n' % index, compress_type=zipfile.ZIP_STORED)
            names.append(name)
    return Archive(buffer.getvalue(), tuple(names))


@functools.lru_cache(maxsize=2)
def build_big_central_directory(count: int) -> Archive:
    """``count`` empty entries whose names make the central directory larger than 1 MiB."""
    # 46 bytes of fixed central directory header per entry, then the name.
    name_length = max(200, math.ceil(BIG_CENTRAL_DIRECTORY_BYTES / count) - 46)
    if name_length > _MAX_NAME:
        raise ArchiveSpecError(f"count must be at least {math.ceil(BIG_CENTRAL_DIRECTORY_BYTES / 65_000)}")
    buffer = io.BytesIO()
    names = []
    with zipfile.ZipFile(buffer, "w", allowZip64=True) as archive:
        for index in range(count):
            folder = _TOP_FOLDERS[index % len(_TOP_FOLDERS)]
            head = f"{folder}/{index:07d}_"
            name = head + "long_name_" * (name_length // 10 + 1)
            name = name[: name_length - 5] + ".json"
            archive.writestr(name, b"", compress_type=zipfile.ZIP_STORED)
            names.append(name)
    return Archive(buffer.getvalue(), tuple(names))


@dataclass(frozen=True)
class _RawEntry:
    """One entry of a hand-written zip: its name exactly as stored, and its stored (compressed) data."""

    name: bytes
    flags: int
    method: int
    crc: int
    size: int
    data: bytes

    @property
    def shown(self) -> str:
        """The name as ``zipfile`` decodes it."""
        return self.name.decode("utf-8" if self.flags & _UTF8_FLAG else "cp437")


def _stored(name: str | bytes, data: bytes) -> _RawEntry:
    raw, flags = (name, 0) if isinstance(name, bytes) else _encode_name(name)
    return _RawEntry(raw, flags, zipfile.ZIP_STORED, zlib.crc32(data), len(data), data)


def _encode_name(name: str) -> tuple[bytes, int]:
    try:
        return name.encode("ascii"), 0
    except UnicodeEncodeError:
        return name.encode("utf-8"), _UTF8_FLAG


@functools.cache
def _zeros_deflated(size: int) -> tuple[bytes, int]:
    """``size`` zero bytes as a raw deflate stream, and their CRC-32 (computed once per process)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = bytes(1024 * 1024)
    parts, crc, left = [], 0, size
    while left:
        piece = block[: min(left, len(block))]
        parts.append(compressor.compress(piece))
        crc = zlib.crc32(piece, crc)
        left -= len(piece)
    parts.append(compressor.flush())
    return b"".join(parts), crc


HOSTILE_NAMES: tuple[str | bytes, ...] = (
    "../../../../../../tmp/evil.txt",
    "Activity/../../escape.json",
    "/etc/passwd",
    "//server/share/evil.txt",
    "C:/Windows/System32/evil.dll",
    "..\\..\\Windows\\evil.bat",
    "Comment\\back\\slashes.json",
    "Activity/\x1b[31mred\x1b[0m\x1b]0;title\x07.json",
    "Direct Messages/line\nbreak.json",
    "Direct Messages/carriage\rreturn.json",
    "Profile/tab\tand\x7fdel.json",
    b"Profile/not-utf8-\x81\x9a\xe4\xff.json",  # UTF-8 flag clear: cp437 to zipfile, invalid as UTF-8
    "Profile/ünïcödé-名前.json",  # UTF-8 with the flag set: the benign non-ASCII case
    "",
    "Posts/" + "d" * 300 + "/" + "very_long_name_" * 550 + ".json",
    "Activity/trailing-dot.",
    "Activity/ leading and trailing spaces ",
)


@functools.lru_cache(maxsize=1)
def build_hostile_names() -> Archive:
    """The export, entries with hostile names, and a few zip-bomb-like deflated runs of zeros."""
    export = json.dumps(_user_data(random.Random(7), 7), indent=2).encode()
    entries = [_stored(EXPORT_NAME, export)]
    for number, name in enumerate(HOSTILE_NAMES):
        entries.append(_stored(name, b'{"hostile": %d}\n' % number))
    bomb, crc = _zeros_deflated(ZIP_BOMB_BYTES)
    for number in range(1, ZIP_BOMB_ENTRIES + 1):
        raw, flags = _encode_name(f"Posts/Media/zeros_{number}.bin")
        entries.append(_RawEntry(raw, flags, zipfile.ZIP_DEFLATED, crc, ZIP_BOMB_BYTES, bomb))
    return Archive(_write_zip(entries), tuple(entry.shown for entry in entries))


def _write_zip(entries: list[_RawEntry]) -> bytes:
    """A plain (not ZIP64) zip of ``entries``, names written exactly as given."""
    out = io.BytesIO()
    central = io.BytesIO()
    dos_time, dos_date = 0, (2025 - 1980) << 9 | 1 << 5 | 1  # 2025-01-01 00:00
    for entry in entries:
        offset = out.tell()
        version = 20
        out.write(
            struct.pack(
                "<4s5H3L2H",
                b"PK\x03\x04",
                version,
                entry.flags,
                entry.method,
                dos_time,
                dos_date,
                entry.crc,
                len(entry.data),
                entry.size,
                len(entry.name),
                0,
            )
        )
        out.write(entry.name)
        out.write(entry.data)
        central.write(
            struct.pack(
                "<4s6H3L5H2L",
                b"PK\x01\x02",
                3 << 8 | version,  # made by: Unix
                version,
                entry.flags,
                entry.method,
                dos_time,
                dos_date,
                entry.crc,
                len(entry.data),
                entry.size,
                len(entry.name),
                0,
                0,
                0,
                0,
                0o100644 << 16,
                offset,
            )
        )
        central.write(entry.name)
    start = out.tell()
    directory = central.getvalue()
    out.write(directory)
    out.write(
        struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(entries), len(entries), len(directory), start, 0)
    )
    return out.getvalue()
