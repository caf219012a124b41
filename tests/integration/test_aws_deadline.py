"""Every AWS call fits the invocation: a stalled DynamoDB or EventBridge, or a slow S3 completion, still
ends in a JSON answer before the API function's 28 s run out, with nothing left open.

A proxy in front of moto server holds the chosen calls (``Stall``); the API handler runs with Lambda's
28 s and the template's 10 s margin. The clients' tries are bounded (1 + 2 s for small calls; S3's
derived from the margin) and no try starts that could outlive the invocation.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import SECRETS, LogCapture
from tests.harness.emulator_control import Emulator
from tests.harness.events import api_event
from tests.harness.local_stack import LocalStack, Resources
from tests.harness.s3_fault_proxy import S3FaultProxy, Stall
from tests.harness.tokens import new_request_id, open_id
from tests.integration.support import MIB, Configure, assert_nothing_left, call_api, open_uploads

API_TIMEOUT_MS = 28_000
FOREVER = 120.0


def target(name: str, stall: Stall) -> Callable[[str, str, str], Stall | None]:
    return lambda _method, _path, amz_target: stall if amz_target == name else None


def completion(stall: Stall) -> Callable[[str, str, str], Stall | None]:
    def when(method: str, path: str, _target: str) -> Stall | None:
        return stall if method == "POST" and "uploadId=" in path else None

    return when


def run_through(
    stack: LocalStack, configure: Configure, stall_when: Callable[[str, str, str], Stall | None], event: Any
) -> tuple[Any, float]:
    with S3FaultProxy(stack.moto_url, stall_when=stall_when) as proxy:
        configure(AWS_ENDPOINT_URL=proxy.url, AWS_ENDPOINT_URL_S3=proxy.url)
        started = time.monotonic()
        answer = call_api(event, remaining_ms=API_TIMEOUT_MS)
        return answer, time.monotonic() - started


def test_a_handover_whose_grant_cannot_be_stored_still_answers_within_the_one_deadline(
    configure: Configure,
    stack: LocalStack,
    emulator: Emulator,
    resources: Resources,
    s3: Any,
    bucket: str,
    logs: LogCapture,
) -> None:
    # Given a user's ready archive, asked for with the refresh token handed over, and DynamoDB stalling
    # every write: the grant (after TikTok rotated the token), then the record
    user = emulator.add_user(open_id())
    SECRETS.tokens.update({user["access_token"], user["refresh_token"]})
    request_id = new_request_id()
    emulator.register(request_id, user["access_token"])
    stall = target("DynamoDB_20120810.UpdateItem", Stall(FOREVER, swallow=True))
    event = api_event(request_id, user["access_token"], refresh_token=user["refresh_token"])

    answer, elapsed = run_through(stack, configure, stall, event)
    now = emulator.user(user["open_id"])
    SECRETS.tokens.update({now["access_token"], now["refresh_token"]})

    # Then the refresh, both tries to keep its tokens and the answer all fit the one invocation
    assert elapsed < API_TIMEOUT_MS / 1000 - 0.5
    assert (answer.status, answer.body["error"]["code"]) == (503, "record_store_error"), answer.body
    assert now["refreshes"] == 1
    assert logs.find("handed-over tokens not stored: the user's refresh token is lost")
    # And nothing was downloaded or recorded on the strength of tokens the service could not keep
    assert emulator.downloads(request_id) == 0
    assert resources.item(request_id) is None
    assert_nothing_left(s3, bucket)


def test_a_stalled_dynamodb_claim_is_answered_in_time_and_nothing_is_stored(
    configure: Configure, stack: LocalStack, emulator: Emulator, s3: Any, bucket: str, token: str
) -> None:
    request_id = new_request_id()
    emulator.register(request_id, token)
    stall = target("DynamoDB_20120810.UpdateItem", Stall(FOREVER, swallow=True))

    answer, elapsed = run_through(stack, configure, stall, api_event(request_id, token))

    assert elapsed < API_TIMEOUT_MS / 1000 - 0.5
    assert (answer.status, answer.body["error"]["code"]) == (503, "record_store_error")
    assert emulator.downloads(request_id) == 0
    assert_nothing_left(s3, bucket)


def test_a_dynamodb_stalling_after_the_upload_still_hands_out_the_archive_in_time(
    configure: Configure,
    stack: LocalStack,
    emulator: Emulator,
    s3: Any,
    bucket: str,
    token: str,
    logs: LogCapture,
) -> None:
    # Given DynamoDB answering the claim, then stalling from the completion on
    request_id = new_request_id()
    emulator.register(request_id, token, size=7 * MIB)
    updates: list[str] = []
    # Counted by target, the quota counter's UpdateItem before each TikTok call would be taken for the
    # records' (a stalled quota table is the claim's test above: it fails open in time).
    configure(TIKTOK_QUOTA_TABLE_NAME=None)

    def second_update_on(_method: str, _path: str, amz_target: str) -> Stall | None:
        if amz_target != "DynamoDB_20120810.UpdateItem":
            return None
        updates.append(amz_target)
        return Stall(FOREVER, swallow=True) if len(updates) > 1 else None

    answer, elapsed = run_through(stack, configure, second_update_on, api_event(request_id, token))

    # Then the stored archive is handed out in time, the missing record logged
    assert elapsed < API_TIMEOUT_MS / 1000 - 0.5
    assert answer.status == 200, answer.body
    assert "url" in answer.body
    assert logs.find("download stored but not recorded")
    assert open_uploads(s3, bucket) == []


def test_a_stalled_eventbridge_does_not_hold_the_answer(
    configure: Configure, stack: LocalStack, emulator: Emulator, token: str, logs: LogCapture
) -> None:
    request_id = new_request_id()
    emulator.register(request_id, token)
    stall = target("AWSEvents.PutEvents", Stall(FOREVER, swallow=True))

    answer, elapsed = run_through(stack, configure, stall, api_event(request_id, token))

    assert elapsed < API_TIMEOUT_MS / 1000 - 0.5
    assert answer.status == 200
    assert logs.find("event not published")


def test_a_completion_s3_never_answers_is_aborted_in_time(
    configure: Configure, stack: LocalStack, emulator: Emulator, s3: Any, bucket: str, token: str
) -> None:
    request_id = new_request_id()
    emulator.register(request_id, token, size=12 * MIB)

    answer, elapsed = run_through(
        stack, configure, completion(Stall(FOREVER, swallow=True)), api_event(request_id, token)
    )

    assert elapsed < API_TIMEOUT_MS / 1000 - 0.5
    assert answer.status in (503, 504), answer.body
    assert answer.body["error"]["code"] in ("storage_error", "deadline_exceeded")
    assert_nothing_left(s3, bucket)


@pytest.mark.parametrize("late_by", [8.0])
def test_a_completion_answered_too_late_is_verified_and_handed_out(
    configure: Configure,
    stack: LocalStack,
    emulator: Emulator,
    resources: Resources,
    s3: Any,
    bucket: str,
    token: str,
    logs: LogCapture,
    late_by: float,
) -> None:
    # Given S3 completing the upload at once but answering after the client gave up
    request_id = new_request_id()
    ready = emulator.register(request_id, token, size=12 * MIB)

    answer, elapsed = run_through(
        stack, configure, completion(Stall(late_by, answer_late=True)), api_event(request_id, token)
    )

    # Then the object is checked to be exactly what was read, and handed out
    assert elapsed < API_TIMEOUT_MS / 1000 - 0.5
    assert answer.status == 200, answer.body
    assert answer.body["size_bytes"] == ready["size_bytes"]
    assert logs.find("upload completion was answered late; the stored object was verified")
    assert open_uploads(s3, bucket) == []
