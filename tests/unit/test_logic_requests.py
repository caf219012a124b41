"""A request's use cases with in-memory collaborators: add it, the schedule of status checks, TikTok's
webhook, cancel it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import timedelta

import pytest

from tests.conftest import BACKEND_CALLER, OTHER_CALLER
from tests.unit.fakes import (
    Clock,
    FakeAppCredentials,
    FakeCheckFloor,
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
from tiktok_archive.adapters.grant_items import Grant
from tiktok_archive.adapters.grants import request_grant_id, user_grant_id
from tiktok_archive.adapters.token_vault import ACCESS_TOKEN_PURPOSE, REFRESH_TOKEN_PURPOSE
from tiktok_archive.logic.add_request import AddRequest
from tiktok_archive.logic.cancel_request import CancelRequest
from tiktok_archive.logic.handover import TokenHandover
from tiktok_archive.logic.queries import RecordQueries
from tiktok_archive.logic.status_checks import READY_LEASE, ArchiveReady, StatusChecks
from tiktok_archive.logic.tokens import TokenService
from tiktok_archive.models.check_schedule import Schedule
from tiktok_archive.models.deadline import Deadline
from tiktok_archive.models.download_record import DownloadRecord, DownloadStatus, Preparation
from tiktok_archive.models.errors import (
    DownloadNotFoundError,
    OpenIdMismatchError,
    ReauthorizationRequiredError,
    RecordStoreError,
    ServiceError,
    TokenVaultError,
)
from tiktok_archive.models.messages import ArchiveReadyWork
from tiktok_archive.models.portability import HandedTokens, NewRequest, RequestStatus, TokenGrant
from tiktok_archive.models.tiktok_errors import TikTokApiError, UpstreamUnavailableError

REQUEST_ID = 7_234_567_890_123_456_789  # beyond 2^53: no double rounding on the way
SIBLING_ID = 7_234_567_890_123_450_000  # another request of the same user and caller
OPENID = "openid-1"
GRANT = user_grant_id(BACKEND_CALLER, OPENID)
SCHEDULE = Schedule(initial=60, longest=480, give_up_after=timedelta(days=7))
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
    add_request: AddRequest
    status_checks: StatusChecks
    archive_ready: ArchiveReady
    cancel_request: CancelRequest
    floor: FakeCheckFloor

    @property
    def record(self) -> DownloadRecord:
        return self.records.items[REQUEST_ID]

    def deadline(self) -> Deadline:
        return Deadline.after(60)

    def given_grant(
        self,
        grant_id: str = GRANT,
        *,
        access_left: timedelta = timedelta(hours=1),
        user: str | None = OPENID,
        caller: str = BACKEND_CALLER,
    ) -> Grant:
        now = self.clock.now()
        binding = {"grant_id": grant_id}
        grant = Grant(
            grant_id=grant_id,
            generation=f"generation-of-{grant_id}",
            sealed_access_token=self.vault.seal("access-stored", ACCESS_TOKEN_PURPOSE, binding),
            access_expires_at=now + access_left,
            sealed_refresh_token=self.vault.seal("refresh-stored", REFRESH_TOKEN_PURPOSE, binding),
            refresh_expires_at=now + timedelta(days=100),
            user_openid=user,
            caller=caller,
        )
        self.grants.items[grant_id] = grant
        return grant

    def given_waiting(
        self,
        request_id: int = REQUEST_ID,
        *,
        seq: int = 3,
        interval: int = 120,
        user: str | None = OPENID,
        grant_id: str = GRANT,
        caller: str = BACKEND_CALLER,
        give_up_in: timedelta = timedelta(days=6),
        due_in: int = 0,
    ) -> DownloadRecord:
        """A waiting request of ``caller``'s, checked every ``interval`` s, expecting check number ``seq``
        in ``due_in`` s (now, by default)."""
        if grant_id not in self.grants.items:
            self.given_grant(grant_id, user=user, caller=caller)
        now = self.clock.now()
        created = self.records.create_waiting(
            request_id,
            caller=caller,
            grant_id=grant_id,
            user_openid=user,
            preparation=Preparation(
                "json",
                ("all_data",),
                next_check_at=now + timedelta(seconds=due_in),
                give_up_at=now + give_up_in,
            ),
            poll_interval=interval,
        )
        assert isinstance(created, DownloadRecord)
        record = dataclasses.replace(created, poll_seq=seq)
        self.records.items[request_id] = record
        self.journal.calls.clear()
        return record

    def given_record(self, status: DownloadStatus, **waiting: object) -> DownloadRecord:
        record = dataclasses.replace(self.given_waiting(**waiting), status=status)  # type: ignore[arg-type]
        self.records.items[REQUEST_ID] = record
        return record

    def check(self, seq: int = 3) -> str:
        return self.status_checks.check(REQUEST_ID, seq, self.deadline()).action

    def add(self, new: NewRequest, caller: str = BACKEND_CALLER) -> DownloadRecord:
        return self.add_request.add(caller, new, self.deadline())

    def cancel(self, caller: str = BACKEND_CALLER) -> DownloadRecord:
        return self.cancel_request.cancel(caller, REQUEST_ID, self.deadline())

    def opened(self, grant_id: str, purpose: str = REFRESH_TOKEN_PURPOSE) -> str:
        grant = self.grants.items[grant_id]
        sealed = grant.sealed_refresh_token if purpose == REFRESH_TOKEN_PURPOSE else grant.sealed_access_token
        return self.vault.open(sealed or "", purpose, {"grant_id": grant_id})


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
    floor = FakeCheckFloor(journal)
    app = FakeAppCredentials()
    tokens = TokenService(grants, vault, tiktok, lambda: app)
    handover = TokenHandover(tokens, grants)
    return World(
        clock,
        journal,
        records,
        grants,
        vault,
        tiktok,
        events,
        queue,
        jobs,
        transfer,
        AddRequest(tiktok, records, tokens, handover, events, queue, SCHEDULE),
        StatusChecks(tiktok, records, tokens, events, queue, lambda: jobs, SCHEDULE, floor.seconds),
        ArchiveReady(records, events, lambda: jobs),
        CancelRequest(tiktok, records, RecordQueries(records, transfer), tokens, events, transfer),
        floor,
    )


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


def refreshed(open_id: str | None = OPENID, access: str = "access-fresh") -> TokenGrant:
    """TikTok's answer to the refresh of a handed-over refresh token: it names the user, and rotates."""
    return TokenGrant(access, 7200, "refresh-rotated", 180 * 86400, open_id, "portability.all.single")


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


