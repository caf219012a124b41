"""The events TikTok's webhook deliveries carry: the third step of reading one.

A handler reads a delivery in three steps, each refusing with one of the service's errors: its bytes
as received and their signature (:mod:`webhook_signature`: :func:`raw_body`, 413; :func:`verify_signature`,
401), then :func:`parse_delivery` — the JSON envelope and its ``content`` as a typed event
(:class:`WebhookPayloadError`, 400; :class:`UnknownClientKeyError`, 401).

TikTok delivers at least once and retries anything but a 200 for up to 72 hours, so every result carries a
``delivery_id`` to deduplicate with. Nothing here performs I/O.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, NoReturn, TypeAlias

from tiktok_archive.models.errors import InvalidRequestError
from tiktok_archive.models.inputs import INT64_MAX, is_int_in, load_json_object, parse_request_id
from tiktok_archive.models.portability import MAX_OPEN_ID_LENGTH, is_open_id
from tiktok_archive.models.webhook_errors import (
    UnknownClientKeyError,
    WebhookPayloadError,
)

DOWNLOAD_READY = "portability.download.ready"
AUTHORIZATION_REMOVED = "authorization.removed"
MAX_EVENT_LENGTH = 128

_EVENT = re.compile(rf"[\x21-\x7e]{{1,{MAX_EVENT_LENGTH}}}")


@dataclass(frozen=True)
class DownloadReady:
    """``portability.download.ready``: the archive of ``request_id`` can be downloaded now.

    Attributes:
        request_id: the portability request, an exact int in 1..2^63-1.
        user_openid: the user, when TikTok says (the documented example leaves it out).
        create_time: when TikTok created the event, Unix seconds.
        delivery_id: the hex SHA-256 of the body, the same for every redelivery (see :func:`parse_delivery`).
    """

    request_id: int
    user_openid: str | None
    create_time: int
    delivery_id: str


@dataclass(frozen=True)
class AuthorizationRemoved:
    """``authorization.removed``: the user disconnected the app (or lost the account); the token is revoked.

    Attributes:
        user_openid: the user whose data is to be cleaned up.
        reason: TikTok's reason code (0-5 documented; others kept as sent), None when absent.
        create_time: when TikTok created the event, Unix seconds.
        delivery_id: the hex SHA-256 of the body (see :func:`parse_delivery`).
    """

    user_openid: str
    reason: int | None
    create_time: int
    delivery_id: str


@dataclass(frozen=True)
class OtherEvent:
    """An event the service does not act on; acknowledged so that TikTok stops redelivering it.

    Its ``content`` is not read (nor kept: it may hold personal data).
    """

    event: str
    user_openid: str | None
    create_time: int
    delivery_id: str


WebhookEvent: TypeAlias = DownloadReady | AuthorizationRemoved | OtherEvent


def parse_delivery(raw: bytes, *, client_key: str) -> WebhookEvent:
    """The event of a (verified) delivery body.

    The body is TikTok's JSON object ``{"client_key", "event", "create_time", "user_openid", "content"}``,
    UTF-8, where ``content`` is a JSON object serialized as a string (an object given as is is tolerated).
    Numbers with a fraction or an exponent are never read as floats, so a ``request_id`` cannot be rounded;
    ``NaN``/``Infinity`` and repeated keys are refused, so the body has one reading only.

    - ``client_key``, ``event`` (1 to :data:`MAX_EVENT_LENGTH` visible ASCII) and ``create_time`` (a JSON
      integer in 0..2^63-1) are required for every event;
    - ``user_openid``, when given, is 1 to :data:`MAX_OPEN_ID_LENGTH` visible ASCII; absent, null or ``""``
      reads as None;
    - ``portability.download.ready``: ``content`` holds ``request_id``, a JSON integer or decimal string,
      an exact int in 1..2^63-1; ``user_openid`` is optional (the documented example has none);
    - ``authorization.removed``: ``user_openid`` is required; ``content``'s ``reason`` is an integer, or
      None when it or ``content`` is absent (the removal is acted on whatever its reason);
    - any other event: :class:`OtherEvent`; its ``content`` is not read.

    ``delivery_id`` is the hex SHA-256 of ``raw``: TikTok sends no event id, and redelivers the same body
    (only the signature header changes, with its ``t``), so equal ids mean the same delivery. Its limit:
    the id identifies bytes, not events — a body TikTok re-serialized differently would get a new id (so
    acting on an event must stay idempotent, e.g. by ``request_id``), and two events with identical bodies
    (same event, user, content and second) share one, which for these events is the same fact anyway.

    Raises:
        WebhookPayloadError: not UTF-8 JSON, nested too deeply, not an object, or a field missing or of
            the wrong shape (never RecursionError).
        UnknownClientKeyError: (401, ``unknown_client_key``) a ``client_key`` other than the app's — a
            delivery meant for another app, which this one must not act on.
    """
    envelope = _json_object(raw, "the webhook body")
    key = envelope.get("client_key")
    if not isinstance(key, str):
        raise WebhookPayloadError("the webhook body must hold client_key as a string")
    if key != client_key:
        raise UnknownClientKeyError("the webhook delivery is addressed to another app's client_key")
    event = envelope.get("event")
    if not isinstance(event, str) or not _EVENT.fullmatch(event):
        raise WebhookPayloadError(f"event must be 1 to {MAX_EVENT_LENGTH} visible ASCII characters")
    create_time = envelope.get("create_time")
    if not is_int_in(create_time, 0, INT64_MAX):
        raise WebhookPayloadError("create_time must be a JSON integer of Unix seconds")
    user_openid = _optional_openid(envelope.get("user_openid"))
    delivery_id = hashlib.sha256(raw).hexdigest()
    if event == DOWNLOAD_READY:
        content = _content(envelope.get("content"))
        if content is None:
            raise WebhookPayloadError(f"{DOWNLOAD_READY} must carry content with request_id")
        try:
            request_id = parse_request_id(content.get("request_id"))
        except InvalidRequestError as error:
            raise WebhookPayloadError(f"content: {error.message}") from None
        return DownloadReady(request_id, user_openid, create_time, delivery_id)
    if event == AUTHORIZATION_REMOVED:
        if user_openid is None:
            raise WebhookPayloadError(f"{AUTHORIZATION_REMOVED} must name the user in user_openid")
        content = _content(envelope.get("content"))
        reason = None if content is None else content.get("reason")
        if reason is not None and not is_int_in(reason, -INT64_MAX, INT64_MAX):
            raise WebhookPayloadError("content: reason must be an integer")
        return AuthorizationRemoved(user_openid, reason, create_time, delivery_id)
    return OtherEvent(event, user_openid, create_time, delivery_id)


def _refuse(value: str) -> NoReturn:
    raise ValueError(value)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):
        raise ValueError("repeated key")
    return document


def _json_object(text: str | bytes, what: str) -> dict[str, Any]:
    # Refused as not JSON besides: NaN/Infinity, a repeated key, an integer past the 4,300-digit limit.
    return load_json_object(
        text,
        what,
        WebhookPayloadError,
        parse_float=Decimal,
        parse_constant=_refuse,
        object_pairs_hook=_unique_keys,
    )


def _content(value: object) -> dict[str, Any] | None:
    """``content`` as an object: None when absent, null or empty."""
    if value is None or value == "":
        return None
    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        return _json_object(value, "content")
    raise WebhookPayloadError("content must be a JSON object serialized as a string")


def _optional_openid(value: object) -> str | None:
    if value is None or value == "":
        return None
    if not is_open_id(value):
        raise WebhookPayloadError(f"user_openid must be 1 to {MAX_OPEN_ID_LENGTH} visible ASCII characters")
    return str(value)
