"""TikTok's signed webhook deliveries: the body as received, its signature, and the event it carries.

A handler reads a delivery in three steps, each refusing with one of the service's errors:

1. :func:`raw_body` — the bytes TikTok sent, out of API Gateway's event; an oversized body is refused
   before anything else is done with it (:class:`WebhookTooLargeError`, 413).
2. :func:`verify_signature` — the ``TikTok-Signature`` header over those exact bytes
   (:class:`WebhookSignatureError`, 401).
3. :func:`parse_delivery` — the JSON envelope and its ``content`` as a typed event
   (:class:`WebhookPayloadError`, 400; :class:`UnknownClientKeyError`, 401).

TikTok delivers at least once and retries anything but a 200 for up to 72 hours, so every result carries a
``delivery_id`` to deduplicate with. Nothing here performs I/O.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, NoReturn, TypeAlias

from tiktok_archive.models.errors import (
    AppCredentialsError,
    InvalidRequestError,
    UnknownClientKeyError,
    WebhookPayloadError,
    WebhookSignatureError,
    WebhookSignatureMismatchError,
    WebhookTooLargeError,
)
from tiktok_archive.models.inputs import INT64_MAX, is_int_in, load_json_object, parse_request_id
from tiktok_archive.models.portability import MAX_OPEN_ID_LENGTH, is_open_id

SIGNATURE_HEADER = "TikTok-Signature"
DOWNLOAD_READY = "portability.download.ready"
AUTHORIZATION_REMOVED = "authorization.removed"
MAX_BODY_BYTES = 65536
SIGNATURE_TOLERANCE_SECONDS = 300
# Unix seconds have 10 digits until the year 2286; 12 leaves room and keeps int() of a hostile value cheap
# (and below the interpreter's 4,300-digit conversion limit, which would raise ValueError).
MAX_TIMESTAMP_DIGITS = 12
MAX_EVENT_LENGTH = 128

_TIMESTAMP = re.compile(rf"[0-9]{{1,{MAX_TIMESTAMP_DIGITS}}}")
_HEX_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
# RFC 9110 optional whitespace: the only whitespace tolerated, and only around the commas and the value.
_OWS = " \t"
_EVENT = re.compile(rf"[\x21-\x7e]{{1,{MAX_EVENT_LENGTH}}}")
_MALFORMED = f"the {SIGNATURE_HEADER} header must be exactly t=<unix seconds>,s=<64 hex digits>"


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


def raw_body(body: str | None, is_base64_encoded: bool, *, max_bytes: int = MAX_BODY_BYTES) -> bytes:
    """The delivery's body as TikTok sent it, from an API Gateway REST proxy event.

    Args:
        body: the event's ``body`` (None when the request had none).
        is_base64_encoded: the event's ``isBase64Encoded``; API Gateway sets it when the content type is
            a binary media type of the API, and otherwise passes the body as text, which for a JSON body
            is the UTF-8 bytes TikTok sent.
        max_bytes: the largest body accepted, in bytes.

    Returns:
        the decoded bytes (base64) or the text encoded as UTF-8; ``b""`` for no body.

    Raises:
        WebhookTooLargeError: more than ``max_bytes``. Checked first, on the event's string, so that a huge
            body is refused before it is decoded, encoded or hashed; checked again on the bytes.
        WebhookPayloadError: invalid base64 (strict: no whitespace, correct padding), or text that
            cannot be UTF-8 (a lone surrogate).
    """
    if body is None:
        return b""
    # A text body has at least as many UTF-8 bytes as characters; base64 has 4 characters per 3 bytes.
    most_characters = 4 * -(-max_bytes // 3) if is_base64_encoded else max_bytes
    if len(body) > most_characters:
        raise WebhookTooLargeError(f"the webhook body is larger than {max_bytes} bytes")
    try:
        data = base64.b64decode(body, validate=True) if is_base64_encoded else body.encode("utf-8")
    except binascii.Error:
        raise WebhookPayloadError("the webhook body is not valid base64") from None
    except ValueError:
        # b64decode of non-ASCII text, or a lone surrogate that UTF-8 cannot encode.
        raise WebhookPayloadError("the webhook body is not valid text") from None
    if len(data) > max_bytes:
        raise WebhookTooLargeError(f"the webhook body is larger than {max_bytes} bytes")
    return data


def verify_signature(
    header: str | None,
    raw_body: bytes,
    client_secret: str,
    *,
    now: float,
    tolerance_seconds: int = SIGNATURE_TOLERANCE_SECONDS,
) -> int:
    """Check ``TikTok-Signature: t=<unix seconds>,s=<hex>`` against the body exactly as received.

    ``s`` must be the HMAC-SHA256, keyed with the app's client secret (UTF-8), of ``<t>.`` followed by the
    body bytes, where ``<t>`` is the timestamp's text as it appears in the header. The grammar is strict:

    - exactly two fields, ``t`` and ``s``, each once, in either order, separated by one comma; names are
      lowercase; no empty field, no other field, no repeated field (two ``s=`` values are refused, not
      tried one by one);
    - spaces and tabs (RFC 9110 optional whitespace) are tolerated around the whole value and around the
      comma, nowhere else: ``t = 1``, ``t= 1`` and ``s=ab cd`` are refused; other whitespace never is;
    - ``t``: 1 to :data:`MAX_TIMESTAMP_DIGITS` ASCII decimal digits;
    - ``s``: 64 hexadecimal digits, lowercase or uppercase (hex is case-insensitive; compared as bytes).

    The HMAC is compared with :func:`hmac.compare_digest`, and only once the header is well-formed and
    fresh, so that a malformed or stale header costs no hashing.

    Args:
        header: the ``TikTok-Signature`` header value (None when absent).
        raw_body: the body bytes, as returned by :func:`raw_body`.
        client_secret: the app's client secret.
        now: the current Unix time, in seconds.
        tolerance_seconds: how far ``t`` may be from ``now``, before or after, and still be accepted
            (inclusive).

    Returns:
        the header's timestamp ``t``.

    Raises:
        WebhookSignatureError: missing or empty, malformed, ``t`` further than ``tolerance_seconds`` from
            ``now`` (stale or from the future); for any header string this is the only error. The message
            says why and never holds the header or the secret.
        WebhookSignatureMismatchError: (a WebhookSignatureError) a well-formed, fresh header whose HMAC
            does not match: the only failure a rotated client secret can explain.
        AppCredentialsError: the client secret is empty; anyone could sign with an empty key, so a
            misconfigured deployment refuses every delivery (transient: TikTok keeps redelivering).
    """
    if not client_secret:
        raise AppCredentialsError("the app's client secret is empty: webhooks cannot be verified")
    timestamp_text, signature_hex = _signature_fields(header)
    if not _TIMESTAMP.fullmatch(timestamp_text):
        raise WebhookSignatureError(
            f"the {SIGNATURE_HEADER} timestamp t must be 1 to {MAX_TIMESTAMP_DIGITS} decimal digits"
        )
    if not _HEX_SHA256.fullmatch(signature_hex):
        raise WebhookSignatureError(f"the {SIGNATURE_HEADER} signature s must be 64 hexadecimal digits")
    timestamp = int(timestamp_text)
    if now - timestamp > tolerance_seconds:
        raise WebhookSignatureError(
            f"the {SIGNATURE_HEADER} timestamp is more than {tolerance_seconds} s old"
        )
    if timestamp - now > tolerance_seconds:
        raise WebhookSignatureError(
            f"the {SIGNATURE_HEADER} timestamp is more than {tolerance_seconds} s in the future"
        )
    expected = _hmac(client_secret, timestamp_text, raw_body)
    if not hmac.compare_digest(expected, bytes.fromhex(signature_hex)):
        raise WebhookSignatureMismatchError(f"the {SIGNATURE_HEADER} signature does not match the body")
    return timestamp


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


def _hmac(client_secret: str, timestamp_text: str, raw: bytes) -> bytes:
    return hmac.new(
        client_secret.encode("utf-8"), timestamp_text.encode("ascii") + b"." + raw, hashlib.sha256
    ).digest()


def _signature_fields(header: str | None) -> tuple[str, str]:
    """The ``t`` and ``s`` texts of the header, by the grammar of :func:`verify_signature`."""
    value = (header or "").strip(_OWS)
    if not value:
        raise WebhookSignatureError(f"the {SIGNATURE_HEADER} header is missing")
    fields: dict[str, str] = {}
    for field in value.split(","):
        name, equals, text = field.strip(_OWS).partition("=")
        if not equals:
            raise WebhookSignatureError(f"{_MALFORMED} (a field is not name=value)")
        if name not in ("t", "s"):
            raise WebhookSignatureError(f"{_MALFORMED} (it has a field other than t and s)")
        if name in fields:
            raise WebhookSignatureError(f"{_MALFORMED} (field {name} is given twice)")
        fields[name] = text
    if "t" not in fields or "s" not in fields:
        missing = "t" if "t" not in fields else "s"
        raise WebhookSignatureError(f"{_MALFORMED} (field {missing} is missing)")
    return fields["t"], fields["s"]


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
