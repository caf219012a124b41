"""TikTok's shared quota through the real handlers: a small quota (``TikTokCallsPerMinute`` 70 at a 100 %
share: 10 calls a sub-window, purges 10, the API 9, downloads 8, status checks 6), the emulator holding
TikTok's own limit at the same 10 a minute, and the quota's clock frozen in one sub-window (so that a slow
machine does not spread a burst over two)."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace
from typing import Any

import pytest

from tests.harness.events import api_event, delete_event
from tests.harness.local_stack import Emulator, Resources
from tests.harness.tokens import new_request_id
from tests.integration.support import (
    Configure,
    acknowledge,
    add_request,
    call_api,
    call_lifecycle,
    call_worker,
    consent,
    in_queue,
    receive,
    record,
    sent_messages,
    sqs_record,
    status_of,
    stored_keys,
)
from tiktok_archive.adapters import tiktok_quota
from tiktok_archive.models.tiktok_quota import WINDOW_SECONDS, window_start

SMALL_QUOTA = {"TikTokCallsPerMinute": "70", "TikTokQuotaSharePercent": "100"}


class QuotaClock:
    """The quota's clock (epoch seconds), frozen at a sub-window's start until the test moves it."""

    def __init__(self) -> None:
        self.at = float(window_start(time.time()))

    def time(self) -> float:
        return self.at


@pytest.fixture
def quota_clock(monkeypatch: pytest.MonkeyPatch) -> QuotaClock:
    clock = QuotaClock()
    monkeypatch.setattr(tiktok_quota, "time", SimpleNamespace(time=clock.time))
    return clock


@pytest.fixture
def small_quota(configure: Configure, emulator: Emulator, quota_clock: QuotaClock) -> QuotaClock:
    configure(SMALL_QUOTA)
    emulator.set_rate_limit(10)
    return quota_clock


def spent(resources: Resources, clock: QuotaClock, endpoint: str, calls: int) -> None:
    """The sub-window's counter of ``endpoint`` as other invocations left it: ``calls`` made."""
    resources.client("dynamodb").update_item(
        TableName=resources.local.ref("TikTokQuotaTable"),
        Key={"window": {"S": f"{endpoint} {window_start(clock.at)}"}},
        UpdateExpression="SET calls = :calls",
        ExpressionAttributeValues={":calls": {"N": str(calls)}},
    )


def tiktok_429s(emulator: Emulator) -> int:
    return sum(emulator.stats()["rate_limited"].values())


def job(request_id: int, token: str) -> str:
    return json.dumps({"request_id": str(request_id), "access_token": token})


def test_a_burst_of_checks_stays_under_the_quota_and_leaves_room_for_downloads(
    small_quota: QuotaClock, emulator: Emulator, resources: Resources, s3: Any, bucket: str, token: str
) -> None:
    # Given eight requests waiting at TikTok
    user = consent(emulator, prepare_seconds=3600)
    waiting = [int(add_request(user).body["request_id"]) for _ in range(8)]
    seqs = {request_id: int(record(resources, request_id)["poll_seq"]["N"]) for request_id in waiting}

    # When their eight status checks come in one batch
    checks = [
        sqs_record(
            json.dumps({"kind": "check", "request_id": str(r), "seq": seqs[r]}), queue="LifecycleQueue"
        )
        for r in waiting
    ]
    already = len(sent_messages(resources, "LifecycleQueue"))
    result = call_lifecycle(checks)

    # Then six reach TikTok (the checks' share of the sub-window), the other two are not failures: every
    # message is acknowledged; six schedules moved on to their next check, and the other two's same
    # checks come back as new messages once the quota's next sub-window starts (10 to 20 s)
    assert result == {"batchItemFailures": []}
    assert emulator.stats()["calls"]["check"] == 6
    assert all(status_of(resources, r) == "waiting" for r in waiting)
    seq_now = {r: int(record(resources, r)["poll_seq"]["N"]) for r in waiting}
    deferred = sorted(r for r in waiting if seq_now[r] == seqs[r])
    assert len(deferred) == 2
    assert all(seq_now[r] == seqs[r] + 1 for r in waiting if r not in deferred)
    again = [
        (int(body["request_id"]), int(body["seq"]), delay)
        for body, delay in sent_messages(resources, "LifecycleQueue")[already:]
        if body.get("kind") == "check" and int(body["request_id"]) in deferred
    ]
    assert sorted(r for r, _, _ in again) == deferred
    assert all(seq == seqs[r] and 1 <= delay <= 20 for r, seq, delay in again)

    # And in the same sub-window the API (9 of 10) and then a download of a ready archive (8) still get
    # the Check Status calls they need, while one more status check does not
    ready_now, ready_queued = new_request_id(), new_request_id()
    emulator.register(ready_now, token, size=64 * 1024)
    emulator.register(ready_queued, token, size=64 * 1024)
    assert call_api(api_event(ready_now, token)).status == 200
    assert call_worker([sqs_record(job(ready_queued, token))]) == {"batchItemFailures": []}
    assert sorted(stored_keys(s3, bucket)) == sorted(f"archives/{r}.zip" for r in (ready_now, ready_queued))
    one_more = waiting[0]
    seq = int(record(resources, one_more)["poll_seq"]["N"])
    body = json.dumps({"kind": "check", "request_id": str(one_more), "seq": seq})
    assert call_lifecycle([sqs_record(body, queue="LifecycleQueue")]) == {"batchItemFailures": []}
    assert emulator.stats()["calls"]["check"] == 8
    # TikTok, holding the same limit, never had to refuse a call
    assert tiktok_429s(emulator) == 0


