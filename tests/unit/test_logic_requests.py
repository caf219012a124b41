"""RequestLifecycle with in-memory collaborators: add, the schedule of status checks, cancel."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import timedelta

import pytest

from tests.unit.fakes import (
    Clock,
    FakeAppCredentials,
    FakeDownloadJobs,
    FakeDownloadRecords,
    FakeEvents,
    FakeGrants,
    FakeLifecycleQueue,
    FakeTikTok,
    FakeTransfer,
    FakeVault,
    Journal,
    freeze_time,
)
from tiktok_archive.adapters.grants import Grant
from tiktok_archive.adapters.token_vault import ACCESS_TOKEN_PURPOSE, REFRESH_TOKEN_PURPOSE
from tiktok_archive.logic.requests import READY_LEASE, RequestLifecycle, Schedule
from tiktok_archive.logic.tokens import TokenService
from tiktok_archive.models.download import DownloadRequest
from tiktok_archive.models.download_record import DownloadRecord, DownloadStatus, Preparation
from tiktok_archive.models.errors import (
    DownloadNotFoundError,
    ReauthorizationRequiredError,
    RecordStoreError,
    StorageError,
    TikTokApiError,
    TokenVaultError,
    TransferError,
    UpstreamUnavailableError,
)
from tiktok_archive.models.portability import NewRequest, RequestStatus

REQUEST_ID = 7_234_567_890_123_456_789  # beyond 2^53: no double rounding on the way
OPENID = "openid-1"
GRANT = f"user:{OPENID}"
SCHEDULE = Schedule(initial=60, longest=480, give_up_after=timedelta(days=7))
REMAINING_MS = 60_000
APPLY_TIME = 1_772_000_000


@dataclass
class World:
    clock: Clock
    journal: Journal
    records: FakeDownloadRecords
    grants: FakeGrants
    vault: FakeVault
    tiktok: FakeTikTok
    events: FakeEvents
    queue: FakeLifecycleQueue
    jobs: FakeDownloadJobs
    transfer: FakeTransfer
    lifecycle: RequestLifecycle

    @property
    def record(self) -> DownloadRecord:
        return self.records.items[REQUEST_ID]

    def given_grant(self, *, access_left: timedelta = timedelta(hours=1), user: str | None = OPENID) -> None:
        now = self.clock.now()
        binding = {"grant_id": GRANT}
        self.grants.items[GRANT] = Grant(
            grant_id=GRANT,
            version=1,
            sealed_access_token=self.vault.seal("access-stored", ACCESS_TOKEN_PURPOSE, binding),
            access_expires_at=now + access_left,
            sealed_refresh_token=self.vault.seal("refresh-stored", REFRESH_TOKEN_PURPOSE, binding),
            refresh_expires_at=now + timedelta(days=100),
            user_openid=user,
        )

    def given_waiting(
        self,
        *,
        seq: int = 3,
        interval: int = 120,
        user: str | None = OPENID,
        give_up_in: timedelta = timedelta(days=6),
    ) -> DownloadRecord:
        """A waiting request of the user's grant, expecting check number ``seq`` in ``interval`` s."""
        self.given_grant()
        now = self.clock.now()
        created = self.records.create_waiting(
            REQUEST_ID,
            grant_id=GRANT,
            user_openid=user,
            preparation=Preparation(
                "json",
                ("all_data",),
                next_check_at=now + timedelta(seconds=interval),
                give_up_at=now + give_up_in,
            ),
            poll_interval=interval,
        )
        assert isinstance(created, DownloadRecord)
        record = dataclasses.replace(created, poll_seq=seq)
        self.records.items[REQUEST_ID] = record
        self.journal.calls.clear()
        return record

    def given_record(self, status: DownloadStatus) -> DownloadRecord:
        record = dataclasses.replace(self.given_waiting(), status=status)
        self.records.items[REQUEST_ID] = record
        return record

    def check(self, seq: int = 3) -> str:
        return self.lifecycle.check(REQUEST_ID, seq, REMAINING_MS).action


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
    lifecycle = RequestLifecycle(tiktok, records, tokens, events, queue, lambda: jobs, transfer, SCHEDULE)
    return World(clock, journal, records, grants, vault, tiktok, events, queue, jobs, transfer, lifecycle)