@pytest.mark.parametrize(
    ("webhooks", "floor", "interval", "next_interval"),
    [
        (False, 200, 60, 200),  # the budget's floor raises the back-off's 120 s
        (False, 5000, 60, 480),  # …no further than the longest without webhooks: late, not sparser
        (False, 100, 400, 480),  # a floor below the back-off changes nothing
        (True, 5000, 60, 5000),  # with webhooks, as far as the budget needs: the message hops
        (True, 0, 4000, 7200),  # with webhooks the back-off doubles up to the backstop
    ],
)
def test_the_next_check_waits_at_least_the_budgets_floor(
    world: World, webhooks: bool, floor: int, interval: int, next_interval: int
) -> None:
    # Given the sweeper's floor, a schedule with or without webhooks (backstop 2 h), and a pending request
    schedule = dataclasses.replace(SCHEDULE, webhooks=webhooks, longest=7200 if webhooks else 480)
    checks = StatusChecks(
        world.tiktok, world.records, world.status_checks._tokens, world.events, world.queue,
        lambda: world.jobs, schedule, world.floor.seconds,
    )  # fmt: skip
    world.floor.floor = floor
    world.given_waiting(seq=3, interval=interval)
    world.tiktok.checks.then(status("pending"))

    # When its check runs
    assert checks.check(REQUEST_ID, 3, world.deadline()).action == "waiting"

    # Then the next check is due after the longer of the back-off and the floor, its message delayed
    # as far as SQS allows
    assert world.queue.checks == [(REQUEST_ID, 4, min(next_interval, 900))]
    record = world.record
    assert record.poll_interval == next_interval
    assert record.preparation is not None
    assert record.preparation.next_check_at == world.clock.now() + timedelta(seconds=next_interval)


