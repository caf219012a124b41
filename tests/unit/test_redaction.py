"""The log scrubber: the second line of defence behind never logging a secret."""

from __future__ import annotations

import json
import logging

from tiktok_archive.adapters.crc32 import crc32_base64
from tiktok_archive.observability import REDACTED, RedactingFormatter, redact_secrets


def test_bearer_tokens_and_bare_tokens_are_redacted() -> None:
    text = "Authorization: Bearer act.abcdef123456 and rft.zyxw98765432 left"
    cleaned = redact_secrets(text)
    assert "abcdef123456" not in cleaned
    assert "zyxw98765432" not in cleaned
    assert cleaned.endswith("left")


def test_presigned_url_signature_and_session_token_are_redacted() -> None:
    url = (
        "https://b.s3.amazonaws.com/k.zip?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA%2F2026"
        "&X-Amz-Security-Token=IQoJb3JpZ2luX2VjEXAMPLE&X-Amz-Expires=3600&X-Amz-Signature=0123abcdef"
    )
    cleaned = redact_secrets(url)
    assert "0123abcdef" not in cleaned
    assert "IQoJb3JpZ2luX2VjEXAMPLE" not in cleaned
    assert "X-Amz-Expires=3600" in cleaned


def test_formatter_scrubs_the_serialised_record() -> None:
    formatter = RedactingFormatter()
    record = logging.LogRecord(
        "t", logging.ERROR, __file__, 1, "failed with Bearer act.leaky999999", None, None
    )
    line = formatter.format(record)
    assert json.loads(line)["message"] == f"failed with Bearer {REDACTED}"


def test_crc32_is_encoded_like_s3_reports_it() -> None:
    # zlib.crc32(b"hello world") == 0x0D4A1185; S3 gives base64 of the 4 big-endian bytes.
    assert crc32_base64(0x0D4A1185) == "DUoRhQ=="