def status(value: str) -> RequestStatus:
    return RequestStatus(REQUEST_ID, value, apply_time=APPLY_TIME)


def tiktok_error(code: str, http_status: int, retry_after: str | None = None) -> TikTokApiError:
    return TikTokApiError(
        code,
        f"TikTok refused: {code}",
        log_id="202603011200LOGID",
        upstream_status=http_status,
        retry_after=retry_after,
    )


# -- stale checks ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "given",
    ["another seq expected", "no longer waiting", "no record"],
)
def test_a_stale_check_calls_nothing(world: World, given: str) -> None:
    # Given a check that is not the one the record expects
    if given == "another seq expected":
        world.given_waiting(seq=4)
    elif given == "no longer waiting":
        world.given_record(DownloadStatus.QUEUED)
    before = dict(world.records.items)

    # When it arrives
    action = world.check(seq=3)

    # Then it only read the record: no TikTok, no token, no message, no write, no event
    assert action == "stale"
    assert world.journal.calls == ["records.get"]
    assert world.records.items == before


# -- TikTok says pending --------------------------------------------------------------------------
@pytest.mark.parametrize(("interval", "next_interval"), [(60, 120), (120, 240), (400, 480), (480, 480)])
def test_a_pending_request_is_checked_again_after_twice_the_interval_up_to_the_longest(
    world: World, interval: int, next_interval: int
) -> None:
    # Given a waiting request checked every ``interval`` seconds, still pending at TikTok
    world.given_waiting(seq=3, interval=interval)
    world.tiktok.checks.then(status("pending"))

    # When its expected check runs
    action = world.check(seq=3)

    # Then check number 4 is sent, delayed by the doubled interval (capped), and the record says so
    assert action == "waiting"
    assert world.queue.checks == [(REQUEST_ID, 4, next_interval)]
    record = world.record
    assert (record.status, record.poll_seq, record.poll_interval) == (
        DownloadStatus.WAITING,
        4,
        next_interval,
    )
    assert record.preparation is not None
    assert record.preparation.next_check_at == world.clock.now() + timedelta(seconds=next_interval)
    assert (record.preparation.tiktok_status, record.preparation.checks) == ("pending", 1)
    assert world.tiktok.checks.calls == [(REQUEST_ID, "access-stored")]
    assert world.events.sent == []


def test_the_next_check_is_sent_before_the_record_is_advanced(world: World) -> None:
    # Given a pending request whose record write fails after the next check was sent
    world.given_waiting(seq=3)
    world.tiktok.checks.then(status("pending"))
    world.records.faults.arm("advance_schedule", RecordStoreError("DynamoDB UpdateItem failed"))

    # When its check runs
    with pytest.raises(RecordStoreError) as raised:
        world.check(seq=3)

    # Then the message was sent first: the chain is not lost, and the failed check comes back
    # (transient) to repeat itself
    assert world.journal.first("queue.schedule_check") < world.journal.first("records.advance_schedule")
    assert world.queue.checks == [(REQUEST_ID, 4, 240)]
    assert raised.value.is_transient
    assert world.record.poll_seq == 3


def test_the_user_learned_from_the_grant_is_recorded(world: World) -> None:
    # Given a waiting request whose user was not given, and a grant that learned it from a refresh
    world.given_waiting(user=None)
    world.tiktok.checks.then(status("pending"))

    world.check()

    assert world.record.user_openid == OPENID


# -- TikTok says downloading ----------------------------------------------------------------------
def test_a_ready_archive_queues_its_download_before_the_record_says_queued(world: World) -> None:
    # Given a waiting request whose archive TikTok has prepared
    world.given_waiting(seq=3)
    world.tiktok.checks.then(status("downloading"))

    # When its check runs
    action = world.check(seq=3)

    # Then the download job (with the user's grant) was sent before the record said queued …
    assert action == "ready"
    assert world.jobs.for_grant == [REQUEST_ID]
    assert world.journal.first("jobs.send_for_grant") < world.journal.first("records.mark_ready")
    record = world.record
    assert record.status is DownloadStatus.QUEUED
    assert record.lease_expires_at is not None
    assert record.lease_expires_at - world.clock.now() >= READY_LEASE
    # … one Archive Ready event, and no further check
    assert world.events.detail_types == ["Archive Ready"]
    assert world.queue.checks == []