@pytest.mark.parametrize(
    ("due_in", "give_up_in", "hop"),
    [
        (3 * 3600, 6 * 86400, 900),  # hours ahead: SQS's longest delay, then again
        (400, 6 * 86400, 400),  # the rest of the way
        (3 * 3600, 600, 600),  # never past the give-up time, when the check fails the request
    ],
)
def test_a_check_that_comes_before_its_time_sends_itself_on_without_calling_tiktok(
    world: World, due_in: int, give_up_in: int, hop: int
) -> None:
    # Given a waiting request whose next check the record expects later than its message came
    world.given_waiting(seq=3, interval=7200, due_in=due_in, give_up_in=timedelta(seconds=give_up_in))
    before = dict(world.records.items)

    # When the message arrives
    action = world.check(seq=3)

    # Then the same check is sent again for the time left (at most SQS's 900 s), before anything
    # else: no TikTok, no token, no write, no event
    assert action == "early"
    assert world.queue.checks == [(REQUEST_ID, 3, hop)]
    assert world.journal.calls == ["records.get", "queue.schedule_check"]
    assert world.tiktok.checks.calls == []
    assert world.records.items == before
    assert world.events.sent == []


def test_a_check_a_few_seconds_early_is_on_time(world: World) -> None:
    # Given a check whose record expects it in 5 s (its record was written just after its message was sent)
    world.given_waiting(seq=3, interval=120, due_in=5)
    world.tiktok.checks.then(status("pending"))

    # When it arrives, it checks at TikTok
    assert world.check(seq=3) == "waiting"
    assert world.tiktok.checks.calls == [(REQUEST_ID, "access-stored")]


def test_the_pace_holds_only_a_check_that_calls_tiktok(world: World) -> None:
    # Given one early check and one due
    world.given_waiting(seq=3, due_in=3600)
    world.given_waiting(SIBLING_ID, seq=1)
    world.tiktok.checks.then(RequestStatus(SIBLING_ID, "pending", apply_time=APPLY_TIME))
    paced: list[int] = []

    # When both run
    world.status_checks.check(REQUEST_ID, 3, world.deadline(), pace=lambda: paced.append(REQUEST_ID))
    world.status_checks.check(SIBLING_ID, 1, world.deadline(), pace=lambda: paced.append(SIBLING_ID))

    # Then only the one that called TikTok waited for the pace
    assert paced == [SIBLING_ID]


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
    # … one Archive Ready event naming the caller, and no further check; the grant stays for the job
    assert world.events.detail_types == ["Archive Ready"]
    assert world.events.sent[0][1]["caller"] == BACKEND_CALLER
    assert world.queue.checks == []
    assert GRANT in world.grants.items


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
def test_a_request_ended_at_tiktok_ends_its_record_its_checks_and_its_grant(
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
    # no other request needs the user's tokens: the service holds them no longer
    assert world.grants.items == {}


def test_a_request_that_ends_keeps_the_grant_another_waiting_request_of_the_user_needs(world: World) -> None:
    # Given two waiting requests of the same user and caller, sharing the user's grant
    world.given_waiting(SIBLING_ID, seq=0)
    world.given_waiting(seq=3)
    world.tiktok.checks.then(status("expired"))

    # When one of them ends at TikTok
    world.check(seq=3)

    # Then the other one still has the user's tokens to be checked with
    assert world.record.status is DownloadStatus.EXPIRED
    assert GRANT in world.grants.items


def test_a_request_of_its_own_grant_releases_it_when_it_ends(world: World) -> None:
    # Given a request added without a refresh token: its tokens are kept for it alone
    own = request_grant_id(REQUEST_ID)
    world.given_waiting(seq=3, user=None, grant_id=own)
    world.tiktok.checks.then(status("cancelled"))

    world.check(seq=3)

    assert own not in world.grants.items


# -- failures of a check --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("retry_after", "delay"),
    [
        ("300", 300),  # longer than the doubled interval (240)
        ("700", 700),  # longer than the schedule's longest (480)
        ("3600", 900),  # longer than SQS allows: its longest delay, and the message hops on from there
    ],
)
def test_a_rate_limited_check_comes_back_after_at_least_retry_after(
    world: World, retry_after: str, delay: int
) -> None:
    # Given a waiting request checked every 120 s, and TikTok answering 429 with a Retry-After
    world.given_waiting(seq=3, interval=120)
    world.tiktok.checks.then(tiktok_error("rate_limit_exceeded", 429, retry_after=retry_after))

    # When its check runs
    outcome = world.status_checks.check(REQUEST_ID, 3, world.deadline())

    # Then the next check is due after Retry-After (its message delayed at most SQS's 900 s), the
    # request still waits, and the outcome tells the handler to pause the rest of its batch
    assert (outcome.action, outcome.rate_limited_for) == ("rate_limited", int(retry_after))
    assert world.queue.checks == [(REQUEST_ID, 4, delay)]
    record = world.record
    interval = int(retry_after)
    assert (record.status, record.poll_seq, record.poll_interval) == (DownloadStatus.WAITING, 4, interval)
    assert record.preparation is not None
    assert record.preparation.next_check_at == world.clock.now() + timedelta(seconds=interval)
    assert world.events.sent == []
    assert GRANT in world.grants.items


