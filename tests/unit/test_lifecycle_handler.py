"""The lifecycle queue's handler over in-memory services: which messages a TikTok rate limit holds back.

The handler's runtime wiring (``status_checks()``, ``archive_ready()``, ``user_purge()``,
``message_visibility()``, ``settings()``) is replaced by the real use cases over the unit fakes; the batch
goes through Powertools' ``process_partial_response`` as in Lambda, so the answer is the exact
``batchItemFailures``.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from aws_lambda_powertools.utilities.batch import process_partial_response

from tests.conftest import BACKEND_CALLER
from tests.harness.events import sqs_record
from tests.harness.lambda_context import FakeLambdaContext
from tests.unit.fakes import (
    Clock,
    FakeAppCredentials,
    FakeDownloadJobs,
    FakeDownloadRecords,
    FakeEvents,
    FakeGrants,
    FakeLifecycleQueue,
    FakeQuota,
    FakeTikTok,
    FakeTransfer,
    FakeVault,
    Journal,
    freeze_time,
)
from tiktok_archive.adapters.grant_items import Grant
from tiktok_archive.adapters.grants import user_grant_id
from tiktok_archive.adapters.token_vault import ACCESS_TOKEN_PURPOSE, REFRESH_TOKEN_PURPOSE
from tiktok_archive.handlers import lifecycle as handler
from tiktok_archive.handlers import queue_failures
from tiktok_archive.logic.purge import UserPurge
from tiktok_archive.logic.status_checks import ArchiveReady, StatusChecks
from tiktok_archive.logic.tokens import TokenService
from tiktok_archive.models.check_schedule import Schedule
from tiktok_archive.models.deadline import Deadline
from tiktok_archive.models.download_record import DownloadRecord, DownloadStatus, Preparation
from tiktok_archive.models.errors import StorageError
from tiktok_archive.models.messages import (
    ArchiveReadyWork,
    AuthorizationRemovedWork,
    EraseUser,
    LifecycleMessage,
    PurgeAgain,
    RevokeAtTikTok,
    StatusCheck,
)
from tiktok_archive.models.portability import RequestStatus
from tiktok_archive.models.tiktok_errors import TikTokApiError
from tiktok_archive.models.tiktok_quota import WINDOW_SECONDS, Endpoint, Priority, QuotaPlan

OPENID = "openid-1"
ERASED = "openid-erased"
GRANT = user_grant_id(BACKEND_CALLER, OPENID)
ERASED_GRANT = user_grant_id(BACKEND_CALLER, ERASED)
LIMITED_ID = 7_234_567_890_123_450_001
NEXT_ID = 7_234_567_890_123_450_002
READY_ID = 7_234_567_890_123_450_003
REMOVED_ID = 7_234_567_890_123_450_004
ERASED_ID = 7_234_567_890_123_450_005


@dataclass
class Visibility:
    """The messages handed back, with the seconds after which they come back."""

    postponed: list[tuple[str, int]] = field(default_factory=list)
    sent_again: list[tuple[str, int]] = field(default_factory=list)  # (body, delay)
    sqs_takes_sends: bool = True

    def postpone(self, queue_url: str, receipt_handle: str, seconds: int) -> None:
        self.postponed.append((receipt_handle, seconds))

    def send_again(self, queue_url: str, body: str, seconds: int) -> bool:
        if self.sqs_takes_sends:
            self.sent_again.append((body, seconds))
        return self.sqs_takes_sends


@dataclass
class World:
    clock: Clock
    records: FakeDownloadRecords
    grants: FakeGrants
    vault: FakeVault
    tiktok: FakeTikTok
    transfer: FakeTransfer
    visibility: Visibility
    queue: FakeLifecycleQueue
    ids: dict[str, str] = field(default_factory=dict)  # message id → what it is (for the answer)

    def given_grant(self, grant_id: str, user: str, *, erasing: bool = False) -> None:
        now = self.clock.now()
        binding = {"grant_id": grant_id}
        self.grants.items[grant_id] = Grant(
            grant_id=grant_id,
            generation="generation-1",
            sealed_access_token=self.vault.seal("access-stored", ACCESS_TOKEN_PURPOSE, binding),
            access_expires_at=now + timedelta(hours=1),
            sealed_refresh_token=self.vault.seal("refresh-stored", REFRESH_TOKEN_PURPOSE, binding),
            refresh_expires_at=now + timedelta(days=100),
            user_openid=user,
            caller=BACKEND_CALLER,
            erasing=erasing,
        )

    def given_waiting(self, request_id: int, user: str = OPENID, grant_id: str = GRANT) -> None:
        now = self.clock.now()
        created = self.records.create_waiting(
            request_id,
            caller=BACKEND_CALLER,
            grant_id=grant_id,
            user_openid=user,
            preparation=Preparation(
                "json",
                ("all_data",),
                next_check_at=now,
                give_up_at=now + timedelta(days=7),
            ),
            poll_interval=60,
        )
        assert isinstance(created, DownloadRecord)

    def status(self, request_id: int) -> DownloadStatus:
        return self.records.items[request_id].status

    def batch(self, *messages: tuple[str, LifecycleMessage | str]) -> list[str]:
        """Run one invocation's batch; the names of the messages that come back (``batchItemFailures``)."""
        records = []
        for name, message in messages:
            body = message if isinstance(message, str) else json.dumps(message.body())
            record = sqs_record(body, message_id=str(uuid.uuid4()))
            record["receiptHandle"] = name
            self.ids[record["messageId"]] = name
            records.append(record)
        handler._invocation.paused_until = 0.0
        handler._invocation.deadline = Deadline.after(60)
        answer = process_partial_response(
            event={"Records": records},
            record_handler=handler.lifecycle_message,
            processor=handler.processor,
            context=FakeLambdaContext("LifecycleFunction", 60_000),  # type: ignore[arg-type]
        )
        return [self.ids[str(failure["itemIdentifier"])] for failure in answer["batchItemFailures"]]


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> World:
    clock = Clock()
    freeze_time(monkeypatch, clock)
    journal = Journal()
    records = FakeDownloadRecords(clock, journal)
    grants = FakeGrants(clock, journal)
    vault = FakeVault(journal)
    tiktok = FakeTikTok(journal)
    events = FakeEvents(journal)
    queue = FakeLifecycleQueue(journal)
    jobs = FakeDownloadJobs(journal)
    transfer = FakeTransfer(journal)
    app = FakeAppCredentials()
    tokens = TokenService(grants, vault, tiktok, lambda: app)
    schedule = Schedule(initial=60, longest=480, give_up_after=timedelta(days=7))
    checks = StatusChecks(tiktok, records, tokens, events, queue, lambda: jobs, schedule)
    ready = ArchiveReady(records, events, lambda: jobs)
    purge = UserPurge(records, grants, tokens, transfer, events, queue, tiktok, lambda: app)
    visibility = Visibility()
    monkeypatch.setattr(handler, "status_checks", lambda: checks)
    monkeypatch.setattr(handler, "archive_ready", lambda: ready)
    monkeypatch.setattr(handler, "user_purge", lambda: purge)
    monkeypatch.setattr(handler, "message_visibility", lambda: visibility)
    monkeypatch.setattr(queue_failures, "message_visibility", lambda: visibility)
    monkeypatch.setattr(handler, "settings", lambda: SimpleNamespace(status_poll_pace_ms=0))
    return World(clock, records, grants, vault, tiktok, transfer, visibility, queue)