def test_a_repeated_ready_check_queues_and_publishes_nothing_more(world: World) -> None:
    # Given a ready request whose check message is delivered twice
    world.given_waiting(seq=3)
    world.tiktok.checks.then(status("downloading"))
    world.check(seq=3)

    # When the duplicate arrives; Then it is stale: one job, one event
    assert world.check(seq=3) == "stale"
    assert world.jobs.for_grant == [REQUEST_ID]
    assert world.events.detail_types == ["Archive Ready"]
    assert world.tiktok.checks.count == 1


def test_a_ready_check_racing_another_that_queued_it_publishes_nothing_more(world: World) -> None:
    # Given a ready request whose duplicate check (in another invocation) marks it ready while this
    # one asks TikTok
    world.given_waiting(seq=3)

    def the_duplicate_marks_it_ready() -> None:
        world.records.mark_ready(REQUEST_ID, 3, apply_time=None, collect_time=None, lease=READY_LEASE)

    world.tiktok.checks.then(status("downloading"), meanwhile=the_duplicate_marks_it_ready)

    # When this check finishes
    action = world.check(seq=3)

    # Then its write is refused and it publishes no second Archive Ready (its job is a harmless
    # duplicate: the worker's claim lets one download run)
    assert action == "ready"
    assert world.record.status is DownloadStatus.QUEUED
    assert world.events.sent == []


# -- TikTok ended it ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("tiktok_status", "final", "detail_type"),
    [
        ("expired", DownloadStatus.EXPIRED, "Request Expired"),
        ("cancelled", DownloadStatus.CANCELLED, "Request Cancelled"),
    ],
)
def test_a_request_ended_at_tiktok_ends_its_record_and_its_checks(
    world: World, tiktok_status: str, final: DownloadStatus, detail_type: str
) -> None:
    world.given_waiting(seq=3)
    world.tiktok.checks.then(status(tiktok_status))

    action = world.check(seq=3)

    assert action == final.value
    assert world.record.status is final
    assert world.record.preparation is not None
    assert world.record.preparation.tiktok_status == tiktok_status
    assert world.events.detail_types == [detail_type]
    assert world.queue.checks == []
    assert world.jobs.for_grant == []


# -- failures of a check --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("retry_after", "delay"),
    [
        ("300", 300),  # longer than the doubled interval (240)
        ("700", 700),  # longer than the schedule's longest (480)
        ("3600", 900),  # longer than SQS allows: its longest delay
    ],
)
def test_a_rate_limited_check_comes_back_after_at_least_retry_after(
    world: World, retry_after: str, delay: int
) -> None:
    # Given a waiting request checked every 120 s, and TikTok answering 429 with a Retry-After
    world.given_waiting(seq=3, interval=120)
    world.tiktok.checks.then(tiktok_error("rate_limit_exceeded", 429, retry_after=retry_after))

    # When its check runs
    outcome = world.lifecycle.check(REQUEST_ID, 3, REMAINING_MS)

    # Then the next check waits at least Retry-After (at most SQS's 900 s), the request still waits,
    # and the outcome tells the handler to pause the rest of its batch
    assert (outcome.action, outcome.rate_limited_for) == ("rate_limited", int(retry_after))
    assert world.queue.checks == [(REQUEST_ID, 4, delay)]
    record = world.record
    assert (record.status, record.poll_seq, record.poll_interval) == (DownloadStatus.WAITING, 4, delay)
    assert record.preparation is not None
    assert record.preparation.next_check_at == world.clock.now() + timedelta(seconds=delay)
    assert world.events.sent == []


def test_a_rate_limit_without_retry_after_slows_the_schedule(world: World) -> None:
    world.given_waiting(seq=3, interval=120)
    world.tiktok.checks.then(tiktok_error("rate_limit_exceeded", 429))

    outcome = world.lifecycle.check(REQUEST_ID, 3, REMAINING_MS)

    assert (outcome.action, outcome.rate_limited_for) == ("rate_limited", None)
    assert world.queue.checks == [(REQUEST_ID, 4, 240)]