def test_a_rate_limit_without_retry_after_slows_the_schedule(world: World) -> None:
    world.given_waiting(seq=3, interval=120)
    world.tiktok.checks.then(tiktok_error("rate_limit_exceeded", 429))

    outcome = world.status_checks.check(REQUEST_ID, 3, world.deadline())

    assert (outcome.action, outcome.rate_limited_for) == ("rate_limited", None)
    assert world.queue.checks == [(REQUEST_ID, 4, 240)]


@pytest.mark.parametrize(
    "error",
    [UpstreamUnavailableError("TikTok could not be reached"), TokenVaultError("KMS Decrypt failed")],
    ids=["network", "kms"],
)
def test_a_transient_failure_checks_again_at_the_same_interval(world: World, error: ServiceError) -> None:
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
    assert record.error.code == "not_found"
    if answer is not None:
        assert record.error.log_id == "202603011200LOGID"
    assert world.events.detail_types == ["Download Failed"]
    assert world.queue.checks == []
    assert world.grants.items == {}


def test_a_request_past_its_give_up_time_fails_without_asking_tiktok(world: World) -> None:
    # Given a waiting request whose give-up time has passed
    world.given_waiting(seq=3, give_up_in=timedelta(days=7))
    world.clock.advance(timedelta(days=7).total_seconds())

    # When its check runs
    action = world.check(seq=3)

    # Then it fails preparation_timed_out; neither TikTok nor the user's tokens were used
    assert action == "failed"
    assert world.record.error is not None
    assert world.record.error.code == "preparation_timed_out"
    assert world.tiktok.checks.count == 0
    assert "vault.open" not in world.journal.calls
    assert world.events.detail_types == ["Download Failed"]
    assert world.queue.checks == []


def test_a_refresh_tiktok_refuses_fails_the_request_and_erases_the_grant(world: World) -> None:
    # Given a waiting request whose user's access token expired and whose refresh TikTok refuses
    world.given_grant(access_left=timedelta(minutes=1))
    world.given_waiting(seq=3)
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
WITH_REFRESH = NewRequest(HandedTokens("access-handed", "refresh-handed", OPENID))
ACCESS_ONLY = NewRequest(HandedTokens("access-handed"))


