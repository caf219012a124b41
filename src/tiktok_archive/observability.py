"""Powertools Logger, Tracer and Metrics, created once and shared by every module.

The logger's formatter scrubs bearer tokens and presigned-URL signatures from every record it writes,
after serialisation, so that nothing added later — an exception text, a library's message — can put
a secret in a log line. Code must still never log one: the scrubber is the second line, not the first.
"""

from __future__ import annotations

import os
import re
import warnings
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

SERVICE = "tiktok-archive"
METRICS_NAMESPACE = "TikTokArchive"
REDACTED = "[REDACTED]"

_SECRET_PATTERNS = (
    # Authorization header values and bare TikTok user tokens (act. access, rft. refresh, clt. client).
    (re.compile(r"(?i)(bearer)\s+[A-Za-z0-9\-._~+/]+=*"), r"\1 " + REDACTED),
    (re.compile(r"\b(act|rft|clt)\.[A-Za-z0-9\-._~+/=]{6,}"), r"\1." + REDACTED),
    # What makes a presigned URL usable: its signature and the session token it was signed with.
    (
        re.compile(r"(?i)(x-amz-signature|x-amz-security-token|x-amz-credential|signature)=[^&\"'\s]+"),
        r"\1=" + REDACTED,
    ),
)


def redact_secrets(text: str) -> str:
    """Return ``text`` with bearer tokens and presigned-URL signatures replaced by ``[REDACTED]``."""
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFormatter(LambdaPowertoolsFormatter):
    """Powertools' JSON formatter with :func:`redact_secrets` applied to each serialised record."""

    def serialize(self, log: Any) -> str:
        return redact_secrets(super().serialize(log))


logger = Logger(service=SERVICE, logger_formatter=RedactingFormatter())
tracer = Tracer(service=SERVICE)
metrics = Metrics(
    namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", METRICS_NAMESPACE), service=SERVICE
)
# Outcome counts are published as single metrics, so an invocation that only rejects its input has
# nothing in the shared buffer; that is expected, not worth a warning on every such invocation.
warnings.filterwarnings("ignore", message="No application metrics to publish")
