"""Polling that fits TikTok's quota, through the real handlers: checks hours apart when webhooks are
configured (a message hops until the record's next check is due, calling nobody), a floor from the
sweeper's count of waiting requests, a backlog of lost checks larger than a page re-driven in one run, and
a webhook's ``download.ready`` starting the download at once whatever the backstop.

TikTok is the emulator, AWS is moto server; a check message SQS would hold back for its delay is handed to
the lifecycle function directly, with exactly the body the service sent (``sent_messages``).
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest

from tests.harness.emulator_control import Emulator
from tests.harness.events import webhook_event
from tests.harness.local_stack import APP_SECRET, Resources
from tests.harness.tiktok_emulator import sign, webhook_body
from tests.integration.support import (
    HOUR,
    MIB,
    Configure,
    added,
    call_sweeper,
    call_webhook,
    call_worker,
    calls_since,
    check_now,
    consent,
    receive,
    record,
    run_lifecycle_message,
    run_taken,
    sent_messages,
    status_of,
    take_messages,
    tiktok_calls,
)
from tiktok_archive.models.check_schedule import CheckBudget
from tiktok_archive.models.clock import format_utc, parse_utc, utc_now
from tiktok_archive.models.tiktok_quota import QuotaPlan

BACKLOG = 130  # lost checks: more than the sweeper's page of 100


def set_schedule(
    resources: Resources, request_id: int, *, due_in: float, interval: int | None = None
) -> None:
    """Write the record's next check ``due_in`` seconds from now (negative: late), as a schedule would."""
    values: dict[str, Any] = {":due": {"S": format_utc(utc_now() + timedelta(seconds=due_in))}}
    expression = "SET next_check_at = :due"
    if interval is not None:
        values[":interval"] = {"N": str(interval)}
        expression += ", poll_interval = :interval"
    resources.client("dynamodb").update_item(
        TableName=resources.table,
        Key={"request_id": {"S": str(request_id)}},
        UpdateExpression=expression,
        ExpressionAttributeValues=values,
    )


def last_check(resources: Resources, request_id: int) -> tuple[dict[str, Any], int]:
    """The last status check sent for ``request_id`` (its body and DelaySeconds)."""
    checks = [
        (body, delay)
        for body, delay in sent_messages(resources, "LifecycleQueue")
        if body.get("kind") == "check" and body["request_id"] == str(request_id)
    ]
    assert checks, f"no check sent for {request_id}"
    return checks[-1]


def due_in(resources: Resources, request_id: int) -> float:
    return (parse_utc(record(resources, request_id)["next_check_at"]["S"]) - utc_now()).total_seconds()


def test_a_check_due_beyond_sqs_longest_delay_hops_until_due_and_only_then_asks_tiktok(
    configure: Configure, emulator: Emulator, resources: Resources
) -> None:
    # Given webhooks configured (checks are a backstop, up to an hour apart) and a waiting request whose
    # back-off reached 2,000 s
    configure({"WebhooksConfigured": "true", "StatusPollBackstopSeconds": "3600"})
    user = consent(emulator, prepare_seconds=24 * HOUR)
    request_id = added(user)
    set_schedule(resources, request_id, due_in=0, interval=2000)
    before = tiktok_calls(emulator)

    # When its check runs and TikTok still prepares the archive
    assert check_now(resources, request_id) == {"batchItemFailures": []}

    # Then the next check is due in an hour, its message delayed by SQS's longest delay
    body, delay = last_check(resources, request_id)
    assert (body, delay) == ({"kind": "check", "request_id": str(request_id), "seq": 1}, 900)
    assert record(resources, request_id)["poll_interval"]["N"] == "3600"
    assert 3590 <= due_in(resources, request_id) <= 3600

    # When that message comes before its time, it is acknowledged and sends itself on, calling nobody
    assert run_lifecycle_message(body) == {"batchItemFailures": []}
    assert last_check(resources, request_id) == (body, 900)
    set_schedule(resources, request_id, due_in=300)  # the last hop: the time left
    assert run_lifecycle_message(body) == {"batchItemFailures": []}
    sent_on, left = last_check(resources, request_id)
    assert sent_on == body
    assert 295 <= left <= 300
    assert calls_since(emulator, before) == {"check": 1}
    assert record(resources, request_id)["checks"]["N"] == "1"

    # When it comes at its time, it is the check: TikTok is asked
    set_schedule(resources, request_id, due_in=0)
    assert run_lifecycle_message(body) == {"batchItemFailures": []}
    assert calls_since(emulator, before) == {"check": 2}
    assert record(resources, request_id)["checks"]["N"] == "2"


