"""The access token and a presigned URL's signature never reach a log line, a metric or an error.

Every test of the suite runs under the ``logs`` guard in conftest, which fails it when its captured
output holds a token, a URL signature or the scrubber's marker. This test drives the paths that carry
the most secrets — success (a URL is made), TikTok errors, broken streams, SQS — at DEBUG level and
checks that the guard had real output to look at.
"""

from __future__ import annotations

import base64
import json
import logging
from urllib.parse import quote

import pytest

from tests.conftest import (
    MIB,
    Configure,
    LogCapture,
    api_event,
    call_api,
    call_worker,
    find_secrets,
    get_event,
    new_request_id,
    sqs_record,
)
from tests.harness.local_stack import Emulator, Resources
from tiktok_archive.observability import WIRE_LOGGERS, logger


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


def test_async_and_queue_paths_at_debug_everywhere_leak_no_token_in_any_spelling(
    configure: Configure,
    emulator: Emulator,
    resources: Resources,
    token: str,
    logs: LogCapture,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given the service at DEBUG and the root logger capturing every library's DEBUG records
    configure(parameters={"LogLevel": "DEBUG"})
    logger.setLevel(logging.DEBUG)
    caplog.set_level(logging.DEBUG)
    queued, sent, broken = new_request_id(), new_request_id(), new_request_id()
    emulator.register(queued, token, size=6 * MIB)
    emulator.register(sent, token, size=6 * MIB)
    emulator.register(broken, token, fault={"kind": "error", "status": 429, "code": "rate_limit_exceeded"})
    try:
        # When a job is queued by the API (KMS-sealed token), the worker runs it, a backend's message
        # with a clear token runs too, and one is rate-limited
        accepted = call_api(api_event(queued, token, prefer="respond-async"))
        [job] = resources.queued_messages()
        batch = call_worker(
            [
                sqs_record(job["Body"]),
                sqs_record(json.dumps({"request_id": str(sent), "access_token": token})),
                sqs_record(json.dumps({"request_id": str(broken), "access_token": token})),
            ]
        )
        done = call_api(get_event(queued, token))
    finally:
        logger.setLevel(logging.INFO)

    # Then there was DEBUG output of every kind to look at, and a link was handed out
    assert accepted.status == 202
    assert len(batch["batchItemFailures"]) == 1
    assert "X-Amz-Signature=" in done.body["url"]
    out, err = capsys.readouterr()
    everything = "\n".join([*logs.lines, *(r.getMessage() for r in caplog.records), out, err])
    assert '"level":"DEBUG"' in everything
    assert any(r.levelno == logging.DEBUG and not r.name.startswith("tiktok") for r in caplog.records)
    # And the wire loggers, which print request bodies (the KMS Encrypt body holds the token in
    # base64), stayed at WARNING
    assert not [r for r in caplog.records if r.name.startswith(WIRE_LOGGERS) and r.levelno < logging.WARNING]
    # And no token shows in any spelling, nor the link, nor its signature
    assert find_secrets(everything) == []
    assert base64.b64encode(token.encode()).decode()[:40] not in everything
    assert quote(token, safe="") not in everything
    assert done.body["url"] not in everything
