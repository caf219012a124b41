"""Messages of the lifecycle queue, parsed: a scheduled status check, or webhook work."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tiktok_archive.models.download import parse_request_id
from tiktok_archive.models.errors import InvalidRequestError

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
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq <= MAX_SEQ:
        raise InvalidRequestError("seq must be a whole number")
    return StatusCheck(parse_request_id(document.get("request_id")), seq)
