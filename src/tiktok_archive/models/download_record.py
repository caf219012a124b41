"""The record of one download, as stored in DynamoDB and shown to its owner.

It never holds the access token nor anything derived from it: who may see a record is asked of TikTok
each time (see ``DownloadService``).

Lifecycle: ``queued`` (async POST) → ``in_progress`` (an invocation holds the claim until its deadline
plus a grace period) → ``completed`` or ``failed``. A ``failed`` record, a ``queued`` one and an
``in_progress`` one whose claim expired (the invocation crashed or was killed) can be claimed again;
a ``completed`` one is never downloaded again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from tiktok_archive.models.download import format_utc


class DownloadStatus(StrEnum):
    """Where a download is in its lifecycle."""

    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"


@dataclass(frozen=True)
class RecordedError:
    """Why a download failed, as its caller was told."""

    code: str
    message: str
    log_id: str | None
    transient: bool

    def to_body(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "message": self.message,
            "log_id": self.log_id,
            "transient": self.transient,
        }


@dataclass(frozen=True)
class DownloadRecord:
    """One ``request_id``'s download.

    Attributes:
        lease_expires_at: while ``queued`` or ``in_progress``, when the claim lapses and another
            invocation may take the download over.
    """

    request_id: int
    status: DownloadStatus
    created_at: datetime
    updated_at: datetime
    attempts: int
    bucket: str | None = None
    key: str | None = None
    size_bytes: int | None = None
    checksum: str | None = None
    completed_at: datetime | None = None
    error: RecordedError | None = None
    lease_expires_at: datetime | None = None

    def retry_after_seconds(self, now: datetime, longest: int | None = 30) -> int:
        """When to look again at a download that is running: its claim's end, at most ``longest``."""
        if self.lease_expires_at is None:
            return 1
        seconds = math.ceil((self.lease_expires_at - now).total_seconds())
        return max(1, seconds if longest is None else min(longest, seconds))

    def to_body(self) -> dict[str, Any]:
        """The JSON document of the API (``request_id`` as a decimal string; times in UTC)."""
        body: dict[str, Any] = {
            "request_id": str(self.request_id),
            "status": self.status.value,
            "bucket": self.bucket,
            "key": self.key,
            "size_bytes": self.size_bytes,
            "checksum": self.checksum,
            "checksum_algorithm": "CRC32" if self.checksum else None,
            "attempts": self.attempts,
            "created_at": _timestamp(self.created_at),
            "updated_at": _timestamp(self.updated_at),
            "completed_at": _timestamp(self.completed_at),
            "error": self.error.to_body() if self.error else None,
        }
        return body


def _timestamp(moment: datetime | None) -> str | None:
    return format_utc(moment) if moment else None
