"""Pages of a list: how many items a page holds (``limit``) and where the next one starts (``next``).

``next`` is opaque to callers: the position (``created_at``, ``request_id``) of the last item of a page,
in URL-safe base64. It names no caller: the list it continues is always rebuilt from the caller's own
records, so a token from another caller's list shows nothing of theirs.
"""

from __future__ import annotations

import base64
import binascii
import re

from tiktok_archive.models.errors import InvalidRequestError

MAX_PAGE = 100
DEFAULT_PAGE = 20
_POSITION = re.compile(r"([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z)/([0-9]{1,19})")


def parse_page_size(value: str | None) -> int:
    """A ``limit`` query parameter: 1 to :data:`MAX_PAGE` (default :data:`DEFAULT_PAGE`).

    Raises:
        InvalidRequestError: not a whole number in range.
    """
    if value is None:
        return DEFAULT_PAGE
    if not value.isascii() or not value.isdigit() or not 1 <= int(value) <= MAX_PAGE:
        raise InvalidRequestError(f"limit must be a whole number from 1 to {MAX_PAGE}")
    return int(value)


def format_position(position: tuple[str, int] | None) -> str | None:
    """The ``next`` token of a page position (opaque to callers: URL-safe base64)."""
    if position is None:
        return None
    text = f"{position[0]}/{position[1]}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def parse_position(token: str | None) -> tuple[str, int] | None:
    """The position a ``next`` token stands for.

    Raises:
        InvalidRequestError: not a token :func:`format_position` made.
    """
    if token is None:
        return None
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("ascii")
    except (binascii.Error, ValueError):
        text = ""
    match = _POSITION.fullmatch(text) if len(token) <= 80 else None
    if match is None:
        raise InvalidRequestError("next must be the next token of a previous page")
    return match.group(1), int(match.group(2))
