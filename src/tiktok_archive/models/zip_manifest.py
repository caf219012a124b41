"""What a stored archive holds, from its central directory alone: the manifest.

A zip's central directory lists every entry (name, sizes, method) at the end of the file; the end
record :class:`~tiktok_archive.models.zip_tail.ZipTail` already checks says where it starts and how long
it is. Reading it needs neither the entries' data nor any extraction, so an archive built to hurt
whoever unpacks it (a zip bomb, names with ``../`` or control characters) is only described: its names
are text, escaped for display, counted as suspicious when extracting them naively would write outside a
folder or mislead a terminal, and its compression ratio is reported, not acted on.

The manifest is bounded whatever the archive: at most :data:`MAX_DIRECTORY_BYTES` of the directory are
read and :data:`MAX_ENTRIES` entries listed (beyond either it says ``truncated`` and why), at most
:data:`MAX_FOLDERS` folders are named, and names are cut to :data:`MAX_NAME_CHARS` characters, so it
fits a DynamoDB item and an EventBridge event.
"""

from __future__ import annotations

import struct
import unicodedata
from dataclasses import dataclass, field
from typing import Any

MAX_DIRECTORY_BYTES = 4 * 1024 * 1024
MAX_ENTRIES = 100_000
MAX_FOLDERS = 100
MAX_NAME_CHARS = 200
MAX_EXAMPLES = 5

_CENTRAL = struct.Struct("<4s6H3L5H2L")  # the fixed 46 bytes of a central directory header
_SIGNATURE = b"PK\x01\x02"
_UTF8_FLAG = 0x0800
_ZIP64_EXTRA = 0x0001
_ROOT = "."  # the folder of entries at the archive's top level
_CUT = "cut"  # the bytes ended inside an entry


@dataclass(frozen=True)
class DirectoryLocation:
    """Where an archive's central directory is, as its end records say (ZIP64 values when present)."""

    entries: int
    offset: int
    size: int


@dataclass
class _Folder:
    entries: int = 0
    bytes: int = 0


@dataclass
class _Summary:
    listed: int = 0
    uncompressed: int = 0
    compressed: int = 0
    max_ratio: float = 0.0
    suspicious: int = 0
    examples: list[str] = field(default_factory=list)
    folders: dict[str, _Folder] = field(default_factory=dict)


def build_manifest(location: DirectoryLocation, directory: bytes) -> dict[str, Any]:
    """The manifest of an archive from its central directory's first bytes.

    Args:
        location: the directory's place and entry count, from the end records.
        directory: the directory's bytes from its start: all of them, or the first
            :data:`MAX_DIRECTORY_BYTES` when it is longer (the manifest then says ``truncated``).

    Returns:
        ``entries`` (the end record's count), ``listed_entries``, ``uncompressed_bytes`` and
        ``compressed_bytes`` (of the listed entries), ``max_compression_ratio``, ``folders``
        (``[{"name", "entries", "bytes"}]`` by top-level folder, largest first; ``"."`` for entries at
        the top level), ``folders_omitted``, ``suspicious_names`` with up to five ``suspicious_examples``,
        ``truncated`` and ``truncated_reason`` (``entries``, ``size`` or ``damaged``; ``null`` when whole).
    """
    summary = _Summary()
    held = directory[: min(location.size, MAX_DIRECTORY_BYTES)]
    reason = _read(held, summary)
    if reason == _CUT or (reason is None and summary.listed < location.entries):
        reason = "size" if len(held) < location.size else "damaged"
    elif reason is None and summary.listed > location.entries:
        reason = "damaged"  # more entries than the end record counts
    largest = sorted(summary.folders.items(), key=lambda item: (-item[1].bytes, item[0]))
    return {
        "entries": location.entries,
        "listed_entries": summary.listed,
        "uncompressed_bytes": summary.uncompressed,
        "compressed_bytes": summary.compressed,
        "max_compression_ratio": round(summary.max_ratio, 1),
        "folders": [
            {"name": name, "entries": folder.entries, "bytes": folder.bytes}
            for name, folder in largest[:MAX_FOLDERS]
        ],
        "folders_omitted": max(0, len(largest) - MAX_FOLDERS),
        "suspicious_names": summary.suspicious,
        "suspicious_examples": summary.examples,
        "truncated": reason is not None,
        "truncated_reason": reason,
    }