@pytest.mark.parametrize(
    "error",
    [UpstreamUnavailableError("TikTok could not be reached"), TokenVaultError("KMS Decrypt failed")],
    ids=["network", "kms"],
)
def test_a_transient_failure_checks_again_at_the_same_interval(world: World, error: TransferError) -> None:
    # Given a waiting request checked every 120 s, and a transient failure on the way to TikTok
    world.given_waiting(seq=3, interval=120)
    if isinstance(error, TokenVaultError):
        world.vault.faults.arm("open", error)
    else:
        world.tiktok.checks.then(error)

    # When its check runs
    action = world.check(seq=3)

    # Then the next check comes at the same interval and the request keeps waiting
    assert action == "retry"
    assert world.queue.checks == [(REQUEST_ID, 4, 120)]
    assert (world.record.status, world.record.poll_interval) == (DownloadStatus.WAITING, 120)
    assert world.events.sent == []


@pytest.mark.parametrize(
    "answer",
    [tiktok_error("invalid_params", 400), None],
    ids=["invalid_params", "ok-about-another-request"],
)
def test_a_request_tiktok_does_not_confirm_fails_not_found(
    world: World, answer: TikTokApiError | None
) -> None:
    # Given a waiting request TikTok no longer knows for this user
    world.given_waiting(seq=3)
    world.tiktok.checks.then(answer)

    # When its check runs
    action = world.check(seq=3)

    # Then it fails not_found (TikTok's log_id kept when it gave one), with an event and no next check
    assert action == "failed"
    record = world.record
    assert record.status is DownloadStatus.FAILED
    assert record.error is not None
    assert (record.error.code, record.error.transient) == ("not_found", False)
    if answer is not None:
        assert record.error.log_id == "202603011200LOGID"
    assert world.events.detail_types == ["Download Failed"]
    assert world.queue.checks == []


def test_a_request_past_its_give_up_time_fails_without_asking_tiktok(world: World) -> None:
    # Given a waiting request whose give-up time has passed
    world.given_waiting(seq=3, give_up_in=timedelta(days=7))
    world.clock.advance(timedelta(days=7).total_seconds())

    # When its check runs
    action = world.check(seq=3)

    # Then it fails preparation_timed_out; neither TikTok nor the user's tokens were touched
    assert action == "failed"
    assert world.record.error is not None
    assert world.record.error.code == "preparation_timed_out"
    assert world.tiktok.checks.count == 0
    assert not any(call.startswith(("grants.", "vault.")) for call in world.journal.calls)
    assert world.events.detail_types == ["Download Failed"]
    assert world.queue.checks == []


def test_a_refresh_tiktok_refuses_fails_the_request_and_erases_the_grant(world: World) -> None:
    # Given a waiting request whose user's access token expired and whose refresh TikTok refuses
    world.given_waiting(seq=3)
    world.given_grant(access_left=timedelta(minutes=1))
    world.tiktok.refreshes.then(
        ReauthorizationRequiredError("TikTok refused the token refresh: invalid_grant")
    )

    # When its check runs
    action = world.check(seq=3)

    # Then the request fails reauthorization_required (an event says so) and the dead grant is gone
    assert action == "failed"
    assert world.record.error is not None
    assert world.record.error.code == "reauthorization_required"
    assert GRANT not in world.grants.items
    assert world.tiktok.checks.count == 0
    assert world.events.detail_types == ["Download Failed"]
    assert world.queue.checks == []


# -- POST /requests -------------------------------------------------------------------------------
NEW = NewRequest("json", ("all_data",), refresh_token="refresh-caller", open_id=OPENID)


def test_an_added_request_keeps_the_users_tokens_and_schedules_its_first_check(world: World) -> None:
    # Given TikTok accepting the data request
    world.tiktok.adds.then(REQUEST_ID)

    # When a caller adds it
    record = world.lifecycle.add("access-caller", NEW, REMAINING_MS)

    # Then the record waits for check 0, after the schedule's first interval; the user's tokens are
    # kept sealed in their grant; one Request Added event
    assert world.tiktok.adds.calls == [("access-caller", "json", ("all_data",))]
    assert (record.status, record.poll_seq, record.grant_id) == (DownloadStatus.WAITING, 0, GRANT)
    assert world.record == record
    assert world.queue.checks == [(REQUEST_ID, 0, SCHEDULE.initial)]
    assert world.journal.first("records.create_waiting") < world.journal.first("queue.schedule_check")
    grant = world.grants.items[GRANT]
    assert grant.sealed_refresh_token is not None
    assert world.vault.open(grant.sealed_refresh_token, REFRESH_TOKEN_PURPOSE, {"grant_id": GRANT}) == (
        "refresh-caller"
    )
    assert world.events.detail_types == ["Request Added"]


