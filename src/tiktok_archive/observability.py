"""Powertools Logger, Tracer and Metrics, created once and shared by every module; the secret scrubber.

The Tracer is deferred (:mod:`tiktok_archive.tracing`): nothing of X-Ray is imported until the first traced
call, and nothing at all when tracing is off.

Code must never log a secret. The scrubber is the second line of defence, in three places, so that
nothing added later — an exception text, a library's message, a handler someone attaches — can put
one in a log line:

- every log record is scrubbed when it is made (its message, whatever logger made it), and again by a
  :class:`SecretFilter` on every handler of the root logger and of the service's logger (its message,
  its extra fields, its exception text);
- the service's JSON formatter scrubs each serialised line.

Two ways of recognising a secret: by shape (TikTok's ``act.``/``rft.``/``clt.`` tokens as they are
issued — ``act.…!4667.e1``, ``act.3.…`` — after any delimiter, at a line start, after ``%20`` or an
escape; ``Bearer …``; ``client_secret=…``; a presigned URL's signature and session token; a SigV4
``Authorization`` header's ``Signature=`` and an ``X-Amz-Security-Token`` header) and by value:
every secret the process handles is registered with :func:`hide`, and each of its spellings (as is,
JSON- and repr-escaped, URL-encoded, base64) is replaced wherever it appears.

botocore, boto3, s3transfer and urllib3 log their wire traffic at DEBUG — a KMS ``Encrypt`` request
body holds the token in base64 — so their loggers are held at WARNING whatever the service's level.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import threading
import warnings
from collections import OrderedDict
from typing import Any
from urllib.parse import quote, quote_plus

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

from tiktok_archive.tracing import DeferredTracer

SERVICE = "tiktok-archive"
METRICS_NAMESPACE = "TikTokArchive"
REDACTED = "[REDACTED]"
# Loggers that print request and response bodies at DEBUG: never below WARNING.
WIRE_LOGGERS = ("botocore", "boto3", "s3transfer", "urllib3")

# Where a token may start: not inside a word (``exact.``, ``contact.``) — but after a delimiter, at a
# line start, after a percent-encoded byte (``%20act.``) or an escape (``\nact.``, ``\x0bact.``).
_TOKEN_START = (
    r"(?:(?<![A-Za-z])|(?<=\\[nrtbfv])|(?<=%[0-9A-Fa-f]{2})|(?<=\\x[0-9A-Fa-f]{2})"  # noqa: S105
    r"|(?<=\\u[0-9A-Fa-f]{4}))"
)
# What TikTok's tokens are made of, percent-encoding included (``%21`` for ``!``).
_TOKEN_BODY = r"[A-Za-z0-9\-_.!*~+/=%]"  # noqa: S105 - a pattern
_SECRET_PATTERNS = (
    # Authorization header values, also URL-encoded (``Bearer%20…``, ``Bearer+…``).
    (re.compile(r"(?i)\b(bearer)(?:\s|%20|\+)+[^\s\"'\\<>,;]+"), r"\1 " + REDACTED),
    # TikTok user tokens: act. (access), rft. (refresh), clt. (client).
    (re.compile(_TOKEN_START + r"(act|rft|clt)\." + _TOKEN_BODY + r"{6,}"), r"\1." + REDACTED),
    # The app's secret, tokens and an AWS session token named as such in a form, a query, a header or a
    # JSON document.
    (
        re.compile(
            r"(?i)\b(client_secret|access_token|refresh_token|x-amz-security-token)"
            r"(\\?[\"']?\s*[:=]\s*\\?[\"']?)[^\s\"'\\&,;}]+"
        ),
        r"\1\2" + REDACTED,
    ),
    # What makes a presigned URL usable: its signature and the session token it was signed with.
    (
        re.compile(r"(?i)(x-amz-signature|x-amz-security-token|x-amz-credential|signature)=[^&\"'\s]+"),
        r"\1=" + REDACTED,
    ),
)


class _KnownSecrets:
    """The secrets this container has handled, each with every spelling it may take in a log line.

    Bounded: the oldest are forgotten first (a container serves one invocation at a time, and a token
    outlives its invocation only in the records, encrypted). Matching is plain substring search, longest
    spelling first, so a spelling that contains another is replaced whole.
    """

    LIMIT = 64
    SHORTEST = 8  # shorter values would redact ordinary words

    def __init__(self) -> None:
        self._secrets: OrderedDict[str, tuple[str, ...]] = OrderedDict()
        self._lock = threading.Lock()
        self._spellings: tuple[str, ...] = ()

    def add(self, secret: str) -> None:
        if len(secret) < self.SHORTEST:
            return
        with self._lock:
            if secret in self._secrets:
                self._secrets.move_to_end(secret)
                return
            self._secrets[secret] = _spellings(secret)
            while len(self._secrets) > self.LIMIT:
                self._secrets.popitem(last=False)
            every = {s for variants in self._secrets.values() for s in variants}
            self._spellings = tuple(sorted(every, key=len, reverse=True))

    def redact(self, text: str) -> str:
        for spelling in self._spellings:
            if spelling in text:
                text = text.replace(spelling, REDACTED)
        return text


def _spellings(secret: str) -> tuple[str, ...]:
    raw = secret.encode()
    variants = {
        secret,
        json.dumps(secret)[1:-1],
        repr(secret)[1:-1],
        quote(secret, safe=""),
        quote_plus(secret, safe=""),
        base64.b64encode(raw).decode().rstrip("="),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
    }
    return tuple(v for v in variants if len(v) >= _KnownSecrets.SHORTEST)


_KNOWN = _KnownSecrets()


def hide(secret: str | None) -> None:
    """Register ``secret`` (a token, the app's client secret): it is redacted from every log line."""
    if secret:
        _KNOWN.add(secret)


def redact_secrets(text: str) -> str:
    """Return ``text`` with every recognisable and every registered secret replaced by ``[REDACTED]``."""
    text = _KNOWN.redact(text)
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact_secrets(value)
    if isinstance(value, int | float | bool) or value is None:
        return value
    # Containers and objects are logged through their text: scrub that text, keep JSON shapes JSON.
    if isinstance(value, dict | list | tuple):
        try:
            return json.loads(redact_secrets(json.dumps(value, default=str)))
        except (TypeError, ValueError):
            return redact_secrets(str(value))
    return redact_secrets(str(value))


_STANDARD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
}