def _read(directory: bytes, summary: _Summary) -> str | None:
    """List the directory's entries into ``summary``; why it stopped early, or ``None``."""
    at = 0
    end = len(directory)
    while at < end:
        if summary.listed >= MAX_ENTRIES:
            return "entries"
        if at + _CENTRAL.size > end:
            return _CUT
        fields = _CENTRAL.unpack_from(directory, at)
        signature, flags, compressed, uncompressed = fields[0], fields[3], fields[8], fields[9]
        name_length, extra_length, comment_length = fields[10:13]
        if signature != _SIGNATURE:
            return "damaged"
        name_at = at + _CENTRAL.size
        extra_at = name_at + name_length
        following = extra_at + extra_length + comment_length
        if following > end:
            return _CUT
        raw_name = directory[name_at:extra_at]
        uncompressed, compressed = _zip64_sizes(
            directory[extra_at : extra_at + extra_length], uncompressed, compressed
        )
        _count(summary, _decode(raw_name, flags), uncompressed, compressed)
        at = following
    return None


def _zip64_sizes(extra: bytes, uncompressed: int, compressed: int) -> tuple[int, int]:
    """The real sizes when the header says 0xFFFFFFFF and a ZIP64 extra field holds them (in order)."""
    at = 0
    while at + 4 <= len(extra):
        tag, length = struct.unpack_from("<2H", extra, at)
        body = extra[at + 4 : at + 4 + length]
        if tag == _ZIP64_EXTRA:
            values = [struct.unpack_from("<Q", body, i)[0] for i in range(0, len(body) - 7, 8)]
            if uncompressed == 0xFFFFFFFF and values:
                uncompressed = values.pop(0)
            if compressed == 0xFFFFFFFF and values:
                compressed = values.pop(0)
            break
        at += 4 + length
    return uncompressed, compressed


def _decode(raw: bytes, flags: int) -> str:
    """A name as the zip spec says: UTF-8 when flagged, IBM code page 437 otherwise."""
    return raw.decode("utf-8", errors="replace") if flags & _UTF8_FLAG else raw.decode("cp437")


def _count(summary: _Summary, name: str, uncompressed: int, compressed: int) -> None:
    summary.listed += 1
    summary.uncompressed += uncompressed
    summary.compressed += compressed
    if uncompressed:
        summary.max_ratio = max(summary.max_ratio, uncompressed / max(compressed, 1))
    if is_suspicious(name):
        summary.suspicious += 1
        if len(summary.examples) < MAX_EXAMPLES:
            summary.examples.append(display_name(name))
    top = name.split("/", 1)[0] if "/" in name else _ROOT
    folder = summary.folders.setdefault(display_name(top) if top else "/", _Folder())
    folder.entries += 1
    folder.bytes += uncompressed


def is_suspicious(name: str) -> bool:
    r"""Whether unpacking ``name`` naively could write outside the target folder or mislead a reader.

    Absolute paths (``/x``, ``\x``, ``C:x``), ``..`` segments (with either separator), and any control
    or bidirectional-formatting character.
    """
    segments = name.replace("\\", "/").split("/")
    return (
        name.startswith(("/", "\\"))
        or (len(name) > 1 and name[1] == ":")
        or ".." in segments
        or any(unicodedata.category(c) in ("Cc", "Cf") for c in name)
    )


def display_name(name: str) -> str:
    """``name`` as safe text: control and formatting characters escaped, at most :data:`MAX_NAME_CHARS`."""
    text = "".join(
        c
        if unicodedata.category(c) not in ("Cc", "Cf")
        else (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")
        for c in name
    )
    return text if len(text) <= MAX_NAME_CHARS else text[: MAX_NAME_CHARS - 1] + "…"