def test_cancels_come_first_and_the_api_answers_503_with_retry_after_when_none_is_left(
    small_quota: QuotaClock, emulator: Emulator, resources: Resources
) -> None:
    # Given two waiting requests, and a sub-window whose cancels are spent as far as the API's share (9)
    user = consent(emulator, prepare_seconds=3600)
    first, second = (int(add_request(user).body["request_id"]) for _ in range(2))
    spent(resources, small_quota, "cancel", 9)

    # When the caller cancels both
    cancelled = call_api(delete_event(first))
    refused = call_api(delete_event(second))

    # Then the first, a cancellation, takes the last call of the sub-window; the second is answered 503
    # with Retry-After (the next sub-window) and TikTok is not asked
    assert (cancelled.status, cancelled.body["status"]) == (200, "cancelled")
    assert (refused.status, refused.body["error"]["code"]) == (503, "tiktok_budget_exhausted")
    assert refused.headers["Retry-After"] == str(WINDOW_SECONDS)
    assert emulator.state(second)["cancels"] == 0
    assert status_of(resources, second) == "waiting"

    # And after it, the same DELETE cancels
    small_quota.at += WINDOW_SECONDS
    assert call_api(delete_event(second)).body["status"] == "cancelled"

    # And a new request, when the API's share of the Add endpoint is spent, is answered the same way
    spent(resources, small_quota, "add", 9)
    answer = add_request(consent(emulator, prepare_seconds=3600))
    assert (answer.status, answer.body["error"]["code"]) == (503, "tiktok_budget_exhausted")
    assert emulator.stats()["calls"]["add"] == 2
    assert tiktok_429s(emulator) == 0


def test_a_download_job_without_budget_is_sent_again_without_counting_a_receive(
    small_quota: QuotaClock, emulator: Emulator, resources: Resources, s3: Any, bucket: str, token: str
) -> None:
    # Given a ready archive's job in the download queue, and a sub-window whose downloads' share of the
    # Check Status calls is spent
    request_id = new_request_id()
    emulator.register(request_id, token, size=64 * 1024)
    sqs = resources.client("sqs")
    sqs.send_message(QueueUrl=resources.local.ref("DownloadQueue"), MessageBody=job(request_id, token))
    spent(resources, small_quota, "check", 8)

    # When the worker receives it
    received = receive(resources, "DownloadQueue")
    result = call_worker(received)
    acknowledge(resources, "DownloadQueue", received, result)

    # Then TikTok is not called; the message is acknowledged and the same job sent again, delayed to
    # the next sub-window (with up to one sub-window of jitter)
    assert result == {"batchItemFailures": []}
    assert emulator.stats()["calls"]["check"] == 0
    [(body, delay)] = sent_messages(resources, "DownloadQueue")
    assert body == json.loads(job(request_id, token))
    assert WINDOW_SECONDS <= delay <= 2 * WINDOW_SECONDS
    assert in_queue(resources, "DownloadQueue") == 1

    # And when it comes back, in a new sub-window, it is a first receive: no step nearer the
    # dead-letter queue; the archive is stored
    small_quota.at += WINDOW_SECONDS
    again: list[dict[str, Any]] = []
    for _ in range(4):
        again = receive(resources, "DownloadQueue", wait_seconds=10)
        if again:
            break
    [message] = again
    assert message["attributes"]["ApproximateReceiveCount"] == "1"
    result = call_worker(again)
    acknowledge(resources, "DownloadQueue", again, result)
    assert result == {"batchItemFailures": []}
    assert stored_keys(s3, bucket) == [f"archives/{request_id}.zip"]
    assert in_queue(resources, "DownloadQueue") == 0
