"""Checks that a streamed archive ends like a whole zip file, from its last bytes only.

A zip archive ends with its central directory and an end-of-central-directory record (EOCD) that says
where that directory starts and how long it is; ZIP64 archives (more than 65,535 entries or beyond
4 GiB) put the real values in a ZIP64 end record found through a locator just before the EOCD. A body
cut short, padded, or stitched from two downloads almost never keeps these numbers consistent with the
byte count, so checking them before completing the upload keeps such bodies out of the bucket without
reading anything twice.
"""

from __future__ import annotations

import struct
from collections import deque

from tiktok_archive.models.tiktok_errors import ArchiveInvalidError
from tiktok_archive.models.zip_manifest import CENTRAL_HEADER_SIGNATURE, DirectoryLocation

EOCD_SIGNATURE = b"PK\x05\x06"
ZIP64_LOCATOR_SIGNATURE = b"PK\x06\x07"
ZIP64_EOCD_SIGNATURE = b"PK\x06\x06"
_EOCD = struct.Struct(
    "<4s4H2LH"
)  # signature, disk, cd disk, entries here, entries, cd size, cd offset, comment
_ZIP64_LOCATOR = struct.Struct("<4sLQL")  # signature, cd disk, zip64 EOCD offset, disks
_ZIP64_EOCD = struct.Struct(
    "<4sQ2H2L4Q"
)  # signature, size, versions, disks, entries here, entries, size, offset
MAX_COMMENT = 0xFFFF
# Enough for the longest EOCD (with a maximal comment), the ZIP64 locator and a ZIP64 record with some
# extensible data.
TAIL_BYTES = _EOCD.size + MAX_COMMENT + _ZIP64_LOCATOR.size + _ZIP64_EOCD.size + 64 * 1024


class ZipTail:
    """Keeps the last :data:`TAIL_BYTES` of a stream and validates them as a zip's end at the end.

    It copies at most the last ``TAIL_BYTES`` of each piece fed (a ``bytes`` piece no longer than that is
    kept as it is), holds at most ``2 × TAIL_BYTES`` (about 256 KiB), and joins them only to verify. A
    piece may be a view of a buffer that is reused afterwards: nothing keeps a reference to it.
    """

    def __init__(self) -> None:
        self._pieces: deque[bytes] = deque()
        self._held = 0
        self.size = 0
        self.directory: DirectoryLocation | None = None
        self._end: bytes = b""  # after verify(): every byte still held, the last ones of the archive

    def feed(self, piece: bytes | bytearray | memoryview) -> None:
        """Account for the next bytes of the stream, keeping a copy of the last ``TAIL_BYTES`` of them."""
        length = len(piece)
        self.size += length
        if length >= TAIL_BYTES:
            self._pieces.clear()
            self._held = 0
        kept = bytes(piece[-TAIL_BYTES:]) if length > TAIL_BYTES else bytes(piece)
        self._pieces.append(kept)
        self._held += len(kept)
        while self._held - len(self._pieces[0]) >= TAIL_BYTES:
            self._held -= len(self._pieces.popleft())

    def verify(self) -> None:
        """Check the end records against the number of bytes fed; sets :attr:`directory`.

        Raises:
            ArchiveInvalidError: no end record, a multi-disk archive, or a central directory whose offset
                and size do not end where the end records begin.
        """
        self._end = b"".join(self._pieces)
        tail = self._end[-TAIL_BYTES:]
        base = self.size - len(tail)  # absolute offset of tail[0]
        at = _find_eocd(tail)
        if at is None:
            raise ArchiveInvalidError(
                "the archive has no end-of-central-directory record: it is cut short or not a zip file"
            )
        (_, disk, cd_disk, entries_here, entries, cd_size, cd_offset, _) = _EOCD.unpack_from(tail, at)
        directory_end = base + at
        locator_at = at - _ZIP64_LOCATOR.size
        if locator_at >= 0 and tail[locator_at : locator_at + 4] == ZIP64_LOCATOR_SIGNATURE:
            entries, cd_size, cd_offset, directory_end = _zip64_directory(tail, base, locator_at)
        elif 0xFFFF in (disk, cd_disk, entries_here, entries) or 0xFFFFFFFF in (cd_size, cd_offset):
            raise ArchiveInvalidError("the archive's end record needs ZIP64 values but has no ZIP64 locator")
        elif disk or cd_disk or entries_here != entries:
            raise ArchiveInvalidError("the archive spans several disks, which a download cannot be")
        if cd_offset + cd_size != directory_end:
            raise ArchiveInvalidError(
                f"the archive's central directory (offset {cd_offset}, {cd_size} bytes) does not end where "
                f"its end record starts (byte {directory_end} of {self.size}): bytes are missing or extra"
            )
        if (entries == 0) != (cd_size == 0):
            raise ArchiveInvalidError("the archive's entry count disagrees with its central directory")
        start = cd_offset - base
        if entries and start >= 0 and tail[start : start + 4] != CENTRAL_HEADER_SIGNATURE:
            raise ArchiveInvalidError("the archive's central directory is not where its end record says")
        self.directory = DirectoryLocation(entries=entries, offset=cd_offset, size=cd_size)

    def held_directory(self, limit: int) -> bytes | None:
        """The first ``limit`` bytes of the verified central directory, if they are still held."""
        if self.directory is None:
            return None
        start = self.directory.offset - (self.size - len(self._end))
        if start < 0:
            return None
        return self._end[start : start + min(limit, self.directory.size)]


def _find_eocd(tail: bytes) -> int | None:
    """Offset of the EOCD whose comment reaches exactly to the end, searching backwards."""
    end = len(tail)
    at = tail.rfind(EOCD_SIGNATURE, max(0, end - _EOCD.size - MAX_COMMENT))
    while at >= 0:
        if at + _EOCD.size <= end:
            comment_length = struct.unpack_from("<H", tail, at + _EOCD.size - 2)[0]
            if at + _EOCD.size + comment_length == end:
                return at
        at = tail.rfind(EOCD_SIGNATURE, max(0, end - _EOCD.size - MAX_COMMENT), at)
    return None


def _zip64_directory(tail: bytes, base: int, locator_at: int) -> tuple[int, int, int, int]:
    """Entries, size and offset of the central directory from the ZIP64 records, and where it must end."""
    _, _, record_offset, disks = _ZIP64_LOCATOR.unpack_from(tail, locator_at)
    record_at = record_offset - base
    if disks > 1 or not 0 <= record_at <= locator_at - _ZIP64_EOCD.size:
        raise ArchiveInvalidError("the archive's ZIP64 locator points outside the archive's end")
    fields = _ZIP64_EOCD.unpack_from(tail, record_at)
    signature, record_size, _, _, disk, cd_disk, entries_here, entries, cd_size, cd_offset = fields
    if signature != ZIP64_EOCD_SIGNATURE or record_at + 12 + record_size != locator_at:
        raise ArchiveInvalidError("the archive's ZIP64 end record is missing or damaged")
    if disk or cd_disk or entries_here != entries:
        raise ArchiveInvalidError("the archive spans several disks, which a download cannot be")
    return entries, cd_size, cd_offset, record_offset