class SecretFilter(logging.Filter):
    """Scrubs a record in place — message, extra fields, exception and stack text — and lets it pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        # Scrubbing is idempotent ("act.[REDACTED]" matches no pattern), so a record that passes
        # several handlers is simply scrubbed again.
        if isinstance(record.msg, str) or record.args:
            record.msg = redact_secrets(record.getMessage())
            record.args = None
        else:
            record.msg = _redact_value(record.msg)  # Powertools logs a dict message as JSON
        for name, value in list(vars(record).items()):
            if name not in _STANDARD_ATTRIBUTES:
                setattr(record, name, _redact_value(value))
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_secrets(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_secrets(record.stack_info)
        return True


SECRET_FILTER = SecretFilter()
_default_record_factory = logging.getLogRecordFactory()


def _scrubbed_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
    """Every record, from any logger, is born with its message scrubbed."""
    record = _default_record_factory(*args, **kwargs)
    if record.args or isinstance(record.msg, str):
        record.msg = redact_secrets(record.getMessage())
        record.args = None
    return record


class RedactingFormatter(LambdaPowertoolsFormatter):
    """Powertools' JSON formatter with :func:`redact_secrets` applied to each serialised record."""

    def serialize(self, log: Any) -> str:
        return redact_secrets(super().serialize(log))


def install_scrubber(*loggers: logging.Logger) -> None:
    """Scrub every log record: at birth, and on every handler of the root logger and of ``loggers``.

    Idempotent. Also holds the wire-logging libraries at WARNING.
    """
    logging.setLogRecordFactory(_scrubbed_record)
    for each in (logging.getLogger(), *loggers):
        for handler in each.handlers:
            if SECRET_FILTER not in handler.filters:
                handler.addFilter(SECRET_FILTER)
    for name in WIRE_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


logger = Logger(service=SERVICE, logger_formatter=RedactingFormatter())
install_scrubber(logging.getLogger(SERVICE))
# Built at the first traced call, and only when tracing is on: see tracing.py.
tracer = DeferredTracer(service=SERVICE)
metrics = Metrics(
    namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", METRICS_NAMESPACE), service=SERVICE
)
# Outcome counts are published as single metrics, so an invocation that only rejects its input has
# nothing in the shared buffer; that is expected, not worth a warning on every such invocation.
warnings.filterwarnings("ignore", message="No application metrics to publish")