def test_an_added_request_is_the_callers_under_the_user_tiktok_named(world: World) -> None:
    # Given a caller handing over a user's tokens, TikTok's refresh naming that user, and TikTok
    # accepting the data request
    world.tiktok.refreshes.then(refreshed())
    world.tiktok.adds.then(REQUEST_ID)

    # When the caller adds it
    record = world.add(WITH_REFRESH)

    # Then the refresh token was exchanged first and the Add made with the fresh access token; the
    # record is the caller's, of the user TikTok named, in their grant; it waits for check 0
    assert world.tiktok.refreshes.calls == [("app-secret", "refresh-handed")]
    assert world.tiktok.adds.calls == [("access-fresh", "json", ("all_data",))]
    assert (record.status, record.caller, record.user_openid, record.grant_id) == (
        DownloadStatus.WAITING,
        BACKEND_CALLER,
        OPENID,
        GRANT,
    )
    assert (record.poll_seq, world.record) == (0, record)
    assert world.queue.checks == [(REQUEST_ID, 0, SCHEDULE.initial)]
    assert world.journal.first("records.create_waiting") < world.journal.first("queue.schedule_check")
    # … the service holds the user's only live lineage (the rotated refresh token), sealed
    assert world.opened(GRANT) == "refresh-rotated"
    assert world.grants.items[GRANT].caller == BACKEND_CALLER
    # … and one Request Added event naming the caller and the user
    assert world.events.detail_types == ["Request Added"]
    detail = world.events.sent[0][1]
    assert (detail["caller"], detail["open_id"]) == (BACKEND_CALLER, OPENID)


def test_a_request_added_without_a_refresh_token_keeps_the_access_token_for_itself_alone(
    world: World,
) -> None:
    world.tiktok.adds.then(REQUEST_ID)

    record = world.add(ACCESS_ONLY)

    # TikTok was asked nothing but the Add; the user is unknown; the token is in the request's own grant
    assert world.tiktok.refreshes.count == 0
    assert world.tiktok.adds.calls == [("access-handed", "json", ("all_data",))]
    own = request_grant_id(REQUEST_ID)
    assert (record.caller, record.user_openid, record.grant_id) == (BACKEND_CALLER, None, own)
    assert world.opened(own, ACCESS_TOKEN_PURPOSE) == "access-handed"
    assert world.grants.items[own].sealed_refresh_token is None
    assert "open_id" not in world.events.sent[0][1]


def test_tokens_tiktok_says_are_another_users_add_nothing(world: World) -> None:
    # Given a caller naming openid-1 for tokens TikTok says are openid-2's
    world.tiktok.refreshes.then(refreshed(open_id="openid-2"))

    with pytest.raises(OpenIdMismatchError):
        world.add(WITH_REFRESH)

    # Then nothing was added at TikTok, and nothing kept under either user
    assert world.tiktok.adds.count == 0
    assert (world.records.items, world.grants.items, world.events.sent) == ({}, {}, [])


def test_a_request_tiktok_refuses_for_good_releases_the_grant_made_for_it(world: World) -> None:
    # Given tokens handed over (the user's grant is made) and TikTok refusing the Add for good
    world.tiktok.refreshes.then(refreshed())
    world.tiktok.adds.then(tiktok_error("scope_permission_missed", 400))

    with pytest.raises(TikTokApiError, match="scope_permission_missed"):
        world.add(WITH_REFRESH)

    # Then no request, no grant: the service holds nothing of the user's
    assert (world.records.items, world.grants.items) == ({}, {})
    assert (world.queue.checks, world.events.sent) == ([], [])


def test_a_request_tiktok_refuses_for_good_keeps_the_grant_another_request_needs(world: World) -> None:
    # Given the user's grant already serving a waiting request of the same caller
    world.given_waiting(SIBLING_ID, seq=0)
    world.tiktok.refreshes.then(refreshed())
    world.tiktok.adds.then(tiktok_error("scope_permission_missed", 400))

    with pytest.raises(TikTokApiError):
        world.add(WITH_REFRESH)

    # Then the grant stays (with the newest lineage) for the request that needs it
    assert world.opened(GRANT) == "refresh-rotated"
    assert list(world.records.items) == [SIBLING_ID]


