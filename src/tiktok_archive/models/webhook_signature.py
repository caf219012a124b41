"""A webhook delivery's bytes as received and their ``TikTok-Signature``: the first two steps of reading one.

1. :func:`raw_body` — the bytes TikTok sent, out of API Gateway's event; an oversized body is refused
   before anything else is done with it (:class:`WebhookTooLargeError`, 413).
2. :func:`verify_signature` — the ``TikTok-Signature`` header over those exact bytes
   (:class:`WebhookSignatureError`, 401).

The third, the event the bytes carry, is :func:`~tiktok_archive.models.webhook.parse_delivery`. Nothing
here performs I/O.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re

from tiktok_archive.models.errors import AppCredentialsError
from tiktok_archive.models.webhook_errors import (
    WebhookPayloadError,
    WebhookSignatureError,
    WebhookSignatureMismatchError,
    WebhookTooLargeError,
)

SIGNATURE_HEADER = "TikTok-Signature"
MAX_BODY_BYTES = 65536
SIGNATURE_TOLERANCE_SECONDS = 300
# Unix seconds have 10 digits until the year 2286; 12 leaves room and keeps int() of a hostile value cheap
# (and below the interpreter's 4,300-digit conversion limit, which would raise ValueError).
MAX_TIMESTAMP_DIGITS = 12

_TIMESTAMP = re.compile(rf"[0-9]{{1,{MAX_TIMESTAMP_DIGITS}}}")
_HEX_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
# RFC 9110 optional whitespace: the only whitespace tolerated, and only around the commas and the value.
_OWS = " \t"
_MALFORMED = f"the {SIGNATURE_HEADER} header must be exactly t=<unix seconds>,s=<64 hex digits>"


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
