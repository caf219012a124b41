"""The record of one portability request's download, as stored in DynamoDB and shown to its owner.

It never holds a token nor anything derived from one: the user's tokens live sealed in their grant
(see ``adapters/grants.py``). A record belongs to the caller that created it (``caller``: the backend's
AWS principal): only that caller sees it, cancels it, or erases it with its user.

Lifecycle (see the README's diagram):

- ``waiting``: added with ``POST /requests``; TikTok is preparing the archive; the service checks its
  status on a schedule (``next_check_at``).
- ``queued``: the archive is ready (or an async ``POST /downloads``): a download job waits for the worker.
- ``in_progress``: an invocation holds the claim until its deadline plus a grace period, and reports
  its progress every few seconds.
- ``completed``: the archive is stored; every later request gets a fresh link.
- ``failed``: the last attempt failed (``error`` says why, and whether it is worth another).
- ``expired``, ``cancelled``, ``revoked``: TikTok's window closed; the owner cancelled; the user
  disconnected the app, or the caller erased the user. Nothing is stored any more, and no link is ever
  handed out again: the record is a tombstone until it expires.

``waiting``, ``queued``, ``failed`` and an ``in_progress`` whose claim lapsed can be claimed; the last
four are final.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from tiktok_archive.models.clock import format_utc


class DownloadStatus(StrEnum):
    """Where a download is in its lifecycle."""

    WAITING = "waiting"
    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    REVOKED = "revoked"

    @property
    def final(self) -> bool:
        """Whether nothing more can happen to the download (no claim, no poll, no link but completed's)."""
        return self in _FINAL


# What may no longer be handed out as a link, nor stored: the owner or TikTok ended the request.
ENDED = frozenset({DownloadStatus.EXPIRED, DownloadStatus.CANCELLED, DownloadStatus.REVOKED})
_FINAL = ENDED | {DownloadStatus.COMPLETED}


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
class Progress:
    """A running download's progress, as last reported (at most every few seconds)."""

    bytes_received: int
    parts_uploaded: int
    mib_per_second: float
    at: datetime

    def to_body(self) -> dict[str, Any]:
        return {
            "bytes_received": self.bytes_received,
            "parts_uploaded": self.parts_uploaded,
            "mib_per_second": self.mib_per_second,
            "updated_at": format_utc(self.at),
        }


@dataclass(frozen=True)
class Preparation:
    """What is known of TikTok's preparation of a request added with ``POST /requests``.

    Attributes:
        data_format: ``json`` or ``text``.
        categories: TikTok's ``category_selection_list``.
        tiktok_status: TikTok's last answered status (``pending``, ``downloading`` …).
        apply_time: when TikTok says the request was added.
        collect_time: when TikTok says the data was collected.
        next_check_at: when the service asks TikTok again (while ``waiting``).
        checks: how many times TikTok was asked.
        give_up_at: when the service stops waiting.
    """

    data_format: str
    categories: tuple[str, ...]
    tiktok_status: str | None = None
    apply_time: datetime | None = None
    collect_time: datetime | None = None
    next_check_at: datetime | None = None
    checks: int = 0
    give_up_at: datetime | None = None

    def to_body(self) -> dict[str, Any]:
        return {
            "data_format": self.data_format,
            "categories": list(self.categories),
            "status": self.tiktok_status,
            "apply_time": _timestamp(self.apply_time),
            "collect_time": _timestamp(self.collect_time),
            "checks": self.checks,
        }


@dataclass(frozen=True)
class DownloadRecord:
    """One ``request_id``'s download.

    Attributes:
        lease_expires_at: while ``queued`` or ``in_progress``, when the claim lapses and another
            invocation may take the download over.
        caller: the API caller that created the record (None: a backend's own queue message); the only
            one the API shows it to.
        user_openid: the TikTok user's ``open_id`` when TikTok named it (its refresh answer for the
            tokens handed over, or its webhook): what the user's purge finds the record by.
        grant_id: the user's grant (sealed tokens) the service uses for this request, if any.
        preparation: TikTok's preparation, for a request added with ``POST /requests``.
        poll_seq: the number of the status check the schedule expects next (older checks are stale).
        poll_interval: seconds between two status checks now.
        progress: while ``in_progress``, the last reported progress.
        manifest: once ``completed``, what the archive holds (see ``zip_manifest``).
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
    caller: str | None = None
    user_openid: str | None = None
    grant_id: str | None = None
    preparation: Preparation | None = None
    poll_seq: int = 0
    poll_interval: int | None = None
    progress: Progress | None = None
    manifest: dict[str, Any] | None = field(default=None, compare=False)

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
            "open_id": self.user_openid,
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
        if self.preparation is not None:
            body["tiktok"] = self.preparation.to_body()
            if self.status is DownloadStatus.WAITING:
                body["next_check_at"] = _timestamp(self.preparation.next_check_at)
        if self.status is DownloadStatus.IN_PROGRESS and self.progress is not None:
            body["progress"] = self.progress.to_body()
        if self.manifest is not None:
            body["manifest"] = self.manifest
        return body


@dataclass(frozen=True)
class Answer:
    """A download's record as its caller gets it, with a fresh link to the archive when it is stored."""

    record: DownloadRecord
    url: str | None = None
    expires_at: datetime | None = None

    def to_body(self) -> dict[str, Any]:
        body = self.record.to_body()
        if self.url is not None and self.expires_at is not None:
            body["url"] = self.url
            body["expires_at"] = format_utc(self.expires_at)
        return body


@dataclass(frozen=True)
class Owner:
    """Whom a download is claimed or queued for: what the record's conditional writes check.

    - an API caller (``caller``): may create the record, or act on a record it created;
    - a backend's own download queue message (``caller`` None): may create the record, or act on one
      that no API caller created;
    - the service itself (``service``: a job it queued, with a token it sealed or the user's grant):
      acts on the record it made, whoever's it is.

    ``user_openid`` and ``grant_id``: the user TikTok named and their grant, recorded on a record that
    has none yet.
    """

    caller: str | None
    user_openid: str | None = None
    grant_id: str | None = None
    service: bool = False

    def may_act_on(self, record: DownloadRecord) -> bool:
        """Whether ``record`` is this owner's to act on (and to be told about)."""
        return self.service or record.caller == self.caller


def caller_user(caller: str, user_openid: str) -> str:
    """The ``by-caller-user`` index key of a caller's records of one user."""
    return f"{caller} {user_openid}"


def _timestamp(moment: datetime | None) -> str | None:
    return format_utc(moment) if moment else None
