"""The download use cases — a caller's (now or queued) and the worker's jobs — over one download under its
claim, and its progress reporter, with in-memory collaborators: ownership, claims, outcomes, jobs."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import pytest

from tests.conftest import BACKEND_CALLER, OTHER_CALLER
from tests.unit.fakes import (
    Clock,
    FakeAppCredentials,
    FakeDownloadJobs,
    FakeDownloadRecords,
    FakeEvents,
    FakeGrants,
    FakeTikTok,
    FakeTransfer,
    FakeVault,
    Journal,
    freeze_time,
)
from tiktok_archive.adapters.download_jobs import job_binding
from tiktok_archive.adapters.grant_items import Grant
from tiktok_archive.adapters.grants import user_grant_id
from tiktok_archive.adapters.record_writes import Claimed
from tiktok_archive.adapters.s3_archive_store import PartListener
from tiktok_archive.adapters.tiktok.budget import budget_exhausted
from tiktok_archive.adapters.token_vault import ACCESS_TOKEN_PURPOSE, REFRESH_TOKEN_PURPOSE
from tiktok_archive.logic.caller_downloads import CallerDownloads
from tiktok_archive.logic.claimed_download import ClaimedDownload
from tiktok_archive.logic.download_progress import PROGRESS_EVERY_SECONDS, ProgressReporter
from tiktok_archive.logic.handover import TokenHandover
from tiktok_archive.logic.queries import RecordQueries
from tiktok_archive.logic.queued_downloads import QueuedDownloads
from tiktok_archive.logic.tokens import TokenService
from tiktok_archive.models.deadline import Deadline
from tiktok_archive.models.download import DownloadRequest
from tiktok_archive.models.download_record import Answer, DownloadRecord, DownloadStatus, Owner, Preparation
from tiktok_archive.models.errors import (
    ArchiveNotReadyError,
    ArchiveTooLargeError,
    DeadlineExceededError,
    DownloadInProgressError,
    DownloadNotFoundError,
    ReauthorizationRequiredError,
    RecordStoreError,
    RequestCancelledError,
    RequestExpiredError,
    ServiceError,
)
from tiktok_archive.models.messages import DownloadJob
from tiktok_archive.models.portability import HandedTokens, RequestStatus, TokenGrant
from tiktok_archive.models.tiktok_errors import (
    TikTokApiError,
    TikTokBudgetExhaustedError,
    UpstreamStreamBrokenError,
    UpstreamUnavailableError,
)
from tiktok_archive.models.tiktok_quota import Endpoint

REQUEST_ID = 7_234_567_890_123_456_789
SIBLING_ID = 7_234_567_890_123_450_000
OPENID = "openid-1"
GRANT = user_grant_id(BACKEND_CALLER, OPENID)
MIB = 1024 * 1024
TOKEN = HandedTokens("access-caller")
WITH_REFRESH = HandedTokens("access-caller", "refresh-handed", OPENID)
LINK = f"https://archive-bucket.example/archives/{REQUEST_ID}.zip"


@dataclass
class World:
    clock: Clock
    journal: Journal
    records: FakeDownloadRecords
    grants: FakeGrants
    vault: FakeVault
    tiktok: FakeTikTok
    events: FakeEvents
    jobs: FakeDownloadJobs
    transfer: FakeTransfer
    caller_downloads: CallerDownloads
    queued_downloads: QueuedDownloads

    @property
    def record(self) -> DownloadRecord:
        return self.records.items[REQUEST_ID]

    def deadline(self) -> Deadline:
        return Deadline.after(60)

    def download(self, handed: HandedTokens = TOKEN, caller: str = BACKEND_CALLER) -> Answer:
        return self.caller_downloads.download(caller, REQUEST_ID, handed, self.deadline())

    def queue(self, handed: HandedTokens = TOKEN, caller: str = BACKEND_CALLER) -> Answer:
        return self.caller_downloads.queue(caller, REQUEST_ID, handed, self.deadline())

    def job(self, job: DownloadJob) -> Answer:
        return self.queued_downloads.run(job, self.deadline())

    def claim(self) -> Claimed:
        claimed = self.records.claim(
            REQUEST_ID, "archive-bucket", "archives/x.zip", timedelta(seconds=65), Owner(BACKEND_CALLER)
        )
        assert isinstance(claimed, Claimed)
        return claimed

    def meanwhile_the_owner_cancels(self) -> None:
        self.records.end(REQUEST_ID, DownloadStatus.CANCELLED)

    def given_grant(self, *, access_left: timedelta = timedelta(hours=1)) -> None:
        now = self.clock.now()
        binding = {"grant_id": GRANT}
        self.grants.items[GRANT] = Grant(
            grant_id=GRANT,
            generation="generation-1",
            sealed_access_token=self.vault.seal("access-stored", ACCESS_TOKEN_PURPOSE, binding),
            access_expires_at=now + access_left,
            sealed_refresh_token=self.vault.seal("refresh-stored", REFRESH_TOKEN_PURPOSE, binding),
            refresh_expires_at=now + timedelta(days=100),
            user_openid=OPENID,
            caller=BACKEND_CALLER,
        )

    def given_requested(
        self,
        request_id: int = REQUEST_ID,
        *,
        status: DownloadStatus = DownloadStatus.QUEUED,
        access_left: timedelta = timedelta(hours=1),
    ) -> DownloadRecord:
        """A request the backend added with POST /requests (the user's grant), now in ``status``."""
        now = self.clock.now()
        created = self.records.create_waiting(
            request_id,
            caller=BACKEND_CALLER,
            grant_id=GRANT,
            user_openid=OPENID,
            preparation=Preparation(
                "json",
                ("all_data",),
                next_check_at=now + timedelta(minutes=1),
                give_up_at=now + timedelta(days=7),
            ),
            poll_interval=60,
        )
        assert isinstance(created, DownloadRecord)
        if status is DownloadStatus.QUEUED:
            self.records.mark_ready(
                request_id, 0, apply_time=None, collect_time=None, lease=timedelta(minutes=15)
            )
        elif status is not DownloadStatus.WAITING:
            self.records.items[request_id] = dataclasses.replace(created, status=status)
        if GRANT not in self.grants.items:
            self.given_grant(access_left=access_left)
        self.journal.calls.clear()
        return self.records.items[request_id]


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
    jobs = FakeDownloadJobs(journal)
    transfer = FakeTransfer(journal, size=12 * MIB)
    app = FakeAppCredentials()
    tokens = TokenService(grants, vault, tiktok, lambda: app)
    handover = TokenHandover(tokens, grants)
    download = ClaimedDownload(transfer, records, tiktok, events, lambda: tokens)
    return World(
        clock,
        journal,
        records,
        grants,
        vault,
        tiktok,
        events,
        jobs,
        transfer,
        CallerDownloads(download, records, lambda: jobs, lambda: tokens, lambda: handover),
        QueuedDownloads(download, records, events, lambda: vault, lambda: tokens),
    )


def ready() -> RequestStatus:
    return RequestStatus(REQUEST_ID, "downloading")


def refreshed(open_id: str = OPENID) -> TokenGrant:
    return TokenGrant("access-fresh", 7200, "refresh-rotated", 180 * 86400, open_id, "portability.all.single")


def sealed_job(world: World, token: str = "access-caller") -> DownloadJob:
    """The job ``DownloadJobs.send`` puts on the queue: the token sealed for this request."""
    sealed = world.vault.seal(token, ACCESS_TOKEN_PURPOSE, job_binding(REQUEST_ID))
    return DownloadJob(REQUEST_ID, encrypted_access_token=sealed)


# -- progress -------------------------------------------------------------------------------------
def test_progress_is_reported_at_most_every_progress_every_seconds(world: World) -> None:
    # Given a running download's reporter
    reporter = ProgressReporter(world.records, world.claim())

    # When parts are done at these moments (seconds after the start)
    at = 0.0
    for moment, parts in ((1.0, 1), (2.9, 2), (3.0, 3), (4.0, 4), (5.9, 5), (6.0, 6), (20.0, 7)):
        world.clock.advance(moment - at)
        at = moment
        reporter.part_done(parts, parts * 8 * MIB)

    # Then only those at least PROGRESS_EVERY_SECONDS after the last report were recorded
    assert PROGRESS_EVERY_SECONDS == 3.0
    assert [p.parts_uploaded for p in world.records.progress_reports] == [3, 6, 7]
    progress = world.record.progress
    assert progress is not None
    assert (progress.bytes_received, progress.mib_per_second) == (56 * MIB, round(56 / 20, 1))


@pytest.mark.parametrize("ended", [DownloadStatus.CANCELLED, DownloadStatus.REVOKED])
def test_a_progress_report_that_finds_the_request_ended_stops_the_download(
    world: World, ended: DownloadStatus
) -> None:
    # Given a running download whose request is cancelled (or its user revoked) meanwhile
    reporter = ProgressReporter(world.records, world.claim())
    world.records.end(REQUEST_ID, ended)

    # When the next report is due; Then it raises into the transfer, which aborts the upload
    world.clock.advance(PROGRESS_EVERY_SECONDS)
    with pytest.raises(RequestCancelledError):
        reporter.part_done(1, 8 * MIB)
    assert world.record.status is ended


def test_a_progress_report_that_finds_the_download_taken_over_stops_it(world: World) -> None:
    # Given a download whose claim lapsed and another invocation took it over
    reporter = ProgressReporter(world.records, world.claim())
    world.clock.advance(70)
    world.claim()

    # When this invocation's next report is due; Then it stops
    with pytest.raises(DownloadInProgressError):
        reporter.part_done(1, 8 * MIB)


def test_a_progress_report_dynamodb_refuses_is_logged_and_the_download_goes_on(world: World) -> None:
    # Given a running download whose progress write fails once (DynamoDB briefly unavailable)
    throttled = RecordStoreError("DynamoDB UpdateItem failed: ThrottlingException")
    world.records.faults.arm("report_progress", throttled)
    reporter = ProgressReporter(world.records, world.claim())
    world.clock.advance(PROGRESS_EVERY_SECONDS + 1)

    # When the store reports a part, then another later
    reporter.part_done(1, 5 * MIB)
    world.clock.advance(PROGRESS_EVERY_SECONDS + 1)
    reporter.part_done(2, 10 * MIB)

    # Then nothing was raised into the transfer, and the second report was recorded
    assert world.record.progress is not None
    assert world.record.progress.parts_uploaded == 2


# -- the outcome of a download --------------------------------------------------------------------
def test_a_completed_download_is_the_callers_recorded_published_and_linked(world: World) -> None:
    world.tiktok.checks.then(ready())

    answer = world.download()

    # TikTok confirmed the owner with the caller's token; the record is the caller's (user unknown)
    assert world.tiktok.checks.calls == [(REQUEST_ID, "access-caller")]
    assert answer.record.status is DownloadStatus.COMPLETED
    assert (answer.record.caller, answer.record.user_openid, answer.record.grant_id) == (
        BACKEND_CALLER,
        None,
        None,
    )
    assert answer.record.size_bytes == 12 * MIB
    assert answer.url == LINK
    assert world.events.detail_types == ["Download Completed"]
    assert world.events.sent[0][1]["caller"] == BACKEND_CALLER
    assert world.transfer.runs == [DownloadRequest(REQUEST_ID, "access-caller")]
    assert world.transfer.discarded == []
    assert world.grants.items == {}


def test_a_download_with_a_refresh_token_records_the_user_tiktok_named_and_lets_the_grant_go(
    world: World,
) -> None:
    # Given a caller handing over the user's refresh token too
    world.tiktok.refreshes.then(refreshed())
    world.tiktok.checks.then(ready())

    # When it downloads
    answer = world.download(WITH_REFRESH)

    # Then the download used the fresh token, the record names the user (their purge finds it) and,
    # once completed, the service keeps no tokens no request needs
    assert world.transfer.runs == [DownloadRequest(REQUEST_ID, "access-fresh")]
    assert (answer.record.caller, answer.record.user_openid) == (BACKEND_CALLER, OPENID)
    assert [r.request_id for r in world.records.of_user(OPENID)] == [REQUEST_ID]
    assert world.grants.items == {}


def test_a_transfer_stopped_by_a_cancellation_leaves_the_record_cancelled_and_publishes_nothing(
    world: World,
) -> None:
    # Given a download during which the owner cancels and the next progress report is due
    world.tiktok.checks.then(ready())

    def cancelled_mid_stream(request: DownloadRequest, on_part: PartListener | None) -> None:
        assert on_part is not None
        world.meanwhile_the_owner_cancels()
        world.clock.advance(PROGRESS_EVERY_SECONDS)
        on_part(1, 8 * MIB)

    world.transfer.during = cancelled_mid_stream

    # When the download runs; Then the report's error stops it, and the record stays cancelled
    with pytest.raises(RequestCancelledError):
        world.download()
    assert world.record.status is DownloadStatus.CANCELLED
    assert world.events.sent == []


def test_a_transfer_out_of_time_is_its_own_failure_when_the_stop_check_has_no_time_either(
    world: World,
) -> None:
    # Given a download whose stream runs out of the invocation's time, and no time left to ask the store
    # whether the request ended meanwhile (its read is refused, as the AWS bound refuses a late try)
    world.tiktok.checks.then(ready())

    def out_of_time(request: DownloadRequest, on_part: PartListener | None) -> None:
        world.records.faults.arm("get", DeadlineExceededError("DynamoDB GetItem was not tried"))
        raise DeadlineExceededError("the download did not finish in the invocation's time")

    world.transfer.during = out_of_time

    # When the download runs; Then the caller is told the transfer's own error, not the store's
    with pytest.raises(DeadlineExceededError, match="did not finish"):
        world.download()
    assert world.record.status is DownloadStatus.FAILED


def test_a_completion_that_finds_the_request_cancelled_discards_the_archive_and_raises(
    world: World,
) -> None:
    # Given a download whose owner cancels while its last bytes arrive
    world.tiktok.checks.then(ready())
    world.transfer.during = lambda request, on_part: world.meanwhile_the_owner_cancels()

    # When the download completes
    with pytest.raises(RequestCancelledError):
        world.download()

    # Then the stored archive is deleted, the record stays cancelled, and nothing is published
    assert world.transfer.discarded == [REQUEST_ID]
    assert world.record.status is DownloadStatus.CANCELLED
    assert world.record.size_bytes is None
    assert world.events.sent == []


def test_a_failed_download_is_recorded_and_published(world: World) -> None:
    world.tiktok.checks.then(ready())

    def broken(request: DownloadRequest, on_part: PartListener | None) -> None:
        raise UpstreamUnavailableError("TikTok could not be reached")

    world.transfer.during = broken

    with pytest.raises(UpstreamUnavailableError):
        world.download()

    assert world.record.status is DownloadStatus.FAILED
    assert world.record.error is not None
    assert world.record.error.code == "upstream_unavailable"
    assert world.events.detail_types == ["Download Failed"]


def test_a_download_tiktoks_quota_defers_after_its_claim_is_retried_later_without_a_failed_event(
    world: World,
) -> None:
    # Given a download whose owner TikTok confirms, and whose archive request the quota then refuses
    world.tiktok.checks.then(ready())

    world.transfer.during = raising(
        TikTokBudgetExhaustedError("no call left", retry_after="7", redeliver_after=12)
    )

    # When the download runs; Then the caller is told to come back (503, Retry-After)
    with pytest.raises(TikTokBudgetExhaustedError) as deferred:
        world.download()
    assert (deferred.value.status, deferred.value.retry_after) == (503, "7")

    # And the record says why it waits, but no Download Failed event tells the backend it is over; the
    # next try claims it again and stores it
    assert world.record.error is not None
    assert world.record.error.code == "tiktok_budget_exhausted"
    assert world.events.sent == []
    world.transfer.during = None
    world.tiktok.checks.then(ready())
    assert world.download().record.status is DownloadStatus.COMPLETED


def test_a_failure_on_a_request_cancelled_meanwhile_publishes_no_download_failed_event(
    world: World,
) -> None:
    # Given a download whose owner cancels, and whose stream then breaks
    world.tiktok.checks.then(ready())

    def cancelled_then_broken(request: DownloadRequest, on_part: PartListener | None) -> None:
        world.meanwhile_the_owner_cancels()
        raise UpstreamStreamBrokenError("the archive stream broke")

    world.transfer.during = cancelled_then_broken

    # When the download runs; Then it was stopped, not failed: the caller learns the request was cancelled
    with pytest.raises(RequestCancelledError):
        world.download()

    # And the record stays cancelled (not failed) and no Download Failed event is published
    assert world.record.status is DownloadStatus.CANCELLED
    assert world.record.error is None
    assert world.events.sent == []


# -- another caller ---------------------------------------------------------------------------------
@pytest.mark.parametrize("state", [DownloadStatus.QUEUED, DownloadStatus.FAILED, DownloadStatus.COMPLETED])
@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_another_callers_download_changes_nothing_even_when_tiktok_confirms_its_token(
    world: World, state: DownloadStatus, asynchronous: bool
) -> None:
    # Given the backend's request, and another caller holding the user's own token (TikTok confirms it)
    before = world.given_requested(status=state)
    grants = dict(world.grants.items)
    world.tiktok.checks.then(ready())

    # When the other caller asks for its download
    ask = world.queue if asynchronous else world.download
    with pytest.raises(DownloadNotFoundError) as raised:
        ask(caller=OTHER_CALLER)

    # Then the same 404 as an unknown request: nothing downloaded, queued, written or published
    assert raised.value.status == 404
    assert world.record == before
    assert world.grants.items == grants
    assert (world.transfer.runs, world.jobs.sent, world.jobs.for_grant, world.events.sent) == ([], [], [], [])


def test_another_callers_repeat_after_tiktoks_window_closed_gets_no_stored_archive(world: World) -> None:
    # Given the backend's stored archive, after TikTok's four days (the archive is still kept here)
    before = world.given_requested(status=DownloadStatus.COMPLETED)
    world.tiktok.checks.then(RequestStatus(REQUEST_ID, "expired"))

    with pytest.raises(DownloadNotFoundError):
        world.download(caller=OTHER_CALLER)

    assert world.record == before


def test_another_callers_handed_over_tokens_are_not_kept_when_the_answer_is_404(world: World) -> None:
    # Given the backend's request, and another caller handing over the user's refresh token too
    before = world.given_requested(status=DownloadStatus.QUEUED)
    world.tiktok.refreshes.then(refreshed())
    world.tiktok.checks.then(ready())

    with pytest.raises(DownloadNotFoundError):
        world.download(WITH_REFRESH, caller=OTHER_CALLER)

    # Then the backend's record and grant are as they were, and no grant of the other caller's stays
    assert world.record == before
    assert set(world.grants.items) == {GRANT}


# -- a backend's own queue message ------------------------------------------------------------------
def test_a_backends_queue_message_makes_a_record_no_api_caller_sees(world: World) -> None:
    # Given a backend's own download queue message (a token in clear)
    world.tiktok.checks.then(ready()).then(ready())

    # When the worker runs it
    answer = world.job(DownloadJob(REQUEST_ID, access_token="access-backend"))

    # Then the archive is stored under a record without a caller: no API caller reads, cancels or
    # downloads it (the backend follows it by its events)
    assert answer.record.status is DownloadStatus.COMPLETED
    assert answer.record.caller is None
    with pytest.raises(DownloadNotFoundError):
        RecordQueries(world.records, world.transfer).describe(BACKEND_CALLER, REQUEST_ID)
    with pytest.raises(DownloadNotFoundError):
        world.download()
    assert world.events.detail_types == ["Download Completed"]


def test_a_backends_queue_message_leaves_an_api_callers_record_alone(world: World) -> None:
    # Given a request queued by its API caller, and a backend's message for it carrying the user's token
    before = world.given_requested(status=DownloadStatus.QUEUED)
    world.tiktok.checks.then(ready())  # TikTok confirms that token's user owns the request

    # When the worker runs that message
    with pytest.raises(DownloadNotFoundError) as raised:
        world.job(DownloadJob(REQUEST_ID, access_token="access-user"))

    # Then the caller's record is as it was: a message's token changes nothing it does not own
    assert not raised.value.is_transient
    assert world.record == before
    assert (world.transfer.runs, world.events.sent) == ([], [])


def test_a_backends_message_with_a_token_tiktok_refuses_leaves_a_queued_record_alone(world: World) -> None:
    before = world.given_requested(status=DownloadStatus.QUEUED)
    world.tiktok.checks.then(None)  # TikTok does not confirm that token's user owns the request

    with pytest.raises(ServiceError):
        world.job(DownloadJob(REQUEST_ID, access_token="access-stranger"))

    assert world.record == before
    assert world.events.detail_types == []


# -- jobs the service queued -----------------------------------------------------------------------
def test_an_async_download_is_queued_for_its_caller_and_its_sealed_job_downloads_it(world: World) -> None:
    # Given a caller asking for an async download, TikTok confirming the owner twice (API, worker)
    world.tiktok.checks.then(ready()).then(ready())

    # When it is queued, and the worker runs the job the API sealed
    queued = world.queue()
    assert (queued.record.status, queued.record.caller) == (DownloadStatus.QUEUED, BACKEND_CALLER)
    assert world.jobs.sent == [(REQUEST_ID, "access-caller")]
    done = world.job(sealed_job(world))

    # Then the caller's record is completed (the service's own job acts on the record it queued)
    assert (done.record.status, done.record.caller) == (DownloadStatus.COMPLETED, BACKEND_CALLER)
    assert world.transfer.runs == [DownloadRequest(REQUEST_ID, "access-caller")]


def test_a_grant_job_downloads_with_the_users_grant_and_then_releases_it(world: World) -> None:
    # Given a request the lifecycle found ready (queued, the user's grant holds the tokens)
    world.given_requested(status=DownloadStatus.QUEUED)
    world.tiktok.checks.then(ready())

    # When the worker runs its job
    answer = world.job(DownloadJob(REQUEST_ID, from_grant=True))

    # Then it downloaded with the grant's token; the record stays the caller's; the grant goes
    assert world.transfer.runs == [DownloadRequest(REQUEST_ID, "access-stored")]
    assert (answer.record.status, answer.record.caller) == (DownloadStatus.COMPLETED, BACKEND_CALLER)
    assert world.events.detail_types == ["Download Completed"]
    assert world.grants.items == {}


def test_a_grant_job_keeps_the_grant_another_request_of_the_user_needs(world: World) -> None:
    world.given_requested(SIBLING_ID, status=DownloadStatus.WAITING)
    world.given_requested(status=DownloadStatus.QUEUED)
    world.tiktok.checks.then(ready())

    world.job(DownloadJob(REQUEST_ID, from_grant=True))

    assert world.record.status is DownloadStatus.COMPLETED
    assert GRANT in world.grants.items


@pytest.mark.parametrize("state", [DownloadStatus.QUEUED, DownloadStatus.IN_PROGRESS, DownloadStatus.FAILED])
def test_a_grant_job_acts_on_a_queued_a_lapsed_or_a_failed_request(
    world: World, state: DownloadStatus
) -> None:
    # Given the request queued, failed, or held by a crashed invocation whose claim lapsed
    record = world.given_requested(status=state)
    world.records.items[REQUEST_ID] = dataclasses.replace(
        record, lease_expires_at=world.clock.now() - timedelta(seconds=1)
    )
    world.tiktok.checks.then(ready())

    answer = world.job(DownloadJob(REQUEST_ID, from_grant=True))

    assert answer.record.status is DownloadStatus.COMPLETED


@pytest.mark.parametrize(
    "state",
    [DownloadStatus.COMPLETED, DownloadStatus.CANCELLED, DownloadStatus.REVOKED],
)
def test_a_grant_job_for_a_request_stored_or_ended_does_nothing(world: World, state: DownloadStatus) -> None:
    # Given a request already stored or ended
    before = world.given_requested(status=state)

    # When a job for it arrives (a stray duplicate)
    answer = world.job(DownloadJob(REQUEST_ID, from_grant=True))

    # Then nothing: no TikTok call, no token, no claim, no event
    assert answer.record == before
    assert world.record == before
    assert (world.tiktok.checks.count, world.transfer.runs, world.events.sent) == (0, [], [])
    assert "vault.open" not in world.journal.calls


def test_a_grant_job_that_came_before_its_record_said_queued_comes_back(world: World) -> None:
    # Given a waiting request whose job arrives before the write that marks it queued (the job is sent
    # first, so that a lost send never strands a record marked queued)
    before = world.given_requested(status=DownloadStatus.WAITING)

    # When the worker runs the job; Then it comes back later, and nothing changed meanwhile
    with pytest.raises(ArchiveNotReadyError) as raised:
        world.job(DownloadJob(REQUEST_ID, from_grant=True))
    assert (raised.value.is_transient, raised.value.redeliver_after) == (True, 30)
    assert world.record == before
    assert (world.tiktok.checks.count, world.transfer.runs, world.events.sent) == (0, [], [])


def test_a_grant_job_for_a_request_added_elsewhere_is_not_found(world: World) -> None:
    with pytest.raises(DownloadNotFoundError):
        world.job(DownloadJob(REQUEST_ID, from_grant=True))
    assert world.records.items == {}


def test_a_grant_job_whose_refresh_tiktok_refuses_fails_its_queued_record(world: World) -> None:
    # Given a queued request whose user's access token expired and whose refresh TikTok refuses
    world.given_requested(status=DownloadStatus.QUEUED, access_left=-timedelta(minutes=1))
    world.tiktok.refreshes.then(
        ReauthorizationRequiredError("TikTok refused the token refresh: invalid_grant")
    )

    # When the worker runs the job
    with pytest.raises(ReauthorizationRequiredError):
        world.job(DownloadJob(REQUEST_ID, from_grant=True))

    # Then the record fails reauthorization_required and an event says so (README, Errors)
    assert world.record.status is DownloadStatus.FAILED
    assert world.record.error is not None
    assert world.record.error.code == "reauthorization_required"
    assert world.events.detail_types == ["Download Failed"]


def raising(error: ServiceError) -> Callable[[DownloadRequest, PartListener | None], None]:
    """A transfer's ``during`` that fails with ``error`` before any byte."""

    def refused(request: DownloadRequest, on_part: PartListener | None) -> None:
        raise error

    return refused


def refused_download() -> TikTokApiError:
    """TikTok's download answer for a request that is not downloadable with this token (the emulator's)."""
    return TikTokApiError(
        "invalid_params", "TikTok refused: invalid_params", log_id="202612", upstream_status=400
    )


def test_a_grant_job_downloads_without_asking_tiktoks_status_first(world: World) -> None:
    # Given a queued request of the user's grant (TikTok said it is ready: that is why it was queued)
    world.given_requested(status=DownloadStatus.QUEUED)

    # When the worker runs the job
    world.job(DownloadJob(REQUEST_ID, from_grant=True))

    # Then the archive is stored with no Check Status call (at scale it would compete with the checks)
    assert world.record.status is DownloadStatus.COMPLETED
    assert world.tiktok.checks.count == 0
    assert len(world.transfer.runs) == 1


@pytest.mark.parametrize(
    ("answer", "status", "event", "code"),
    [
        (RequestStatus(REQUEST_ID, "expired"), DownloadStatus.EXPIRED, "Request Expired", "request_expired"),
        (
            RequestStatus(REQUEST_ID, "cancelled"),
            DownloadStatus.CANCELLED,
            "Request Cancelled",
            "request_cancelled",
        ),
        # TikTok no longer confirms the request
        (None, DownloadStatus.FAILED, "Download Failed", "not_found"),
        (
            TikTokApiError(
                "scope_not_authorized", "TikTok refused: scope", log_id="202611", upstream_status=401
            ),
            DownloadStatus.FAILED,
            "Download Failed",
            "scope_not_authorized",
        ),
    ],
)
def test_a_grant_job_whose_download_tiktok_refuses_ends_as_its_status_says(
    world: World, answer: RequestStatus | TikTokApiError | None, status: DownloadStatus, event: str, code: str
) -> None:
    # Given a queued request whose download TikTok refuses (invalid_params: expired, cancelled, not the
    # user's …) and whose status then says why — permanent: the message is acknowledged
    world.given_requested(status=DownloadStatus.QUEUED)

    world.transfer.during = raising(refused_download())
    world.tiktok.checks.then(answer)

    # When the worker runs the job
    with pytest.raises(ServiceError) as raised:
        world.job(DownloadJob(REQUEST_ID, from_grant=True))

    # Then the error is TikTok's explanation, the record says how it ended, one event tells the backend,
    # and the service holds the user's tokens no longer
    assert (raised.value.error_code, raised.value.is_transient) == (code, False)
    assert world.tiktok.checks.count == 1
    assert world.record.status is status
    assert world.events.detail_types == [event]
    assert world.grants.items == {}


def test_a_refused_grant_download_whose_status_check_the_quota_defers_comes_back(world: World) -> None:
    # Given a grant job whose download TikTok refuses, and the explanation deferred by the quota
    world.given_requested(status=DownloadStatus.QUEUED)

    world.transfer.during = raising(refused_download())
    world.tiktok.checks.then(budget_exhausted(Endpoint.CHECK, 4.0))

    # When the worker runs the job
    with pytest.raises(TikTokBudgetExhaustedError):
        world.job(DownloadJob(REQUEST_ID, from_grant=True))

    # Then nothing ended: the record is queued as before, the job comes back, the grant is kept
    assert world.record.status is DownloadStatus.QUEUED
    assert world.events.detail_types == []
    assert GRANT in world.grants.items
    assert "records.fail" not in world.journal.calls


def test_a_refused_grant_download_whose_status_says_pending_comes_back_without_an_outcome(
    world: World,
) -> None:
    # Given a grant job whose download TikTok refuses because it is (again) preparing the archive
    world.given_requested(status=DownloadStatus.QUEUED)

    world.transfer.during = raising(refused_download())
    world.tiktok.checks.then(RequestStatus(REQUEST_ID, "pending"))

    with pytest.raises(ServiceError) as raised:
        world.job(DownloadJob(REQUEST_ID, from_grant=True))

    # Then the error says "later", the record is queued as before, no event, the grant kept
    assert (raised.value.error_code, raised.value.is_transient) == ("archive_not_ready", True)
    assert world.record.status is DownloadStatus.QUEUED
    assert world.events.detail_types == []
    assert GRANT in world.grants.items


def test_a_grant_job_whose_download_tiktok_refuses_otherwise_asks_no_status(world: World) -> None:
    world.given_requested(status=DownloadStatus.QUEUED)
    scope = TikTokApiError(
        "scope_not_authorized", "TikTok refused: scope", log_id="2026", upstream_status=401
    )
    world.transfer.during = raising(scope)

    with pytest.raises(TikTokApiError) as raised:
        world.job(DownloadJob(REQUEST_ID, from_grant=True))

    assert raised.value is scope
    assert world.tiktok.checks.count == 0
    assert world.record.status is DownloadStatus.FAILED
    assert world.events.detail_types == ["Download Failed"]


def test_a_grant_job_whose_download_fails_for_good_releases_the_grant(world: World) -> None:
    # Given a queued request whose archive cannot be stored, for good
    world.given_requested(status=DownloadStatus.QUEUED)
    world.tiktok.checks.then(ready())

    def too_large(request: DownloadRequest, on_part: PartListener | None) -> None:
        raise ArchiveTooLargeError("the archive does not fit in 10,000 parts")

    world.transfer.during = too_large

    # When the worker runs its job
    with pytest.raises(ArchiveTooLargeError):
        world.job(DownloadJob(REQUEST_ID, from_grant=True))

    # Then the record says failed (for good), one event, and no request needs the grant any longer
    assert world.record.status is DownloadStatus.FAILED
    assert world.events.detail_types == ["Download Failed"]
    assert world.grants.items == {}


def test_a_grant_job_whose_download_fails_for_now_keeps_the_grant_for_its_retry(world: World) -> None:
    world.given_requested(status=DownloadStatus.QUEUED)
    world.tiktok.checks.then(ready())

    def broken(request: DownloadRequest, on_part: PartListener | None) -> None:
        raise UpstreamStreamBrokenError("the archive stream broke")

    world.transfer.during = broken

    with pytest.raises(UpstreamStreamBrokenError):
        world.job(DownloadJob(REQUEST_ID, from_grant=True))

    assert world.record.status is DownloadStatus.FAILED
    assert GRANT in world.grants.items


def test_a_grant_job_whose_token_tiktok_refuses_mid_download_is_retried_with_a_refreshed_one(
    world: World,
) -> None:
    # Given a queued request whose stored access token TikTok refuses when the archive is fetched
    world.given_requested(status=DownloadStatus.QUEUED)
    world.tiktok.refreshes.then(refreshed())
    refused = TikTokApiError("access_token_invalid", "expired", log_id="L1", upstream_status=401)

    def refused_once(request: DownloadRequest, on_part: PartListener | None) -> None:
        if request.access_token == "access-stored":
            raise refused

    world.transfer.during = refused_once

    # When the worker runs its job
    answer = world.job(DownloadJob(REQUEST_ID, from_grant=True))

    # Then the grant was refreshed and the download made again with the new token; the refusal was the
    # token's, not the download's: the claim was given back (no failure recorded, no event but the end)
    assert answer.record.status is DownloadStatus.COMPLETED
    assert [run.access_token for run in world.transfer.runs] == ["access-stored", "access-fresh"]
    assert world.events.detail_types == ["Download Completed"]
    assert world.tiktok.checks.count == 0
    assert world.journal.calls.count("records.unclaim") == 1
    assert "records.fail" not in world.journal.calls


def test_a_grant_job_whose_refreshed_token_tiktok_refuses_too_fails_once(world: World) -> None:
    # Given a queued request whose tokens TikTok refuses for the download, stored and refreshed alike
    world.given_requested(status=DownloadStatus.QUEUED)
    world.tiktok.refreshes.then(refreshed())

    world.transfer.during = raising(
        TikTokApiError("access_token_invalid", "revoked", log_id="L2", upstream_status=401)
    )

    # When the worker runs its job
    with pytest.raises(TikTokApiError):
        world.job(DownloadJob(REQUEST_ID, from_grant=True))

    # Then the record failed for good once, one event says so, and the grant is released
    assert world.record.status is DownloadStatus.FAILED
    assert world.record.error is not None
    assert world.record.error.code == "access_token_invalid"
    assert world.events.detail_types == ["Download Failed"]
    assert world.grants.items == {}


# -- TikTok's window is over, the archive is still kept ---------------------------------------------
def test_a_repeat_after_tiktoks_window_closed_still_gets_the_stored_archive(world: World) -> None:
    # Given an archive downloaded and stored, then TikTok's four days pass (ArchiveRetentionDays: 7)
    world.tiktok.checks.then(ready()).then(RequestStatus(REQUEST_ID, "expired")).then(
        RequestStatus(REQUEST_ID, "expired")
    )
    world.download()

    # When the owner repeats the POST, synchronously and asynchronously
    again = world.download()
    queued = world.queue()

    # Then both answer the stored record with a fresh link, as GET does; nothing downloaded again
    for answer in (again, queued):
        assert answer.record.status is DownloadStatus.COMPLETED
        assert answer.url == LINK
    assert len(world.transfer.runs) == 1
    assert world.events.detail_types == ["Download Completed"]


def test_a_repeat_after_tiktoks_window_closed_without_a_stored_archive_is_gone(world: World) -> None:
    world.tiktok.checks.then(RequestStatus(REQUEST_ID, "expired"))

    with pytest.raises(RequestExpiredError):
        world.download()
    assert world.records.items == {}


def test_a_repeat_of_a_stored_download_with_a_refresh_token_keeps_no_grant(world: World) -> None:
    # Given the caller's stored archive, and a repeat that hands over the user's refresh token
    world.tiktok.checks.then(ready()).then(ready())
    world.download()
    world.tiktok.refreshes.then(refreshed())

    # When it repeats the POST
    answer = world.download(WITH_REFRESH)

    # Then it gets a fresh link, and the service keeps no tokens no request needs
    assert answer.url == LINK
    assert world.grants.items == {}


# -- one deadline per invocation ----------------------------------------------------------------------
def test_a_slow_refresh_does_not_move_the_transfers_deadline(world: World) -> None:
    # Given an invocation with 40 s of work left, a queued request whose token must be refreshed first
    # (TikTok takes 16 s to answer the refresh)
    world.given_requested(access_left=timedelta(minutes=5))
    world.tiktok.refreshes.then(refreshed(), meanwhile=lambda: world.clock.advance(16))
    deadline = Deadline.after(40)

    # When the worker runs the job
    world.queued_downloads.run(DownloadJob(REQUEST_ID, from_grant=True), deadline)

    # Then the transfer got the invocation's own deadline, 16 s nearer — not a fresh 40 s from then
    (given,) = world.transfer.deadlines
    assert given is deadline
    assert given.remaining() == pytest.approx(40 - 16)


def test_a_slow_owner_check_does_not_move_the_transfers_deadline(world: World, token: str) -> None:
    # Given a backend's own queue message (its token in clear: TikTok confirms the owner first), the
    # owner check taking 8 s of an invocation's 40
    world.tiktok.checks.then(ready(), meanwhile=lambda: world.clock.advance(8))
    deadline = Deadline.after(40)

    world.queued_downloads.run(DownloadJob(REQUEST_ID, access_token=token), deadline)

    (given,) = world.transfer.deadlines
    assert given is deadline
    assert given.remaining() == pytest.approx(40 - 8)
