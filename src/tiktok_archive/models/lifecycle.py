"""Messages of the lifecycle queue, parsed: a scheduled status check, or webhook work."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tiktok_archive.models.download import INT64_MAX, is_int_in, parse_request_id
from tiktok_archive.models.errors import InvalidRequestError
from tiktok_archive.models.webhook import AUTHORIZATION_REMOVED, DOWNLOAD_READY

MAX_SEQ = 1_000_000


@dataclass(frozen=True)
class StatusCheck:
    """Check number ``seq`` of a waiting request."""

    request_id: int
    seq: int


def parse_status_check(document: dict[str, Any]) -> StatusCheck:
    """A ``{"kind": "check", "request_id", "seq"}`` message.

    Raises:
        InvalidRequestError: another kind, or a field out of its range.
    """
    if document.get("kind") != "check":
        raise InvalidRequestError("not a status check message")
    seq = document.get("seq")
    if not is_int_in(seq, 0, MAX_SEQ):
        raise InvalidRequestError("seq must be a whole number")
    return StatusCheck(parse_request_id(document.get("request_id")), seq)


@dataclass(frozen=True)
class ArchiveReadyWork:
    """TikTok announced (webhook) that ``request_id``'s archive is ready."""

    request_id: int


@dataclass(frozen=True)
class AuthorizationRemovedWork:
    """TikTok announced (webhook) that the user disconnected the app."""

    user_openid: str
    reason: int | None


LifecycleMessage = StatusCheck | ArchiveReadyWork | AuthorizationRemovedWork


def parse_lifecycle_message(document: dict[str, Any]) -> LifecycleMessage:
    """A status check or the work of a webhook delivery.

    Raises:
        InvalidRequestError: neither, or a field out of its range.
    """
    if document.get("kind") != "webhook":
        return parse_status_check(document)
    event = document.get("event")
    if event == DOWNLOAD_READY:
        return ArchiveReadyWork(parse_request_id(document.get("request_id")))
    user = document.get("user_openid")
    reason = document.get("reason")
    if event == AUTHORIZATION_REMOVED and isinstance(user, str) and user:
        return AuthorizationRemovedWork(user, reason if is_int_in(reason, -INT64_MAX, INT64_MAX) else None)
    raise InvalidRequestError("not a lifecycle message")