def test_a_transient_add_failure_keeps_the_grant_and_the_retry_joins_it_without_tiktok(world: World) -> None:
    # Given tokens handed over, and TikTok failing the Add for now
    world.tiktok.refreshes.then(refreshed())
    world.tiktok.adds.then(tiktok_error("internal_error", 500)).then(REQUEST_ID)
    with pytest.raises(TikTokApiError) as raised:
        world.add(WITH_REFRESH)
    assert raised.value.is_transient
    assert world.opened(GRANT) == "refresh-rotated"

    # When the caller retries with the same tokens (its refresh token is rotated: TikTok would refuse it)
    record = world.add(WITH_REFRESH)

    # Then the retry joined the kept grant without a second refresh, and the request was added
    assert world.tiktok.refreshes.count == 1
    assert world.tiktok.adds.calls[-1][0] == "access-fresh"
    assert (record.grant_id, record.user_openid) == (GRANT, OPENID)
    assert world.opened(GRANT) == "refresh-rotated"


def test_a_refresh_token_tiktok_refuses_adds_nothing(world: World) -> None:
    world.tiktok.refreshes.then(ReauthorizationRequiredError("TikTok refused the token refresh"))

    with pytest.raises(ReauthorizationRequiredError):
        world.add(WITH_REFRESH)

    assert world.tiktok.adds.count == 0
    assert (world.records.items, world.grants.items) == ({}, {})


def test_a_request_tiktok_accepted_but_not_recorded_names_its_request_id(world: World) -> None:
    # Given TikTok accepting the request, and DynamoDB failing to record it
    world.tiktok.adds.then(REQUEST_ID)
    world.records.faults.arm("create_waiting", RecordStoreError("DynamoDB UpdateItem failed"))

    # When a caller adds it
    with pytest.raises(RecordStoreError) as raised:
        world.add(ACCESS_ONLY)

    # Then the error names the request_id (it can still be downloaded), and nothing was scheduled
    assert str(REQUEST_ID) in raised.value.message
    assert "POST /downloads" in raised.value.message
    assert raised.value.is_transient
    assert (world.records.items, world.queue.checks, world.events.sent) == ({}, [], [])


