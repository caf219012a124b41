"""A hostile network: retries, resumption, truncation, corrupt archives, stalls, the deadline, S3 faults.

Everything runs through the real handlers, over HTTP, against moto server and the TikTok emulator. Each
test ends in one of two outcomes a user can check: the exact archive behind a working URL, or a clear
error with no object and no open multipart upload left.
"""

from __future__ import annotations

import hashlib
import time
import urllib.request
from typing import Any

import pytest

from tests.conftest import SECRETS, LogCapture
from tests.harness.events import api_event
from tests.harness.local_stack import Emulator, LocalStack
from tests.harness.s3_fault_proxy import S3FaultProxy
from tests.harness.tokens import new_request_id, open_id
from tests.integration.support import (
    MIB,
    Configure,
    assert_nothing_left,
    call_api,
    call_worker,
    open_uploads,
    sqs_record,
)


def stored_bytes_match(answer_body: dict[str, Any], ready: dict[str, Any]) -> bool:
    with urllib.request.urlopen(answer_body["url"], timeout=60) as response:
        return hashlib.sha256(response.read()).hexdigest() == ready["sha256"]


def part_uploads(proxy: S3FaultProxy) -> list[str]:
    return [path for _, method, path in proxy.seen if method == "PUT" and "partNumber=" in path]


def uploads_created(proxy: S3FaultProxy) -> int:
    return sum(method == "POST" and path.endswith("?uploads") for _, method, path in proxy.seen)


# -- retries before the first byte ------------------------------------------------------------------
def test_rate_limit_then_success_waits_for_retry_after(
    configure: Configure, emulator: Emulator, s3: Any, bucket: str, token: str, logs: LogCapture
) -> None:
    # Given TikTok rate-limiting the first call and asking to come back in 1 s
    request_id = new_request_id()
    fault = {"kind": "error", "status": 429, "code": "rate_limit_exceeded", "retry_after": "1"}
    ready = emulator.register(request_id, token, size=64 * 1024, fault=fault, fault_times=1)

    # When the API is asked for the archive
    answer = call_api(api_event(request_id, token))

    # Then the second call came no earlier than asked and the archive arrived
    assert answer.status == 200, answer.body
    first, second = emulator.calls(request_id)
    assert second["at"] - first["at"] >= 1.0
    assert stored_bytes_match(answer.body, ready)
    retried = logs.find("TikTok request failed before it was answered; trying again")
    assert [(r["upstream_status"], r["wait_seconds"]) for r in retried] == [(429, 1)]


@pytest.mark.parametrize(
    "fault",
    [
        {"kind": "error", "status": 503, "code": "internal_error"},
        {"kind": "html", "status": 502},
        {"kind": "error", "status": 504, "code": "internal_error"},
    ],
    ids=["json-503", "html-502", "json-504"],
)
def test_server_errors_twice_then_success(
    configure: Configure, emulator: Emulator, token: str, fault: dict[str, Any]
) -> None:
    request_id = new_request_id()
    ready = emulator.register(request_id, token, size=6 * MIB, fault=fault, fault_times=2)

    answer = call_api(api_event(request_id, token))

    assert answer.status == 200, answer.body
    assert [call["fault"] for call in emulator.calls(request_id)] == [fault["kind"], fault["kind"], None]
    assert stored_bytes_match(answer.body, ready)


def test_reset_before_the_headers_is_retried(configure: Configure, emulator: Emulator, token: str) -> None:
    request_id = new_request_id()
    ready = emulator.register(request_id, token, size=64 * 1024, fault={"kind": "drop"}, fault_times=1)

    answer = call_api(api_event(request_id, token))

    assert answer.status == 200, answer.body
    assert emulator.downloads(request_id) == 2
    assert stored_bytes_match(answer.body, ready)


@pytest.mark.parametrize(("attempts", "calls"), [(None, 4), ("2", 2)])
def test_persistent_server_errors_stop_after_the_configured_attempts(
    configure: Configure,
    emulator: Emulator,
    s3: Any,
    bucket: str,
    token: str,
    attempts: str | None,
    calls: int,
) -> None:
    configure(TIKTOK_MAX_ATTEMPTS=attempts)
    request_id = new_request_id()
    emulator.register(request_id, token, fault={"kind": "error", "status": 500, "code": "internal_error"})

    answer = call_api(api_event(request_id, token))

    assert answer.status == 502
    assert answer.body["error"]["code"] == "internal_error"
    assert emulator.downloads(request_id) == calls
    assert_nothing_left(s3, bucket)


