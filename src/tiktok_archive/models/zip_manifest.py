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
from dataclasses import dataclass
from typing import Any

MAX_DIRECTORY_BYTES = 4 * 1024 * 1024
MAX_ENTRIES = 100_000
MAX_FOLDERS = 100
MAX_NAME_CHARS = 200
MAX_EXAMPLES = 5

_CENTRAL = struct.Struct("<4s6H3L5H2L")  # the fixed 46 bytes of a central directory header
CENTRAL_HEADER_SIGNATURE = b"PK\x01\x02"
_UTF8_FLAG = 0x0800
_ZIP64_EXTRA = 0x0001
_ZIP64_EXTRA_HEADER = struct.Struct("<2H")  # tag, length
_ZIP64_VALUE = struct.Struct("<Q")
_ZIP64_MARK = 0xFFFFFFFF  # a 32-bit size saying "the real value is in the ZIP64 extra field"
_ROOT = "."  # the folder of entries at the archive's top level
_CUT = "cut"  # the bytes ended inside an entry
# Characters that change how the text around them is shown rather than showing themselves: controls
# (C0, DEL, C1), formatting (bidirectional overrides and isolates, zero-width), line and paragraph
# separators.
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp"})


@dataclass(frozen=True)
class DirectoryLocation:
    """Where an archive's central directory is, as its end records say (ZIP64 values when present)."""

    entries: int
    offset: int
    size: int


@dataclass(frozen=True)
class _Listing:
    """What the entries read add up to (Python ints: a zip bomb's sizes are only numbers)."""

    listed: int
    uncompressed: int
    compressed: int
    max_ratio: float
    suspicious: int
    examples: list[str]
    folders: dict[str, list[int]]  # by the top-level folder's raw name: [entries, uncompressed bytes]
    stopped: str | None  # why the reading stopped before the end of the bytes, or None


def build_manifest(
    location: DirectoryLocation,
    directory: bytes,
    *,
    max_bytes: int = MAX_DIRECTORY_BYTES,
    max_entries: int = MAX_ENTRIES,
) -> dict[str, Any]:
    """The manifest of an archive from its central directory's first bytes.

    Nothing in ``directory`` is trusted: a length that runs past its end, a wrong signature or more
    entries than the end record counts stops the reading and marks the manifest ``truncated``; no size it
    claims is used to allocate anything. Time and memory are linear in ``len(directory)`` (at most
    ``max_bytes`` of it are read).

    Args:
        location: the directory's place and entry count, from the end records.
        directory: the directory's bytes from its start: all of them, or the first ``max_bytes`` when it
            is longer (the manifest then says ``truncated``).
        max_bytes: how much of the directory is read (:data:`MAX_DIRECTORY_BYTES`).
        max_entries: how many entries are listed (:data:`MAX_ENTRIES`).

    Returns:
        ``entries`` (the end record's count), ``listed_entries``, ``uncompressed_bytes`` and
        ``compressed_bytes`` (of the listed entries), ``max_compression_ratio``, ``folders``
        (``[{"name", "entries", "bytes"}]`` by top-level folder, largest first; ``"."`` for entries at
        the top level), ``folders_omitted``, ``suspicious_names`` with up to five ``suspicious_examples``,
        ``truncated`` and ``truncated_reason`` (``entries``, ``size`` or ``damaged``; ``null`` when whole).
    """
    held = directory[: max(0, min(location.size, max_bytes))]
    listing = _read(held, max_entries)
    reason = listing.stopped
    if reason == _CUT or (reason is None and listing.listed < location.entries):
        reason = "size" if len(held) < location.size else "damaged"
    elif reason is None and listing.listed > location.entries:
        reason = "damaged"  # more entries than the end record counts
    largest = sorted(_shown_folders(listing).items(), key=lambda item: (-item[1][1], item[0]))
    return {
        "entries": location.entries,
        "listed_entries": listing.listed,
        "uncompressed_bytes": listing.uncompressed,
        "compressed_bytes": listing.compressed,
        "max_compression_ratio": round(listing.max_ratio, 1),
        "folders": [
            {"name": name, "entries": entries, "bytes": size}
            for name, (entries, size) in largest[:MAX_FOLDERS]
        ],
        "folders_omitted": max(0, len(largest) - MAX_FOLDERS),
        "suspicious_names": listing.suspicious,
        "suspicious_examples": listing.examples,
        "truncated": reason is not None,
        "truncated_reason": reason,
    }