def rate_limited(retry_after: str) -> TikTokApiError:
    return TikTokApiError(
        "rate_limit_exceeded", "TikTok: slow down", log_id="LOG", upstream_status=429, retry_after=retry_after
    )


def test_after_a_429_only_tiktok_work_is_handed_back_and_purges_are_worked(world: World) -> None:
    # Given a batch: a status check TikTok answers 429 (Retry-After 30), then another check, a webhook's
    # ready archive, a disconnect, an erasure, a second pass, and an erasure's TikTok side
    world.given_grant(GRANT, OPENID)
    world.given_waiting(LIMITED_ID)
    world.given_waiting(NEXT_ID)
    world.given_waiting(READY_ID)
    world.given_waiting(REMOVED_ID, user="openid-removed", grant_id=GRANT)
    world.given_grant(ERASED_GRANT, ERASED)
    world.given_waiting(ERASED_ID, user=ERASED, grant_id=ERASED_GRANT)
    world.tiktok.checks.then(rate_limited("30"))

    # When the invocation works it
    handed_back = world.batch(
        ("check-429", StatusCheck(LIMITED_ID, 0)),
        ("check-next", StatusCheck(NEXT_ID, 0)),
        ("ready", ArchiveReadyWork(READY_ID, OPENID)),
        ("removed", AuthorizationRemovedWork("openid-removed", 1)),
        ("erase", EraseUser(BACKEND_CALLER, ERASED)),
        ("again", PurgeAgain("openid-removed", None, 1, world.clock.now())),
        ("revoke", RevokeAtTikTok(BACKEND_CALLER, "openid-3", ())),
    )

    # Then only the later TikTok work comes back, after TikTok's Retry-After, without calling TikTok …
    assert handed_back == ["check-next", "revoke"]
    assert [name for name, _ in world.visibility.postponed] == ["check-next", "revoke"]
    assert all(30 <= seconds <= 31 for _, seconds in world.visibility.postponed)
    assert world.tiktok.checks.count == 1
    assert world.tiktok.revokes.count == 0
    # … the rate-limited check is done (its next check is scheduled), the others' work all happened
    assert world.status(LIMITED_ID) is DownloadStatus.WAITING
    assert world.status(NEXT_ID) is DownloadStatus.WAITING
    assert world.status(READY_ID) is DownloadStatus.QUEUED
    assert world.status(REMOVED_ID) is DownloadStatus.REVOKED
    assert world.status(ERASED_ID) is DownloadStatus.REVOKED
    assert world.grants.items[ERASED_GRANT].erasing is True