def test_retry_after_beyond_the_time_budget_is_handed_to_the_caller_at_once(
    configure: Configure, emulator: Emulator, token: str
) -> None:
    # The API invocation has 18 s of budget; TikTok asks for 20 s.
    request_id = new_request_id()
    fault = {"kind": "error", "status": 429, "code": "rate_limit_exceeded", "retry_after": "20"}
    emulator.register(request_id, token, fault=fault)

    started = time.monotonic()
    answer = call_api(api_event(request_id, token))

    assert time.monotonic() - started < 2
    assert (answer.status, answer.body["error"]["code"]) == (429, "rate_limit_exceeded")
    assert answer.headers["Retry-After"] == "20"
    assert emulator.downloads(request_id) == 1


# -- breaks in the middle of the stream -------------------------------------------------------------
@pytest.mark.parametrize("transfer", ["chunked", "length"])
@pytest.mark.parametrize("kind", ["reset", "truncate"])
def test_break_mid_body_resumes_with_range_and_keeps_the_uploaded_parts(
    configure: Configure,
    stack: LocalStack,
    emulator: Emulator,
    s3: Any,
    bucket: str,
    token: str,
    logs: LogCapture,
    transfer: str,
    kind: str,
) -> None:
    # Given TikTok honouring Range, and a 24 MiB stream that breaks once after three 5 MiB parts
    request_id = new_request_id()
    fault = {"kind": kind, "after_bytes": 17 * MIB + 12345}
    ready = emulator.register(
        request_id, token, size=24 * MIB, transfer=transfer, ranges="honour", fault=fault, fault_times=1
    )
    with S3FaultProxy(stack.moto_url) as proxy:
        configure(AWS_ENDPOINT_URL_S3=proxy.url)

        # When it is downloaded
        answer = call_api(api_event(request_id, token))
        assert answer.status == 200, answer.body
        assert stored_bytes_match(answer.body, ready)

    # Then the rest was asked for from where the stream broke
    first, second = emulator.calls(request_id)
    assert first["range"] is None
    offset = int(second["range"].removeprefix("bytes=").removesuffix("-"))
    # (a reset can drop bytes already in flight, so the offset may lie before the cut)
    assert 10 * MIB < offset <= 17 * MIB + 12345
    # And one upload carried it: each part went up once, none was uploaded again
    assert uploads_created(proxy) == 1
    assert len(part_uploads(proxy)) == len(set(part_uploads(proxy))) == 5
    assert len(logs.find("archive stream broke; asking TikTok for the rest")) == 1
    assert open_uploads(s3, bucket) == []


@pytest.mark.parametrize("transfer", ["chunked", "length"])
def test_break_mid_body_without_range_support_starts_over_with_a_new_upload(
    configure: Configure,
    stack: LocalStack,
    emulator: Emulator,
    s3: Any,
    bucket: str,
    token: str,
    logs: LogCapture,
    transfer: str,
) -> None:
    # Given TikTok ignoring Range (as documented), and a stream that resets once after 13 MiB
    request_id = new_request_id()
    fault = {"kind": "reset", "after_bytes": 13 * MIB + 999}
    ready = emulator.register(request_id, token, size=24 * MIB, transfer=transfer, fault=fault, fault_times=1)
    with S3FaultProxy(stack.moto_url) as proxy:
        configure(AWS_ENDPOINT_URL_S3=proxy.url)

        answer = call_api(api_event(request_id, token))
        assert answer.status == 200, answer.body
        assert stored_bytes_match(answer.body, ready)

    # Then the ranged request was answered with the whole archive, so the download started over
    assert [call["range"] is not None for call in emulator.calls(request_id)] == [False, True, False]
    # And the first upload was aborted, a second one holds exactly TikTok's bytes
    assert uploads_created(proxy) == 2
    assert len(logs.find("multipart upload aborted")) == 1
    assert len(logs.find("download starts over after a broken stream")) == 1
    assert open_uploads(s3, bucket) == []