EARLIER_ID = 7_234_567_890_123_450_000


def given_users_grant(world: World, last_request_id: int | None = EARLIER_ID) -> Grant:
    """The user's grant from an earlier request, whose tokens a new caller must not replace unchecked."""
    world.given_grant()
    grant = dataclasses.replace(world.grants.items[GRANT], last_request_id=last_request_id)
    world.grants.items[GRANT] = grant
    return grant


def test_a_users_first_request_starts_their_grant_and_remembers_the_request(world: World) -> None:
    world.tiktok.adds.then(REQUEST_ID)

    world.lifecycle.add("access-caller", NEW, REMAINING_MS)

    # Nothing to confirm against: the caller's open_id starts the grant; TikTok was not asked
    assert world.tiktok.checks.count == 0
    assert world.grants.items[GRANT].last_request_id == REQUEST_ID


def test_a_later_request_joins_the_users_grant_once_tiktok_confirms_the_same_user(world: World) -> None:
    # Given the user's grant, and TikTok confirming that the caller's token owns its latest request
    given_users_grant(world)
    world.tiktok.checks.then(RequestStatus(EARLIER_ID, "pending"))
    world.tiktok.adds.then(REQUEST_ID)

    # When the caller adds a request for that open_id
    record = world.lifecycle.add("access-caller", NEW, REMAINING_MS)

    # Then TikTok was asked first, with the caller's token, then the caller's tokens joined the grant
    assert world.tiktok.checks.calls == [(EARLIER_ID, "access-caller")]
    assert world.journal.first("tiktok.check_request") < world.journal.first("tiktok.add_request")
    assert (record.grant_id, record.user_openid) == (GRANT, OPENID)
    grant = world.grants.items[GRANT]
    assert world.vault.open(grant.sealed_refresh_token or "", REFRESH_TOKEN_PURPOSE, {"grant_id": GRANT}) == (
        "refresh-caller"
    )
    assert grant.last_request_id == REQUEST_ID


@pytest.mark.parametrize(
    ("last_request_id", "tiktok_says"),
    [
        (EARLIER_ID, None),  # the token's user does not own the user's latest request
        (EARLIER_ID, tiktok_error("invalid_params", 400)),
        (None, None),  # nothing to confirm against
    ],
)
def test_a_request_whose_open_id_tiktok_does_not_confirm_leaves_that_users_grant_alone(
    world: World, last_request_id: int | None, tiktok_says: TikTokApiError | None
) -> None:
    # Given a user's grant, and a caller (with the API key and a token of its own) naming that open_id
    before = given_users_grant(world, last_request_id)
    if last_request_id is not None:
        world.tiktok.checks.then(tiktok_says)
    world.tiktok.adds.then(REQUEST_ID)

    # When the caller adds a request
    record = world.lifecycle.add("access-caller", NEW, REMAINING_MS)

    # Then the user's grant is as it was; the request goes on with the caller's own tokens, apart,
    # linked to no user (its event names no open_id)
    assert world.grants.items[GRANT] == before
    assert record.user_openid is None
    assert record.grant_id == f"request:{REQUEST_ID}"
    kept = world.grants.items[record.grant_id]
    binding = {"grant_id": record.grant_id}
    assert world.vault.open(kept.sealed_access_token or "", ACCESS_TOKEN_PURPOSE, binding) == "access-caller"
    assert world.events.sent[0][1].get("open_id") is None


def test_a_caller_token_tiktok_refuses_while_confirming_adds_nothing(world: World) -> None:
    before = given_users_grant(world)
    world.tiktok.checks.then(tiktok_error("access_token_invalid", 401))

    with pytest.raises(TikTokApiError, match="access_token_invalid"):
        world.lifecycle.add("access-caller", NEW, REMAINING_MS)

    assert world.tiktok.adds.count == 0
    assert world.grants.items == {GRANT: before}
    assert world.records.items == {}


