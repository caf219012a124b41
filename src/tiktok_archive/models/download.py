"""Input and output of one download, independent of the trigger that asked for it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class DownloadRequest:
    """What the transfer service needs: the portability ``request_id`` and the user's access token.

    ``repr`` hides the token so that the object can never leak it through a log line or traceback.
    """

    request_id: int
    access_token: str

    def __repr__(self) -> str:
        return f"DownloadRequest(request_id={self.request_id}, access_token=<redacted>)"


@dataclass(frozen=True)
class StoredArchive:
    """What the S3 leg wrote: where, how many bytes, and their checksum."""

    bucket: str
    key: str
    size_bytes: int
    checksum_crc32: str  # base64 of the big-endian CRC32, as S3 reports x-amz-checksum-crc32


@dataclass(frozen=True)
class DownloadResult:
    """What a transfer returns: the stored archive, a fresh link to it and its manifest (``zip_manifest``)."""

    request_id: int
    archive: StoredArchive
    url: str
    expires_at: datetime
    manifest: dict[str, Any] | None = None