def test_a_check_before_its_time_is_acknowledged_and_sent_on_even_after_a_429(world: World) -> None:
    # Given a check TikTok answers 429, then a check whose record expects it in an hour (a hop of a
    # backstop's interval)
    world.given_grant(GRANT, OPENID)
    world.given_waiting(LIMITED_ID)
    world.given_waiting(NEXT_ID)
    record = world.records.items[NEXT_ID]
    assert record.preparation is not None
    later = dataclasses.replace(record.preparation, next_check_at=world.clock.now() + timedelta(hours=1))
    world.records.items[NEXT_ID] = dataclasses.replace(record, preparation=later)
    world.tiktok.checks.then(rate_limited("30"))

    # When the invocation works them: the early one first, then the rate-limited one
    handed_back = world.batch(("early", StatusCheck(NEXT_ID, 0)), ("check-429", StatusCheck(LIMITED_ID, 0)))

    # Then the early one is acknowledged, having sent itself on (900 s, the same check) without TikTok
    assert handed_back == []
    assert (NEXT_ID, 0, 900) in world.queue.checks
    assert world.tiktok.checks.count == 1


def test_a_rate_limited_revocation_holds_back_the_checks_after_it(world: World) -> None:
    # Given an erasure's TikTok side that TikTok rate-limits, then a status check
    world.given_grant(GRANT, OPENID)
    world.given_waiting(NEXT_ID)
    world.given_grant(ERASED_GRANT, ERASED, erasing=True)
    world.tiktok.revokes.then(rate_limited("20"))

    handed_back = world.batch(
        ("revoke", RevokeAtTikTok(BACKEND_CALLER, ERASED, ())),
        ("check", StatusCheck(NEXT_ID, 0)),
    )

    # Then both come back after Retry-After; the erasing grant is kept for the revocation's next try
    assert handed_back == ["revoke", "check"]
    assert all(20 <= seconds <= 21 for _, seconds in world.visibility.postponed)
    assert world.tiktok.checks.count == 0
    assert world.grants.items[ERASED_GRANT].erasing is True


def test_a_purge_that_fails_for_now_comes_back_and_the_rest_of_the_batch_is_worked(world: World) -> None:
    # Given a disconnect whose archive delete S3 refuses for now, and a ready status check after it
    world.given_grant(GRANT, OPENID)
    world.given_waiting(REMOVED_ID, user="openid-removed")
    world.given_waiting(NEXT_ID)
    world.transfer.faults.arm("discard", StorageError("S3 DeleteObject failed: SlowDown"))
    world.tiktok.checks.then(RequestStatus(NEXT_ID, "downloading"))

    handed_back = world.batch(
        ("removed", AuthorizationRemovedWork("openid-removed", 1)),
        ("check", StatusCheck(NEXT_ID, 0)),
    )

    assert handed_back == ["removed"]
    assert world.status(NEXT_ID) is DownloadStatus.QUEUED