@pytest.mark.parametrize(
    ("transfer", "fault", "code"),
    [
        ("chunked", {"kind": "reset", "after_bytes": 17 * MIB}, "upstream_stream_broken"),
        ("length", {"kind": "reset", "after_bytes": 17 * MIB}, "upstream_stream_broken"),
        ("length", {"kind": "truncate", "after_bytes": 12 * MIB}, "archive_truncated"),
        ("chunked", {"kind": "truncate", "after_bytes": 12 * MIB}, "archive_truncated"),
        ("chunked", {"kind": "truncate", "after_bytes": 1024}, "archive_truncated"),
    ],
)
@pytest.mark.parametrize("ranges", ["honour", "ignore"])
def test_a_stream_that_always_breaks_ends_in_a_clean_error(
    configure: Configure,
    emulator: Emulator,
    s3: Any,
    bucket: str,
    token: str,
    transfer: str,
    fault: dict[str, Any],
    code: str,
    ranges: str,
) -> None:
    # Given an archive whose every answer breaks (resumed or fresh)
    request_id = new_request_id()
    emulator.register(request_id, token, size=24 * MIB, transfer=transfer, ranges=ranges, fault=fault)

    answer = call_api(api_event(request_id, token))

    # Then the caller learns what happened, and nothing is left in S3
    assert answer.status == 502
    assert answer.body["error"]["code"] == code
    # And the download endpoint was called exactly TIKTOK_MAX_ATTEMPTS (4) times, whatever the calls were
    # (resumptions, the ranged request that found Range ignored, fresh starts): one budget
    assert emulator.downloads(request_id) == 4
    assert_nothing_left(s3, bucket)


def test_stall_is_detected_within_the_read_timeout_and_resumed(
    configure: Configure, emulator: Emulator, token: str
) -> None:
    configure(TIKTOK_READ_TIMEOUT_SECONDS="1")
    request_id = new_request_id()
    fault = {"kind": "stall", "after_bytes": 6 * MIB, "seconds": 10}
    ready = emulator.register(request_id, token, size=12 * MIB, ranges="honour", fault=fault, fault_times=1)

    started = time.monotonic()
    answer = call_api(api_event(request_id, token))

    assert answer.status == 200, answer.body
    assert time.monotonic() - started < 5
    assert emulator.calls(request_id)[1]["range"] is not None
    assert stored_bytes_match(answer.body, ready)


def test_stream_that_always_stalls_fails_as_broken(
    configure: Configure, emulator: Emulator, s3: Any, bucket: str, token: str
) -> None:
    configure(TIKTOK_READ_TIMEOUT_SECONDS="1", TIKTOK_MAX_ATTEMPTS="2")
    request_id = new_request_id()
    emulator.register(
        request_id, token, size=12 * MIB, fault={"kind": "stall", "after_bytes": 6 * MIB, "seconds": 6}
    )

    answer = call_api(api_event(request_id, token))

    assert answer.status == 502
    assert answer.body["error"]["code"] == "upstream_stream_broken"
    assert "stalled" in answer.body["error"]["message"]
    assert_nothing_left(s3, bucket)


# -- bodies that are not whole archives -------------------------------------------------------------
@pytest.mark.parametrize("size", [200 * 1024, 14 * MIB], ids=["one-part", "multipart"])
def test_zip_without_central_directory_is_archive_invalid_and_not_stored(
    configure: Configure, emulator: Emulator, s3: Any, bucket: str, token: str, size: int
) -> None:
    request_id = new_request_id()
    emulator.register(request_id, token, size=size, fault={"kind": "no_central_directory"})

    answer = call_api(api_event(request_id, token))

    assert answer.status == 502
    assert answer.body["error"]["code"] == "archive_invalid"
    assert "end-of-central-directory" in answer.body["error"]["message"]
    assert_nothing_left(s3, bucket)


# -- the deadline -------------------------------------------------------------------------------------
def test_deadline_during_a_slow_stream_answers_504_in_time_and_leaves_nothing(
    configure: Configure, emulator: Emulator, s3: Any, bucket: str, token: str, logs: LogCapture
) -> None:
    # Given 8 s left in the invocation, a 3 s margin (room for an in-flight part and the abort, one
    # S3 try of 1.25 s each), and an archive that needs 12 s to arrive
    configure(DEADLINE_MARGIN_SECONDS="3")
    request_id = new_request_id()
    emulator.register(request_id, token, size=24 * MIB, bytes_per_second=2 * MIB)

    started = time.monotonic()
    answer = call_api(api_event(request_id, token), remaining_ms=8_000)
    elapsed = time.monotonic() - started

    # Then the function stopped at the deadline, answered before Lambda would have killed it, and
    # nothing is left open
    assert 4.9 < elapsed < 8.0
    assert answer.status == 504
    assert answer.body["error"]["code"] == "deadline_exceeded"
    assert len(logs.find("multipart upload aborted")) == 1
    assert_nothing_left(s3, bucket)


