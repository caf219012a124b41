"""The access token and a presigned URL's signature never reach a log line, a metric or an error.

Every test of the suite runs under the ``logs`` guard in conftest, which fails it when its captured
output holds a token, a URL signature or the scrubber's marker. This test drives the paths that carry
the most secrets — success (a URL is made), TikTok errors, broken streams, SQS — at DEBUG level and
checks that the guard had real output to look at.
"""

from __future__ import annotations

import json
import logging

import pytest

from tests.conftest import (
    MIB,
    Configure,
    LogCapture,
    api_event,
    call_api,
    call_worker,
    find_secrets,
    new_request_id,
    sqs_record,
)
from tests.harness.local_stack import Emulator
from tiktok_archive.observability import logger


def test_no_secret_in_any_log_line_at_debug_level(
    configure: Configure,
    emulator: Emulator,
    token: str,
    logs: LogCapture,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given the service logging at DEBUG and every other library's records captured at INFO
    logger.setLevel(logging.DEBUG)
    caplog.set_level(logging.INFO)
    ok, broken, refused = new_request_id(), new_request_id(), new_request_id()
    emulator.register(ok, token, size=11 * MIB)
    emulator.register(broken, token, size=11 * MIB, fault={"kind": "reset", "after_bytes": 6 * MIB})
    emulator.register(refused, token, fault={"kind": "error", "status": 401, "code": "access_token_invalid"})
    try:
        # When downloads succeed and fail through both triggers
        answers = [call_api(api_event(i, token)) for i in (ok, broken, refused)]
        call_worker(
            [sqs_record(json.dumps({"request_id": i, "access_token": token})) for i in (ok, broken, refused)]
        )
    finally:
        logger.setLevel(logging.INFO)

    # Then there was plenty to look at — including a URL in an answer — and none of it holds a secret
    assert [a.status for a in answers] == [200, 502, 401]
    assert "X-Amz-Signature=" in answers[0].body["url"]
    out, err = capsys.readouterr()
    everything = "\n".join([*logs.lines, *(r.getMessage() for r in caplog.records), out, err])
    assert len(logs.lines) >= 8
    assert '"level":"DEBUG"' in everything
    assert find_secrets(everything) == []
    assert token not in everything
    assert answers[0].body["url"] not in everything