def test_a_request_tiktok_refuses_keeps_nothing(world: World) -> None:
    world.tiktok.adds.then(tiktok_error("scope_permission_missed", 400))

    with pytest.raises(TikTokApiError, match="scope_permission_missed"):
        world.lifecycle.add("access-caller", NEW, REMAINING_MS)

    assert (world.records.items, world.grants.items) == ({}, {})
    assert (world.queue.checks, world.events.sent) == ([], [])


@pytest.mark.parametrize(
    ("fake", "method", "error"),
    [
        ("records", "create_waiting", RecordStoreError("DynamoDB UpdateItem failed")),
        ("grants", "store", RecordStoreError("DynamoDB UpdateItem failed")),
        ("vault", "seal", TokenVaultError("KMS Encrypt failed")),
    ],
)
def test_a_request_tiktok_accepted_but_not_kept_names_its_request_id(
    world: World, fake: str, method: str, error: TransferError
) -> None:
    # Given TikTok accepting the request, and AWS failing to keep it
    world.tiktok.adds.then(REQUEST_ID)
    getattr(world, fake).faults.arm(method, error)

    # When a caller adds it
    with pytest.raises(type(error)) as raised:
        world.lifecycle.add("access-caller", NEW, REMAINING_MS)

    # Then the error names the request_id (it can still be downloaded), and nothing was scheduled
    assert str(REQUEST_ID) in raised.value.message
    assert "POST /downloads" in raised.value.message
    assert raised.value.is_transient
    assert (world.records.items, world.queue.checks, world.events.sent) == ({}, [], [])


def test_a_request_id_that_already_has_a_record_is_not_kept_twice(world: World) -> None:
    before = world.given_waiting()
    world.tiktok.adds.then(REQUEST_ID)

    with pytest.raises(RecordStoreError, match=str(REQUEST_ID)):
        world.lifecycle.add("access-caller", NEW, REMAINING_MS)

    assert world.record == before
    assert (world.queue.checks, world.events.sent) == ([], [])


def test_a_first_check_that_could_not_be_sent_still_answers_the_waiting_request(world: World) -> None:
    # Given TikTok accepting the request and SQS failing (the sweeper re-drives it later)
    world.tiktok.adds.then(REQUEST_ID)
    world.queue.faults.arm("schedule_check", TransferError("SQS SendMessage failed"))

    record = world.lifecycle.add("access-caller", NEW, REMAINING_MS)

    assert record.status is DownloadStatus.WAITING
    assert world.events.detail_types == ["Request Added"]


# -- DELETE /downloads/{id} -----------------------------------------------------------------------
CALLER = DownloadRequest(REQUEST_ID, "access-caller")


def test_cancelling_a_pending_request_cancels_it_at_tiktok_and_here(world: World) -> None:
    # Given a waiting request, pending at TikTok
    world.given_waiting(seq=3)
    world.tiktok.checks.then(status("pending"))
    world.tiktok.cancels.then(None)

    # When its owner cancels it
    record = world.lifecycle.cancel(CALLER, REMAINING_MS)

    # Then TikTok was asked with the caller's token, the record says cancelled, the archive slot is
    # emptied, one event; the schedule's next check finds nothing to do
    assert world.tiktok.checks.calls == [(REQUEST_ID, "access-caller")]
    assert world.tiktok.cancels.calls == [(REQUEST_ID, "access-caller")]
    assert record.status is DownloadStatus.CANCELLED
    assert world.record == record
    assert world.transfer.discarded == [REQUEST_ID]
    assert world.events.detail_types == ["Request Cancelled"]
    assert world.check(seq=3) == "stale"


def test_cancelling_a_ready_request_does_not_cancel_it_at_tiktok(world: World) -> None:
    world.given_record(DownloadStatus.COMPLETED)
    world.tiktok.checks.then(status("downloading"))

    record = world.lifecycle.cancel(CALLER, REMAINING_MS)

    assert world.tiktok.cancels.count == 0
    assert record.status is DownloadStatus.CANCELLED
    assert world.transfer.discarded == [REQUEST_ID]
    assert world.events.detail_types == ["Request Cancelled"]