def test_a_request_whose_token_kms_cannot_seal_names_its_request_id(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given TikTok accepting a request handed over without a refresh token, and KMS failing every time
    world.tiktok.adds.then(REQUEST_ID)

    def kms_down(token: str, purpose: str, binding: dict[str, str]) -> str:
        raise TokenVaultError("KMS Encrypt failed")

    monkeypatch.setattr(world.vault, "seal", kms_down)

    with pytest.raises(TokenVaultError) as raised:
        world.add(ACCESS_ONLY)

    assert str(REQUEST_ID) in raised.value.message
    assert (world.records.items, world.queue.checks, world.events.sent) == ({}, [], [])


def test_a_request_id_that_already_has_a_record_is_not_kept_twice(world: World) -> None:
    before = world.given_waiting()
    world.tiktok.refreshes.then(refreshed())
    world.tiktok.adds.then(REQUEST_ID)

    with pytest.raises(RecordStoreError, match=str(REQUEST_ID)):
        world.add(WITH_REFRESH)

    assert world.record == before
    assert (world.queue.checks, world.events.sent) == ([], [])


def test_a_first_check_that_could_not_be_sent_still_answers_the_waiting_request(world: World) -> None:
    # Given TikTok accepting the request and SQS failing (the sweeper re-drives it later)
    world.tiktok.adds.then(REQUEST_ID)
    world.queue.faults.arm("schedule_check", ServiceError("SQS SendMessage failed"))

    record = world.add(ACCESS_ONLY)

    assert record.status is DownloadStatus.WAITING
    assert world.events.detail_types == ["Request Added"]


# -- TikTok's webhook: the archive is ready -------------------------------------------------------
def test_a_ready_webhook_queues_the_waiting_requests_download_and_stops_its_checks(world: World) -> None:
    world.given_waiting(seq=3)

    outcome = world.archive_ready.queue(ArchiveReadyWork(REQUEST_ID, OPENID, "delivery-1"))

    assert outcome == "queued"
    assert world.jobs.for_grant == [REQUEST_ID]
    assert world.journal.first("jobs.send_for_grant") < world.journal.first("records.queue_now")
    assert world.record.status is DownloadStatus.QUEUED
    assert world.events.detail_types == ["Archive Ready"]
    assert world.tiktok.checks.count == 0
    assert world.check(seq=3) == "stale"  # the check that was on its way finds nothing to do


def test_a_ready_webhook_naming_the_user_records_them_for_their_purge(world: World) -> None:
    # Given a request added without a refresh token: its user is unknown
    world.given_waiting(seq=3, user=None, grant_id=request_grant_id(REQUEST_ID))

    # When TikTok's webhook says whose archive is ready
    world.archive_ready.queue(ArchiveReadyWork(REQUEST_ID, OPENID))

    # Then the record carries the user TikTok named: the user's purge and the caller's list find it
    assert world.record.user_openid == OPENID
    assert [r.request_id for r in world.records.of_user(OPENID)] == [REQUEST_ID]
    assert [r.request_id for r in world.records.of_caller_user(BACKEND_CALLER, OPENID)] == [REQUEST_ID]


def test_a_ready_webhook_never_changes_the_user_a_record_already_has(world: World) -> None:
    world.given_waiting(seq=3)

    world.archive_ready.queue(ArchiveReadyWork(REQUEST_ID, "openid-2"))

    assert world.record.user_openid == OPENID


@pytest.mark.parametrize("state", [DownloadStatus.QUEUED, DownloadStatus.COMPLETED, DownloadStatus.CANCELLED])
def test_a_ready_webhook_for_a_request_past_waiting_does_nothing(world: World, state: DownloadStatus) -> None:
    before = world.given_record(state)

    assert world.archive_ready.queue(ArchiveReadyWork(REQUEST_ID, OPENID)) == "nothing"

    assert world.record == before
    assert (world.jobs.for_grant, world.events.sent) == ([], [])


def test_a_ready_webhook_for_an_unknown_request_is_acknowledged(world: World) -> None:
    assert world.archive_ready.queue(ArchiveReadyWork(REQUEST_ID, OPENID)) == "unknown"
    assert (world.records.items, world.jobs.for_grant, world.events.sent) == ({}, [], [])


# -- DELETE /downloads/{id} -----------------------------------------------------------------------
@pytest.mark.parametrize("state", [DownloadStatus.WAITING, DownloadStatus.QUEUED, DownloadStatus.FAILED])
def test_cancelling_a_pending_request_cancels_it_at_tiktok_with_the_grants_token_and_here(
    world: World, state: DownloadStatus
) -> None:
    # Given the caller's request not yet downloaded
    world.given_record(state, seq=3)
    world.tiktok.cancels.then(None)

    # When the caller cancels it (it hands over no token: the service holds the user's)
    record = world.cancel()

    # Then TikTok was asked to cancel with the grant's token — and asked nothing else; the record says
    # cancelled, the archive slot is emptied, one event; the grant no request needs is released
    assert world.tiktok.cancels.calls == [(REQUEST_ID, "access-stored")]
    assert world.tiktok.checks.count == 0
    assert record.status is DownloadStatus.CANCELLED
    assert world.record == record
    assert world.transfer.discarded == [REQUEST_ID]
    assert world.events.detail_types == ["Request Cancelled"]
    assert world.grants.items == {}
    assert world.check(seq=3) == "stale"


def test_cancelling_keeps_the_grant_another_request_of_the_user_needs(world: World) -> None:
    world.given_waiting(SIBLING_ID, seq=0)
    world.given_waiting(seq=3)
    world.tiktok.cancels.then(None)

    world.cancel()

    assert world.record.status is DownloadStatus.CANCELLED
    assert GRANT in world.grants.items


def test_cancelling_a_stored_archive_deletes_it_without_asking_tiktok(world: World) -> None:
    world.given_record(DownloadStatus.COMPLETED)

    record = world.cancel()

    assert world.tiktok.cancels.count == 0
    assert record.status is DownloadStatus.CANCELLED
    assert world.transfer.discarded == [REQUEST_ID]
    assert world.events.detail_types == ["Request Cancelled"]


def test_cancelling_a_cancelled_request_again_answers_the_same_and_publishes_nothing(world: World) -> None:
    # Given a request already cancelled
    before = world.given_record(DownloadStatus.CANCELLED)

    # When its owner cancels it again
    record = world.cancel()

    # Then the same record comes back; nothing at TikTok, no write, no event (the archive slot is
    # emptied once more in case an earlier delete failed)
    assert record == before
    assert world.record == before
    assert world.tiktok.cancels.count == 0
    assert world.events.sent == []
    assert "records.end" not in world.journal.calls
    assert world.transfer.discarded == [REQUEST_ID]


@pytest.mark.parametrize("state", [DownloadStatus.WAITING, DownloadStatus.COMPLETED])
def test_another_callers_cancel_changes_nothing(world: World, state: DownloadStatus) -> None:
    # Given the backend's request
    before = world.given_record(state)
    grants = dict(world.grants.items)

    # When another caller cancels it; Then the same 404 as for an unknown request, and nothing changed:
    # no TikTok call, no write, no delete, no event
    with pytest.raises(DownloadNotFoundError) as raised:
        world.cancel(OTHER_CALLER)
    assert raised.value.status == 404
    assert world.record == before
    assert world.grants.items == grants
    assert world.journal.calls == ["records.get"]
    assert (world.transfer.discarded, world.events.sent) == ([], [])


def test_cancelling_a_request_the_service_never_kept_is_not_found(world: World) -> None:
    with pytest.raises(DownloadNotFoundError):
        world.cancel()

    assert world.tiktok.cancels.count == 0
    assert world.events.sent == []


@pytest.mark.parametrize(
    "tiktok_says",
    [
        tiktok_error("invalid_params", 400),  # TikTok had already ended the request
        ReauthorizationRequiredError("TikTok refused the token refresh: invalid_grant"),
    ],
    ids=["already-ended-at-tiktok", "tokens-gone"],
)
def test_a_cancel_tiktok_cannot_make_still_cancels_here(world: World, tiktok_says: ServiceError) -> None:
    world.given_waiting(seq=3)
    world.tiktok.cancels.then(tiktok_says)

    record = world.cancel()

    assert record.status is DownloadStatus.CANCELLED
    assert world.events.detail_types == ["Request Cancelled"]
    assert world.transfer.discarded == [REQUEST_ID]


def test_a_cancel_of_a_request_whose_grant_is_gone_cancels_here(world: World) -> None:
    world.given_waiting(seq=3)
    del world.grants.items[GRANT]

    record = world.cancel()

    assert record.status is DownloadStatus.CANCELLED
    assert world.tiktok.cancels.count == 0


@pytest.mark.parametrize(
    "failure",
    [tiktok_error("rate_limit_exceeded", 429, retry_after="30"), tiktok_error("internal_error", 500)],
    ids=["429", "5xx"],
)
def test_a_cancel_tiktok_rate_limits_changes_nothing(world: World, failure: TikTokApiError) -> None:
    # Given a waiting request, and TikTok refusing the cancel for now
    before = world.given_waiting(seq=3)
    world.tiktok.cancels.then(failure)

    # When the caller cancels it; Then TikTok's answer comes back and nothing changed here: ask again
    with pytest.raises(TikTokApiError) as raised:
        world.cancel()
    assert raised.value.is_transient
    assert world.record == before
    assert GRANT in world.grants.items
    assert (world.transfer.discarded, world.events.sent) == ([], [])


def test_a_cancel_racing_another_end_answers_that_end_and_publishes_nothing(world: World) -> None:
    # Given a pending request whose user disconnects the app while its owner's cancel is at TikTok
    world.given_waiting(seq=3)

    def meanwhile_revoked() -> None:
        world.records.end(REQUEST_ID, DownloadStatus.REVOKED)

    world.tiktok.cancels.then(None, meanwhile=meanwhile_revoked)

    # When the cancel finishes
    record = world.cancel()

    # Then the answer is the record as the other end left it, and no second event is published
    assert record.status is DownloadStatus.REVOKED
    assert world.record == record
    assert world.events.sent == []
    assert world.transfer.discarded == [REQUEST_ID]