@pytest.mark.parametrize("body", ["not json", json.dumps({"kind": "nothing"}), json.dumps({"kind": "check"})])
def test_a_malformed_message_is_acknowledged(world: World, body: Any) -> None:
    assert world.batch(("malformed", body)) == []


def spent_quota(world: World, *spent: tuple[Endpoint, int]) -> FakeQuota:
    """A quota of 10 calls a sub-window (6 for checks), ``spent`` already, that the world's TikTok draws."""
    quota = FakeQuota(QuotaPlan(70, 100), lambda: world.clock.now().timestamp())
    for endpoint, calls in spent:
        for _ in range(calls):
            assert quota.take(endpoint, Priority.PURGE) is None
    world.tiktok.quota = quota
    return quota


def test_a_spent_quota_defers_the_checks_but_not_the_revocation(world: World) -> None:
    # Given a quota whose status checks are spent (6 of 10) on both endpoints, an erasure's TikTok side
    # and a status check
    quota = spent_quota(world, (Endpoint.CHECK, 6), (Endpoint.REVOKE, 6))
    world.given_grant(GRANT, OPENID)
    world.given_waiting(NEXT_ID)
    world.given_grant(ERASED_GRANT, ERASED, erasing=True)
    world.tiktok.revokes.then(True)

    handed_back = world.batch(
        ("revoke", RevokeAtTikTok(BACKEND_CALLER, ERASED, ())),
        ("check", StatusCheck(NEXT_ID, 0)),
    )

    # Then the revocation, a purge's, gets its call; the check is not made, nor failed: the same check
    # comes back as a new message once the quota's next sub-window starts (jittered: 10 to 20 s), sent
    # again as all refused work is (settle), the record's schedule as it was, and this one acknowledged
    assert handed_back == []
    assert world.tiktok.revokes.count == 1
    assert world.tiktok.checks.count == 0
    assert [(endpoint, priority) for _, endpoint, priority in quota.refused] == [
        (Endpoint.CHECK, Priority.CHECK)
    ]
    record = world.records.items[NEXT_ID]
    assert (record.status, record.poll_seq) == (DownloadStatus.WAITING, 0)
    assert [check for check in world.queue.checks if check[0] == NEXT_ID] == []
    [(body, delay)] = world.visibility.sent_again
    assert json.loads(body) == StatusCheck(NEXT_ID, 0).body()
    assert WINDOW_SECONDS <= delay <= 2 * WINDOW_SECONDS
    assert world.visibility.postponed == []
    assert ERASED_GRANT not in world.grants.items


def test_a_revocation_the_quota_refuses_is_sent_again_and_acknowledged(world: World) -> None:
    # Given a quota with no call left for revocations, even a purge's
    spent_quota(world, (Endpoint.REVOKE, 10))
    world.given_grant(ERASED_GRANT, ERASED, erasing=True)
    revoke = RevokeAtTikTok(BACKEND_CALLER, ERASED, ())

    handed_back = world.batch(("revoke", revoke))

    # Then TikTok is not called; the same message is sent again, delayed until the next sub-window (plus
    # jitter), and the one received is acknowledged: its receive count does not grow
    assert handed_back == []
    assert world.tiktok.revokes.count == 0
    [(body, delay)] = world.visibility.sent_again
    assert json.loads(body) == revoke.body()
    assert 10 <= delay <= 20
    assert world.visibility.postponed == []
    assert world.grants.items[ERASED_GRANT].erasing is True


def test_a_deferred_message_sqs_will_not_take_again_comes_back_as_a_transient_failure(world: World) -> None:
    # Given a revocation the quota refuses, and SQS refusing to take the message again
    spent_quota(world, (Endpoint.REVOKE, 10))
    world.given_grant(ERASED_GRANT, ERASED, erasing=True)
    world.visibility.sqs_takes_sends = False

    handed_back = world.batch(("revoke", RevokeAtTikTok(BACKEND_CALLER, ERASED, ())))

    # Then the received message itself comes back, after the quota's delay: late, never lost
    assert handed_back == ["revoke"]
    [(name, seconds)] = world.visibility.postponed
    assert (name, 10 <= seconds <= 20) == ("revoke", True)