@pytest.mark.parametrize("handed", ["access token", "refresh token"])
def test_no_time_left_at_all_answers_504_without_calling_tiktok(
    configure: Configure, emulator: Emulator, s3: Any, bucket: str, handed: str
) -> None:
    # Given a user's ready archive, asked for with only an access token or with the refresh token too
    user = emulator.add_user(open_id())
    SECRETS.tokens.update({user["access_token"], user["refresh_token"]})
    request_id = new_request_id()
    emulator.register(request_id, user["access_token"])
    refresh = user["refresh_token"] if handed == "refresh token" else None
    calls = sum(emulator.stats()["calls"].values())

    # When the invocation starts with less time than the 10 s margin
    answer = call_api(api_event(request_id, user["access_token"], refresh_token=refresh), remaining_ms=9_000)

    # Then it is over at once: TikTok was not called at all, not even to exchange the refresh token
    assert (answer.status, answer.body["error"]["code"]) == (504, "deadline_exceeded")
    assert sum(emulator.stats()["calls"].values()) == calls
    assert emulator.user(user["open_id"])["refreshes"] == 0
    assert_nothing_left(s3, bucket)


def test_worker_reports_a_download_cut_by_the_deadline_as_a_batch_item_failure(
    configure: Configure, emulator: Emulator, s3: Any, bucket: str, token: str
) -> None:
    configure(DEADLINE_MARGIN_SECONDS="1")
    request_id = new_request_id()
    emulator.register(request_id, token, size=12 * MIB, bytes_per_second=2 * MIB)
    record = sqs_record(f'{{"request_id": "{request_id}", "access_token": "{token}"}}')

    started = time.monotonic()
    result = call_worker([record], remaining_ms=3_000)

    assert time.monotonic() - started < 3.0
    assert result == {"batchItemFailures": [{"itemIdentifier": record["messageId"]}]}
    assert_nothing_left(s3, bucket)


# -- S3 faults, through a fault-injecting proxy in front of moto --------------------------------------
def test_s3_slowdown_on_a_part_is_retried_by_botocore(
    configure: Configure, stack: LocalStack, emulator: Emulator, s3: Any, bucket: str, token: str
) -> None:
    failed: list[str] = []

    def slow_down_part_two_once(method: str, path: str) -> tuple[int, str] | None:
        if method == "PUT" and "partNumber=2&" in path + "&" and not failed:
            failed.append(path)
            return 503, "SlowDown"
        return None

    request_id = new_request_id()
    ready = emulator.register(request_id, token, size=24 * MIB)
    with S3FaultProxy(stack.moto_url, slow_down_part_two_once) as proxy:
        configure(AWS_ENDPOINT_URL_S3=proxy.url)
        answer = call_api(api_event(request_id, token))
        assert answer.status == 200, answer.body
        assert stored_bytes_match(answer.body, ready)

    assert len(failed) == 1
    assert sum("partNumber=2&" in path + "&" for path in part_uploads(proxy)) == 2
    assert open_uploads(s3, bucket) == []


@pytest.mark.parametrize("mode", ["standard", "adaptive"])
def test_persistent_s3_failure_is_retried_then_aborted_as_a_storage_error(
    configure: Configure,
    stack: LocalStack,
    emulator: Emulator,
    s3: Any,
    bucket: str,
    token: str,
    logs: LogCapture,
    mode: str,
) -> None:
    def always_fail_part_two(method: str, path: str) -> tuple[int, str] | None:
        return (500, "InternalError") if method == "PUT" and "partNumber=2&" in path + "&" else None

    request_id = new_request_id()
    emulator.register(request_id, token, size=24 * MIB)
    with S3FaultProxy(stack.moto_url, always_fail_part_two) as proxy:
        configure(AWS_ENDPOINT_URL_S3=proxy.url, S3_RETRY_MODE=mode, S3_MAX_ATTEMPTS="3")
        answer = call_api(api_event(request_id, token))

    assert (answer.status, answer.body["error"]["code"]) == (503, "storage_error")
    assert "UploadPart" in answer.body["error"]["message"]
    assert len(proxy.failed) == 3  # botocore's three attempts, then the upload is aborted
    assert len(logs.find("multipart upload aborted")) == 1
    assert_nothing_left(s3, bucket)
