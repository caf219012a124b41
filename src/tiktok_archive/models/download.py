"""Input and output of one download, independent of the trigger that asked for it."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeGuard

from tiktok_archive.models.errors import InvalidRequestError, MissingTokenError, TransferError

INT64_MAX = 2**63 - 1
_UTC_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_DECIMAL = re.compile(r"[0-9]{1,20}")
# TikTok's tokens are not RFC 6750 b64tokens (``act.…!4667.e1``) and TikTok publishes no grammar: a
# token is any visible ASCII (0x21-0x7E) of bounded length. Nothing else — no whitespace, no control
# character, nothing beyond ASCII — may reach a header, where it could split it.
MAX_TOKEN_LENGTH = 2048
_VISIBLE_ASCII = re.compile(rf"[\x21-\x7e]{{1,{MAX_TOKEN_LENGTH}}}")


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
class QueuedJob:
    """A download queue message: the request id and the token, in clear (a backend's) or sealed (ours).

    ``repr`` shows neither form of the token.
    """

    request_id: int
    access_token: str | None = field(default=None, repr=False)
    encrypted_access_token: str | None = field(default=None, repr=False)
    from_grant: bool = False  # queued by the lifecycle: the user's stored grant provides the token


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


def utc_now() -> datetime:
    """Now, in UTC, to the second: the precision every record, answer and event carries."""
    return datetime.now(UTC).replace(microsecond=0)


def format_utc(moment: datetime) -> str:
    """A UTC moment as the API and the records write it: ``2026-11-27T19:04:28Z``."""
    return moment.strftime(_UTC_FORMAT)


def parse_utc(text: str) -> datetime:
    """The inverse of :func:`format_utc`."""
    return datetime.strptime(text, _UTC_FORMAT).replace(tzinfo=UTC)


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
        value = int(value)
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


def parse_queued_job(request_id: int, document: dict[str, Any]) -> QueuedJob:
    """The job of a download queue message whose ``request_id`` is already parsed.

    ``{"source": "grant"}`` is a job the lifecycle queued for a request added with ``POST /requests``:
    its token comes from the user's stored grant.

    Raises:
        MissingTokenError: neither a well-formed ``access_token`` nor a non-empty
            ``encrypted_access_token``.
    """
    if document.get("source") == "grant":
        return QueuedJob(request_id, from_grant=True)
    encrypted = document.get("encrypted_access_token")
    if encrypted is not None:
        if not isinstance(encrypted, str) or not encrypted or len(encrypted) > 8192:
            raise MissingTokenError("encrypted_access_token must be a base64 string")
        return QueuedJob(request_id, encrypted_access_token=encrypted)
    return QueuedJob(request_id, access_token=parse_access_token(document.get("access_token")))


def parse_json_object(body: str | bytes | None) -> dict[str, Any]:
    """Decode a JSON object body.

    Raises:
        InvalidRequestError: empty, not JSON, or not an object.
    """
    if body is None or not body.strip():
        raise InvalidRequestError("a JSON body is required")
    return load_json_object(body, "the body", InvalidRequestError)


def load_json_object(
    text: str | bytes, what: str, error: Callable[[str], TransferError], **options: Any
) -> dict[str, Any]:
    """``text`` (bytes: UTF-8) as a JSON object; ``options`` go to :func:`json.loads`.

    Raises:
        ``error("<what> …")``: not UTF-8, not JSON (or refused by ``options``' hooks), nested too
            deeply, or not an object.
    """
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


def prefers_async(value: str | None) -> bool:
    """Whether a ``Prefer`` header (RFC 7240) asks for ``respond-async``, among other preferences."""
    for preference in (value or "").split(","):
        name = preference.split(";")[0].split("=")[0].strip().lower()
        if name == "respond-async":
            return True
    return False
