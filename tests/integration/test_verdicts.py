"""Every failure gets the right verdict: permanent (acknowledged, recorded, never retried) or transient
(the message comes back, at most ``MaxReceiveCount`` times, then the dead-letter queue), each pinned
here through the real worker; and a rate-limited job comes back after TikTok's ``Retry-After``."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.conftest import SECRETS
from tests.harness.emulator_control import Emulator
from tests.harness.events import api_event
from tests.harness.local_stack import Resources
from tests.harness.tokens import new_request_id
from tests.integration.support import Configure, assert_nothing_left, call_api, call_worker, sqs_record
from tiktok_archive.models.inputs import MAX_TOKEN_LENGTH


def message(request_id: int, token: str) -> str:
    return json.dumps({"request_id": str(request_id), "access_token": token})


@pytest.mark.parametrize(
    ("fault", "code", "transient"),
    [
        # TikTok's edge answering a page instead of the archive: worth another delivery.
        ({"kind": "html", "status": 200}, "upstream_bad_response", True),
        ({"kind": "empty"}, "upstream_bad_response", True),
        ({"kind": "not_zip"}, "upstream_bad_response", True),
        # A body that ended without a whole zip: the next delivery may get the whole archive.
        ({"kind": "no_central_directory"}, "archive_invalid", True),
        # TikTok's documented refusals: another delivery gets the same answer.
        ({"kind": "error", "status": 400, "code": "invalid_params"}, "invalid_params", False),
        ({"kind": "error", "status": 401, "code": "access_token_invalid"}, "access_token_invalid", False),
    ],
)
def test_each_failure_of_the_download_gets_its_verdict(
    configure: Configure,
    emulator: Emulator,
    resources: Resources,
    s3: Any,
    bucket: str,
    token: str,
    fault: dict[str, Any],
    code: str,
    transient: bool,
) -> None:
    configure(TIKTOK_MAX_ATTEMPTS="1")
    request_id = new_request_id()
    emulator.register(request_id, token, size=64 * 1024, fault=fault)
    record = sqs_record(message(request_id, token))

    result = call_worker([record])

    expected = [{"itemIdentifier": record["messageId"]}] if transient else []
    assert result == {"batchItemFailures": expected}
    item = resources.item(request_id)
    assert item is not None
    assert (item["error_code"]["S"], item["error_transient"]["BOOL"]) == (code, transient)
    assert_nothing_left(s3, bucket)


def test_a_rate_limited_job_comes_back_after_retry_after_not_the_visibility_timeout(
    configure: Configure, emulator: Emulator, resources: Resources, token: str
) -> None:
    # Given a real message, received with the queue's long visibility timeout, that TikTok rate-limits
    request_id = new_request_id()
    fault = {"kind": "error", "status": 429, "code": "rate_limit_exceeded", "retry_after": "12"}
    emulator.register(request_id, token, fault=fault)
    sqs = resources.client("sqs")
    sqs.send_message(QueueUrl=resources.queue_url, MessageBody=message(request_id, token))
    [received] = sqs.receive_message(QueueUrl=resources.queue_url, VisibilityTimeout=5400)["Messages"]
    record = {
        **sqs_record(received["Body"], received["MessageId"]),
        "receiptHandle": received["ReceiptHandle"],
    }

    # When the worker hands it back
    assert call_worker([record]) == {"batchItemFailures": [{"itemIdentifier": received["MessageId"]}]}

    # Then it is back after TikTok's 12 s (the Retry-After longer than 10 s was not slept on), not
    # after 5,400 s: invisible just before, visible just after
    assert emulator.downloads(request_id) == 1
    time.sleep(10)
    assert sqs.receive_message(QueueUrl=resources.queue_url, VisibilityTimeout=0).get("Messages", []) == []
    time.sleep(3)
    again = sqs.receive_message(QueueUrl=resources.queue_url, WaitTimeSeconds=2)["Messages"]
    assert [m["MessageId"] for m in again] == [received["MessageId"]]


def test_a_token_of_the_longest_accepted_length_is_sealed_queued_and_opened(
    configure: Configure, emulator: Emulator, resources: Resources
) -> None:
    # Given a TikTok-shaped token of 2,048 characters (KMS takes up to 4 KiB of plaintext)
    token = "act." + "A" * (MAX_TOKEN_LENGTH - len("act.!1234.e1")) + "!1234.e1"
    SECRETS.tokens.add(token)
    assert len(token) == MAX_TOKEN_LENGTH
    request_id = new_request_id()
    emulator.register(request_id, token)

    # When it is queued and the worker runs the job
    assert call_api(api_event(request_id, token, prefer="respond-async")).status == 202
    [job] = resources.queued_messages()
    assert call_worker([sqs_record(job["Body"])]) == {"batchItemFailures": []}

    # Then the download ran with it
    assert emulator.downloads(request_id) == 1


def test_a_token_longer_than_accepted_is_refused_before_anything(
    configure: Configure, emulator: Emulator, resources: Resources
) -> None:
    token = "act." + "A" * MAX_TOKEN_LENGTH
    SECRETS.tokens.add(token)
    request_id = new_request_id()
    emulator.register(request_id, SECRETS.token())

    answers = [
        call_api(api_event(request_id, token)),
        call_api(api_event(request_id, token, prefer="respond-async")),
    ]
    result = call_worker([sqs_record(message(request_id, token))])

    # (the body's token is malformed: 400, as a missing one; TikTok is never asked)
    assert [(a.status, a.body["error"]["code"]) for a in answers] == [(400, "missing_token")] * 2
    assert result == {"batchItemFailures": []}
    assert emulator.checks(request_id) == 0
    assert resources.item(request_id) is None
