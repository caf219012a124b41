"""The log scrubber: the second line of defence behind never logging a secret."""

from __future__ import annotations

import io
import json
import logging

from tests.harness.tokens import access_token, refresh_token
from tiktok_archive.adapters.crc32 import crc32_base64
from tiktok_archive.models.download import DownloadRequest
from tiktok_archive.models.messages import DownloadJob
from tiktok_archive.models.portability import AppCredentials, TokenGrant
from tiktok_archive.observability import (
    REDACTED,
    WIRE_LOGGERS,
    RedactingFormatter,
    install_scrubber,
    redact_secrets,
)


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


def test_a_handler_on_the_root_logger_never_prints_a_token_from_any_logger() -> None:
    # Given a plain handler on the root logger (as Lambda's runtime has), scrubbed like every handler
    token = access_token()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(name)s %(message)s %(detail)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    install_scrubber()
    library = logging.getLogger("some.library")
    try:
        # When a library logs the token in its message, its arguments, an extra field and an exception
        try:
            raise ValueError(f"refused {token}")
        except ValueError:
            library.error("call with %s failed", token, exc_info=True, extra={"detail": {"token": token}})
    finally:
        root.removeHandler(handler)

    # Then the line, the extra field and the traceback hold no part of it
    printed = stream.getvalue()
    assert "call with act." in printed
    assert token.partition(".")[2] not in printed
    assert "refused act." in printed  # the traceback is there, scrubbed


def test_wire_loggers_stay_at_warning_whatever_the_service_level() -> None:
    install_scrubber()
    for name in WIRE_LOGGERS:
        assert logging.getLogger(name).getEffectiveLevel() >= logging.WARNING
    assert not logging.getLogger("botocore.endpoint").isEnabledFor(logging.DEBUG)


def test_objects_holding_tokens_never_show_them() -> None:
    token, refresh = access_token(), refresh_token()
    shown = " ".join(
        repr(value)
        for value in (
            DownloadJob(42, access_token=token),
            DownloadJob(42, encrypted_access_token="c2VhbGVk" * 8),
            DownloadRequest(42, token),
            TokenGrant(token, 7200, refresh, 15552000, "open-id", "portability.all.single"),
            AppCredentials("client-key", "client-secret-value"),
        )
    )
    assert token not in shown
    assert refresh not in shown
    assert "c2VhbGVk" not in shown
    assert "client-secret-value" not in shown
    assert "42" in shown