def _read(directory: bytes, max_entries: int) -> _Listing:
    """List the directory's entries, up to ``max_entries``, stopping at the first one that does not parse."""
    # Locals rather than attributes in this loop: it runs up to 100,000 times per archive.
    unpack, header = _CENTRAL.unpack_from, _CENTRAL.size
    listed = uncompressed_total = compressed_total = suspicious = 0
    max_ratio = 0.0
    examples: list[str] = []
    folders: dict[str, list[int]] = {}
    stopped: str | None = None
    at, end = 0, len(directory)
    while at < end:
        if listed >= max_entries:
            stopped = "entries"
            break
        if at + header > end:
            stopped = _CUT
            break
        fields = unpack(directory, at)
        name_at = at + header
        extra_at = name_at + fields[10]
        following = extra_at + fields[11] + fields[12]  # after the name, the extra field and the comment
        if fields[0] != CENTRAL_HEADER_SIGNATURE or following > end:
            stopped = "damaged" if fields[0] != CENTRAL_HEADER_SIGNATURE else _CUT
            break
        flags, compressed, uncompressed = fields[3], fields[8], fields[9]
        if _ZIP64_MARK in (compressed, uncompressed):
            extra = directory[extra_at : extra_at + fields[11]]
            uncompressed, compressed = _zip64_sizes(extra, uncompressed, compressed)
        raw_name = directory[name_at:extra_at]
        name = raw_name.decode("utf-8", errors="replace") if flags & _UTF8_FLAG else raw_name.decode("cp437")
        listed += 1
        uncompressed_total += uncompressed
        compressed_total += compressed
        # An entry that claims content but no compressed bytes counts as compressed to one byte.
        if uncompressed and uncompressed / (compressed or 1) > max_ratio:
            max_ratio = uncompressed / (compressed or 1)
        if is_suspicious(name):
            suspicious += 1
            if len(examples) < MAX_EXAMPLES:
                examples.append(display_name(name))
        slash = name.find("/")
        top = name[:slash] if slash >= 0 else _ROOT
        folder = folders.get(top)
        if folder is None:
            folders[top] = [1, uncompressed]
        else:
            folder[0] += 1
            folder[1] += uncompressed
        at = following
    return _Listing(
        listed, uncompressed_total, compressed_total, max_ratio, suspicious, examples, folders, stopped
    )


def _zip64_sizes(extra: bytes, uncompressed: int, compressed: int) -> tuple[int, int]:
    """The real sizes when the header says 0xFFFFFFFF and a ZIP64 extra field holds them.

    The ZIP64 extra field holds, in this order, only the values whose 32-bit field is marked; a marked
    value it does not hold stays as the header says.
    """
    at = 0
    while at + _ZIP64_EXTRA_HEADER.size <= len(extra):
        tag, length = _ZIP64_EXTRA_HEADER.unpack_from(extra, at)
        body = extra[at + 4 : at + 4 + length]
        if tag == _ZIP64_EXTRA:
            values = [_ZIP64_VALUE.unpack_from(body, i)[0] for i in range(0, len(body) - 7, 8)]
            if uncompressed == _ZIP64_MARK and values:
                uncompressed = values.pop(0)
            if compressed == _ZIP64_MARK and values:
                compressed = values.pop(0)
            break
        at += 4 + length
    return uncompressed, compressed


def _shown_folders(listing: _Listing) -> dict[str, list[int]]:
    """The folders by the name shown for them; names that show alike (escaped, cut) are one folder."""
    shown: dict[str, list[int]] = {}
    for top, (entries, size) in listing.folders.items():
        name = display_name(top) if top else "/"  # "/x": an absolute path, its top-level folder empty
        folder = shown.setdefault(name, [0, 0])
        folder[0] += entries
        folder[1] += size
    return shown


def is_suspicious(name: str) -> bool:
    r"""Whether unpacking ``name`` naively could write outside the target folder or mislead a reader.

    Absolute paths (``/x``, ``\x``, ``C:x``), ``..`` segments (with either separator), and any control,
    formatting (bidirectional, zero-width) or line-separator character.
    """
    return (
        name.startswith(("/", "\\"))
        or name[1:2] == ":"
        or (".." in name and ".." in name.replace("\\", "/").split("/"))
        or _has_hidden(name)
    )


def display_name(name: str) -> str:
    r"""``name`` as safe text: hidden characters escaped, at most :data:`MAX_NAME_CHARS` characters.

    Hidden characters (controls: C0, DEL, C1; formatting: bidirectional overrides and isolates,
    zero-width; the line and paragraph separators) are shown as ``\x1b`` or ``\u202e``. ``../``, leading
    slashes and backslashes are kept as they are: here they are only text.
    """
    text = "".join(_escape(c) if _is_hidden(c) else c for c in name) if _has_hidden(name) else name
    return text if len(text) <= MAX_NAME_CHARS else text[: MAX_NAME_CHARS - 1] + "…"


def _has_hidden(text: str) -> bool:
    # str.isprintable() is False for every hidden character (and for a few harmless ones, such as
    # no-break spaces), and runs in C: most names are decided without looking at each character.
    return not text.isprintable() and any(_is_hidden(c) for c in text)


def _escape(character: str) -> str:
    code = ord(character)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _is_hidden(character: str) -> bool:
    return unicodedata.category(character) in _HIDDEN_CATEGORIES
