"""What callers send, validated before anything is called: ids, tokens, JSON bodies, ``Prefer``.

Every parser raises the taxonomy's error for the caller (``invalid_request`` or ``missing_token``) with a
message that names what was wrong, and never echoes a token.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, TypeGuard

from tiktok_archive.models.errors import InvalidRequestError, MissingTokenError, ServiceError

INT64_MAX = 2**63 - 1
_DECIMAL = re.compile(r"[0-9]+")
_INT64_DIGITS = len(str(INT64_MAX))
# Python refuses to read an integer of more than 4,300 digits (CVE-2020-10735); a JSON number that long
# is read as "too large" instead, so that it is refused as out of range, not as invalid JSON.
_LONGEST_INT = 4300
# TikTok's tokens are not RFC 6750 b64tokens (``act.…!4667.e1``) and TikTok publishes no grammar: a
# token is any visible ASCII (0x21-0x7E) of bounded length. Nothing else — no whitespace, no control
# character, nothing beyond ASCII — may reach a header, where it could split it.
MAX_TOKEN_LENGTH = 2048
_VISIBLE_ASCII = re.compile(rf"[\x21-\x7e]{{1,{MAX_TOKEN_LENGTH}}}")


def is_int_in(value: object, low: int, high: int) -> TypeGuard[int]:
    """Whether ``value`` is a whole number (a JSON integer, not a boolean) within ``low``..``high``."""
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def parse_request_id(value: object) -> int:
    """Validate a ``request_id`` given as a JSON integer or a decimal string.

    Returns:
        the id as an exact int in 1..2^63-1.

    Raises:
        InvalidRequestError: missing, a bool, a float, not a number, or out of range.
    """
    if value is None:
        raise InvalidRequestError("request_id is required")
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InvalidRequestError(
            "request_id must be a positive 64-bit integer, as a JSON integer or a decimal string"
        )
    if isinstance(value, str):
        if not _DECIMAL.fullmatch(value):
            raise InvalidRequestError("request_id must contain decimal digits only")
        digits = value.lstrip("0") or "0"
        value = int(digits) if len(digits) <= _INT64_DIGITS else INT64_MAX + 1
    if not 0 < value <= INT64_MAX:
        raise InvalidRequestError(f"request_id must be between 1 and {INT64_MAX}")
    return value


def is_token_shaped(value: str) -> bool:
    """Whether ``value`` can be a TikTok token: 1 to 2,048 characters of visible ASCII (0x21-0x7E)."""
    return _VISIBLE_ASCII.fullmatch(value) is not None


def parse_access_token(value: object) -> str:
    """Validate a bare access token (as carried in an SQS message) as TikTok issues them.

    Any visible ASCII is accepted (TikTok's tokens carry ``!`` and ``.``: ``act.…!4667.e1``), at most
    :data:`MAX_TOKEN_LENGTH` characters; the token is never parsed further.

    Raises:
        MissingTokenError: absent, empty, too long, or holding whitespace, control or non-ASCII
            characters.
    """
    if not isinstance(value, str) or not value:
        raise MissingTokenError("an access token is required")
    if not is_token_shaped(value):
        raise MissingTokenError(
            f"the access token must be 1 to {MAX_TOKEN_LENGTH} visible ASCII characters "
            "(no spaces, control or non-ASCII characters)"
        )
    return value


def parse_json_object(body: str | bytes | None) -> dict[str, Any]:
    """Decode a JSON object body.

    Raises:
        InvalidRequestError: empty, not JSON, or not an object.
    """
    if body is None or not body.strip():
        raise InvalidRequestError("a JSON body is required")
    return load_json_object(body, "the body", InvalidRequestError)


def load_json_object(
    text: str | bytes, what: str, error: Callable[[str], ServiceError], **options: Any
) -> dict[str, Any]:
    """``text`` (bytes: UTF-8) as a JSON object; ``options`` go to :func:`json.loads`.

    Raises:
        ``error("<what> …")``: not UTF-8, not JSON (or refused by ``options``' hooks), nested too
            deeply, or not an object.
    """
    options.setdefault("parse_int", _parse_int)
    try:
        document = json.loads(text.decode("utf-8") if isinstance(text, bytes) else text, **options)
    except ValueError:  # UnicodeDecodeError is one, as are the hooks' refusals
        raise error(f"{what} is not valid JSON") from None
    except RecursionError:
        # json.loads recurses once per nesting level: 100,000 "[" exhaust the stack.
        raise error(f"{what} is nested too deeply") from None
    if not isinstance(document, dict):
        raise error(f"{what} must be a JSON object")
    return document


def _parse_int(text: str) -> int:
    """A JSON integer; one too long for Python to read is read as a number beyond any range here."""
    if len(text.lstrip("-")) > _LONGEST_INT:
        return -(INT64_MAX + 1) if text.startswith("-") else INT64_MAX + 1
    return int(text)


def prefers_async(value: str | None) -> bool:
    """Whether a ``Prefer`` header (RFC 7240) asks for ``respond-async``, among other preferences."""
    for preference in (value or "").split(","):
        name = preference.split(";")[0].split("=")[0].strip().lower()
        if name == "respond-async":
            return True
    return False