def test_cancelling_a_cancelled_request_again_answers_the_same_and_publishes_nothing(world: World) -> None:
    # Given a request already cancelled
    before = world.given_record(DownloadStatus.CANCELLED)
    world.tiktok.checks.then(status("cancelled"))

    # When its owner cancels it again
    record = world.lifecycle.cancel(CALLER, REMAINING_MS)

    # Then the same record comes back; nothing at TikTok, no write, no event (the archive slot is
    # emptied once more in case an earlier delete failed)
    assert record == before
    assert world.record == before
    assert world.tiktok.cancels.count == 0
    assert world.events.sent == []
    assert "records.end" not in world.journal.calls
    assert world.transfer.discarded == [REQUEST_ID]


def test_a_stranger_cannot_cancel_a_request(world: World) -> None:
    # Given a waiting request, and a caller whose user TikTok says does not own it
    before = world.given_waiting(seq=3)
    world.tiktok.checks.then(tiktok_error("invalid_params", 400))

    # When the stranger cancels it; Then the answer is not_found and nothing changed
    with pytest.raises(DownloadNotFoundError):
        world.lifecycle.cancel(CALLER, REMAINING_MS)
    assert world.record == before
    assert world.tiktok.cancels.count == 0
    assert world.transfer.discarded == []
    assert world.events.sent == []
    assert world.journal.calls == ["tiktok.check_request"]


def test_cancelling_a_request_the_service_never_kept_is_not_found(world: World) -> None:
    world.tiktok.checks.then(status("pending"))

    with pytest.raises(DownloadNotFoundError):
        world.lifecycle.cancel(CALLER, REMAINING_MS)

    assert world.tiktok.cancels.count == 0
    assert world.events.sent == []


def test_a_cancel_racing_another_end_answers_that_end_and_publishes_nothing(world: World) -> None:
    # Given a pending request whose user disconnects the app while its owner's cancel is at TikTok
    world.given_waiting(seq=3)
    world.tiktok.checks.then(status("pending"))

    def meanwhile_revoked() -> None:
        world.records.end(REQUEST_ID, DownloadStatus.REVOKED)

    world.tiktok.cancels.then(None, meanwhile=meanwhile_revoked)

    # When the cancel finishes
    record = world.lifecycle.cancel(CALLER, REMAINING_MS)

    # Then the answer is the record as the other end left it, and no second event is published
    assert record.status is DownloadStatus.REVOKED
    assert world.record == record
    assert world.events.sent == []
    assert world.transfer.discarded == [REQUEST_ID]


# -- authorization.removed ------------------------------------------------------------------------
def test_a_revoked_user_s_record_ends_before_its_archive_is_deleted(world: World) -> None:
    # Given a user's completed download (a download finishing during the purge must find its claim gone)
    world.given_record(DownloadStatus.COMPLETED)

    # When TikTok says the user removed the app
    revoked = world.lifecycle.revoke_user(OPENID, reason=1)

    # Then the record ended before the archive was deleted, the grant is gone, one event with the count
    assert revoked == 1
    assert world.journal.first("records.end") < world.journal.first("transfer.discard")
    assert world.record.status is DownloadStatus.REVOKED
    assert world.transfer.discarded == [REQUEST_ID]
    assert world.grants.items == {}
    assert world.events.detail_types == ["Authorization Removed"]


def test_a_redelivered_revocation_deletes_again_but_publishes_nothing(world: World) -> None:
    # Given a purge whose archive delete failed after the record was revoked (the message comes back)
    world.given_record(DownloadStatus.COMPLETED)
    world.transfer.faults.arm("discard", StorageError("S3 DeleteObject failed: SlowDown"))
    with pytest.raises(StorageError):
        world.lifecycle.revoke_user(OPENID, reason=1)
    assert world.record.status is DownloadStatus.REVOKED

    # When the message is delivered again
    revoked = world.lifecycle.revoke_user(OPENID, reason=1)

    # Then the archive is deleted this time; nothing is counted or published twice
    assert revoked == 0
    assert world.transfer.discarded == [REQUEST_ID]
    assert world.events.detail_types == ["Authorization Removed"]