def test_a_hop_is_a_fresh_message_so_hops_spend_none_of_the_checks_receives(
    configure: Configure, emulator: Emulator, resources: Resources
) -> None:
    # Given a waiting request whose record expects its check 8 s from now, and the check's message already
    # received four times (the queue sends it to the dead-letter queue after MaxReceiveCount, 5)
    user = consent(emulator, prepare_seconds=24 * HOUR)
    request_id = added(user)
    set_schedule(resources, request_id, due_in=8)
    sqs = resources.client("sqs")
    for _ in range(3):
        [message] = take_messages(resources, "LifecycleQueue", "check")
        sqs.change_message_visibility(
            QueueUrl=resources.local.ref("LifecycleQueue"),
            ReceiptHandle=message["receiptHandle"],
            VisibilityTimeout=0,
        )
    [early] = take_messages(resources, "LifecycleQueue", "check")
    assert early["attributes"]["ApproximateReceiveCount"] == "4"
    before = tiktok_calls(emulator)

    # When the lifecycle function gets it before its time
    assert run_taken(resources, [early]) == {"batchItemFailures": []}

    # Then it is gone, and the same check comes back when due as a new message, received once, and asks
    # TikTok then
    hop: list[dict[str, Any]] = []
    waited = time.monotonic()
    while not hop and time.monotonic() - waited < 20:
        hop = take_messages(resources, "LifecycleQueue", "check", wait_seconds=2)
    [again] = hop
    assert again["body"] == early["body"]
    assert again["messageId"] != early["messageId"]
    assert again["attributes"]["ApproximateReceiveCount"] == "1"
    assert calls_since(emulator, before) == {}
    assert run_taken(resources, [again]) == {"batchItemFailures": []}
    assert calls_since(emulator, before) == {"check": 1}


@pytest.mark.parametrize(
    "parameters",
    [{"StatusPollMaxSeconds": "900"}, {"WebhooksConfigured": "true"}],
    ids=["without webhooks", "with webhooks"],
)
def test_the_sweepers_count_of_waiting_requests_spaces_their_next_checks(
    configure: Configure, emulator: Emulator, resources: Resources, parameters: dict[str, str]
) -> None:
    # Given three waiting requests, and then a check budget of 6 a minute (a quota of 16 calls: 2 per
    # 10 s sub-window at a 90 % share, of which the checks' 60 % is 1)
    configure(parameters)
    user = consent(emulator, prepare_seconds=24 * HOUR, scopes=["portability.all.ongoing"])
    ids = [added(user) for _ in range(3)]
    configure(TIKTOK_CALLS_PER_MINUTE="16")
    assert CheckBudget.of(QuotaPlan(16)).checks_per_minute == 6

    # When the sweeper counts them
    assert call_sweeper() == {"redriven": 0, "waiting": 3, "floor_seconds": 30, "finished": True}

    # Then a check spaces the next one 30 s apart (3 × 60 / 6), not the back-off's 2 s
    assert check_now(resources, ids[0]) == {"batchItemFailures": []}
    assert last_check(resources, ids[0])[1] == 30
    assert record(resources, ids[0])["poll_interval"]["N"] == "30"


def test_the_sweeper_redrives_every_lost_check_of_a_backlog_larger_than_a_page(
    configure: Configure, emulator: Emulator, resources: Resources
) -> None:
    # Given 130 waiting requests whose chains of checks were all lost (an hour late)
    user = consent(emulator, prepare_seconds=24 * HOUR, scopes=["portability.all.ongoing"])
    ids = [added(user) for _ in range(BACKLOG)]
    for request_id in ids:
        set_schedule(resources, request_id, due_in=-HOUR)
    already = len(sent_messages(resources, "LifecycleQueue"))

    # When the sweeper runs once
    outcome = call_sweeper()

    # Then every one is sent its expected check again (two pages, ten to a SendMessageBatch), spread
    # 0.13 s apart (130 lost of 130 waiting at 456 checks a minute), and rescheduled to when it is due
    assert outcome == {"redriven": BACKLOG, "waiting": BACKLOG, "floor_seconds": 18, "finished": True}
    redriven = sent_messages(resources, "LifecycleQueue")[already:]
    assert sorted(int(body["request_id"]) for body, _ in redriven) == sorted(ids)
    assert {(body["kind"], body["seq"]) for body, _ in redriven} == {("check", 0)}
    delays = [delay for _, delay in redriven]
    assert delays == sorted(delays)
    assert (delays[0], delays[-1]) == (0, 17)
    assert all(due_in(resources, request_id) > -60 for request_id in ids)

    # And the next run finds nothing left to re-drive
    assert call_sweeper()["redriven"] == 0


def test_with_webhooks_a_ready_archive_is_downloaded_at_once_though_its_next_check_is_hours_away(
    configure: Configure, emulator: Emulator, resources: Resources
) -> None:
    # Given webhooks configured (6-hour backstop) and a waiting request whose next check is 6 hours away
    configure({"WebhooksConfigured": "true"})
    user = consent(emulator, prepare_seconds=HOUR, archive_size=2 * MIB)
    request_id = added(user)
    set_schedule(resources, request_id, due_in=6 * HOUR, interval=6 * HOUR)
    before = tiktok_calls(emulator)

    # When TikTok has prepared it and announces it ready
    emulator.advance_clock(HOUR)
    started = time.monotonic()
    raw = webhook_body(
        "portability.download.ready",
        user["open_id"],
        {"request_id": request_id},
        client_key=APP_SECRET["client_key"],
        create_time=int(time.time()),
    )
    signature = sign(APP_SECRET["client_secret"], int(time.time()), raw)
    assert call_webhook(webhook_event(raw, signature)).body["status"] == "queued"
    [work] = take_messages(resources, "ReadyQueue", "webhook")
    assert run_taken(resources, [work], "ReadyQueue") == {"batchItemFailures": []}

    # Then its download is queued within seconds, without a status check, and it runs
    [job] = receive(resources, "DownloadQueue")
    assert time.monotonic() - started < 10
    assert status_of(resources, request_id) == "queued"
    assert calls_since(emulator, before) == {}
    assert call_worker([job]) == {"batchItemFailures": []}
    assert status_of(resources, request_id) == "completed"
