"""DownloadService and its progress reporter with in-memory collaborators: claims, outcomes, cancellation."""

from __future__ import annotations

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
    FakeTikTok,
    FakeTransfer,
    FakeVault,
    Journal,
    freeze_time,
)
from tiktok_archive.adapters.download_records import Claimed
from tiktok_archive.adapters.grants import Grant
from tiktok_archive.adapters.s3_archive_store import PartListener
from tiktok_archive.adapters.token_vault import ACCESS_TOKEN_PURPOSE, REFRESH_TOKEN_PURPOSE
from tiktok_archive.logic.downloads import PROGRESS_EVERY_SECONDS, DownloadService, _ProgressReporter
from tiktok_archive.logic.tokens import TokenService
from tiktok_archive.models.download import DownloadRequest, QueuedJob
from tiktok_archive.models.download_record import DownloadRecord, DownloadStatus, Preparation
from tiktok_archive.models.errors import (
    DownloadInProgressError,
    ReauthorizationRequiredError,
    RecordStoreError,
    RequestCancelledError,
    RequestExpiredError,
    TikTokApiError,
    TransferError,
    UpstreamStreamBrokenError,
    UpstreamUnavailableError,
)
from tiktok_archive.models.portability import RequestStatus

REQUEST_ID = 7_234_567_890_123_456_789
GRANT = "user:openid-1"
REMAINING_MS = 60_000
MIB = 1024 * 1024
CALLER = DownloadRequest(REQUEST_ID, "access-caller")


@dataclass
class World:
    clock: Clock
    journal: Journal
    records: FakeDownloadRecords
    grants: FakeGrants
    vault: FakeVault
    tiktok: FakeTikTok
    events: FakeEvents
    transfer: FakeTransfer
    service: DownloadService

    @property
    def record(self) -> DownloadRecord:
        return self.records.items[REQUEST_ID]

    def claim(self) -> Claimed:
        claimed = self.records.claim(REQUEST_ID, "archive-bucket", "archives/x.zip", timedelta(seconds=65))
        assert isinstance(claimed, Claimed)
        return claimed

    def meanwhile_the_owner_cancels(self) -> None:
        self.records.end(REQUEST_ID, DownloadStatus.CANCELLED)


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
    service = DownloadService(transfer, records, tiktok, events, lambda: jobs, lambda: vault, lambda: tokens)
    return World(clock, journal, records, grants, vault, tiktok, events, transfer, service)


def ready() -> RequestStatus:
    return RequestStatus(REQUEST_ID, "downloading")


# -- progress -------------------------------------------------------------------------------------
def test_progress_is_reported_at_most_every_progress_every_seconds(world: World) -> None:
    # Given a running download's reporter
    reporter = _ProgressReporter(world.records, world.claim())

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
    reporter = _ProgressReporter(world.records, world.claim())
    world.records.end(REQUEST_ID, ended)

    # When the next report is due; Then it raises into the transfer, which aborts the upload
    world.clock.advance(PROGRESS_EVERY_SECONDS)
    with pytest.raises(RequestCancelledError):
        reporter.part_done(1, 8 * MIB)
    assert world.record.status is ended


def test_a_progress_report_that_finds_the_download_taken_over_stops_it(world: World) -> None:
    # Given a download whose claim lapsed and another invocation took it over
    reporter = _ProgressReporter(world.records, world.claim())
    world.clock.advance(70)
    world.claim()

    # When this invocation's next report is due; Then it stops
    with pytest.raises(DownloadInProgressError):
        reporter.part_done(1, 8 * MIB)


# -- the outcome of a download --------------------------------------------------------------------
def test_a_completed_download_is_recorded_published_and_linked(world: World) -> None:
    world.tiktok.checks.then(ready())

    answer = world.service.download(CALLER, REMAINING_MS)

    assert answer.record.status is DownloadStatus.COMPLETED
    assert answer.record.size_bytes == 12 * MIB
    assert answer.url == f"https://archive-bucket.example/archives/{REQUEST_ID}.zip"
    assert world.events.detail_types == ["Download Completed"]
    assert world.transfer.runs == [CALLER]
    assert world.transfer.discarded == []


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
        world.service.download(CALLER, REMAINING_MS)
    assert world.record.status is DownloadStatus.CANCELLED
    assert world.events.sent == []


def test_a_completion_that_finds_the_request_cancelled_discards_the_archive_and_raises(
    world: World,
) -> None:
    # Given a download whose owner cancels while its last bytes arrive
    world.tiktok.checks.then(ready())
    world.transfer.during = lambda request, on_part: world.meanwhile_the_owner_cancels()

    # When the download completes
    with pytest.raises(RequestCancelledError):
        world.service.download(CALLER, REMAINING_MS)

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
        world.service.download(CALLER, REMAINING_MS)

    assert world.record.status is DownloadStatus.FAILED
    assert world.record.error is not None
    assert world.record.error.code == "upstream_unavailable"
    assert world.events.detail_types == ["Download Failed"]


def test_a_failure_on_a_request_cancelled_meanwhile_publishes_no_download_failed_event(
    world: World,
) -> None:
    # Given a download whose owner cancels, and whose stream then breaks
    world.tiktok.checks.then(ready())

    def cancelled_then_broken(request: DownloadRequest, on_part: PartListener | None) -> None:
        world.meanwhile_the_owner_cancels()
        raise UpstreamStreamBrokenError("the archive stream broke")

    world.transfer.during = cancelled_then_broken

    # When the download runs
    with pytest.raises(UpstreamStreamBrokenError):
        world.service.download(CALLER, REMAINING_MS)

    # Then the record stays cancelled (not failed) and no Download Failed event is published
    assert world.record.status is DownloadStatus.CANCELLED
    assert world.record.error is None
    assert world.events.sent == []


# -- a job of a request added with POST /requests --------------------------------------------------
def a_queued_grant_request(world: World, *, access_left: timedelta) -> None:
    """A request added with POST /requests, found ready by its status check (queued for the worker)."""
    now = world.clock.now()
    world.records.create_waiting(
        REQUEST_ID,
        grant_id=GRANT,
        user_openid="openid-1",
        preparation=Preparation(
            "json",
            ("all_data",),
            next_check_at=now + timedelta(minutes=1),
            give_up_at=now + timedelta(days=7),
        ),
        poll_interval=60,
    )
    world.records.mark_ready(REQUEST_ID, 0, apply_time=None, collect_time=None, lease=timedelta(minutes=15))
    binding = {"grant_id": GRANT}
    world.grants.items[GRANT] = Grant(
        grant_id=GRANT,
        version=1,
        sealed_access_token=world.vault.seal("access-stored", ACCESS_TOKEN_PURPOSE, binding),
        access_expires_at=now + access_left,
        sealed_refresh_token=world.vault.seal("refresh-stored", REFRESH_TOKEN_PURPOSE, binding),
        refresh_expires_at=now + timedelta(days=100),
        user_openid="openid-1",
    )
    assert world.record.status is DownloadStatus.QUEUED


def test_a_grant_job_whose_refresh_tiktok_refuses_fails_its_queued_record(world: World) -> None:
    # Given a queued request whose user's access token expired and whose refresh TikTok refuses
    a_queued_grant_request(world, access_left=-timedelta(minutes=1))
    world.tiktok.refreshes.then(
        ReauthorizationRequiredError("TikTok refused the token refresh: invalid_grant")
    )

    # When the worker runs the job
    with pytest.raises(ReauthorizationRequiredError):
        world.service.download_job(QueuedJob(REQUEST_ID, from_grant=True), REMAINING_MS)

    # Then the record fails reauthorization_required and an event says so (README, Errors)
    assert world.record.status is DownloadStatus.FAILED
    assert world.record.error is not None
    assert world.record.error.code == "reauthorization_required"
    assert world.events.detail_types == ["Download Failed"]


@pytest.mark.parametrize(
    ("answer", "status", "event"),
    [
        (RequestStatus(REQUEST_ID, "expired"), DownloadStatus.EXPIRED, "Request Expired"),
        (RequestStatus(REQUEST_ID, "cancelled"), DownloadStatus.CANCELLED, "Request Cancelled"),
        (None, DownloadStatus.FAILED, "Download Failed"),  # TikTok no longer confirms the request
        (
            TikTokApiError(
                "scope_not_authorized", "TikTok refused: scope", log_id="202611", upstream_status=401
            ),
            DownloadStatus.FAILED,
            "Download Failed",
        ),
    ],
)
def test_a_queued_job_refused_for_good_before_its_download_ends_its_record_with_an_event(
    world: World, answer: RequestStatus | TikTokApiError | None, status: DownloadStatus, event: str
) -> None:
    # Given a queued request whose status TikTok now answers with an end (expired, cancelled, unknown,
    # a scope withdrawn) — permanent: the message is acknowledged, nothing would check it again
    a_queued_grant_request(world, access_left=timedelta(hours=1))
    world.tiktok.checks.then(answer)

    # When the worker runs the job
    with pytest.raises(TransferError) as raised:
        world.service.download_job(QueuedJob(REQUEST_ID, from_grant=True), REMAINING_MS)

    # Then the record says how it ended and one event tells the backend; nothing was downloaded
    assert not raised.value.is_transient
    assert world.record.status is status
    assert world.events.detail_types == [event]
    assert world.transfer.runs == []


def test_a_backends_job_with_a_refused_token_leaves_a_queued_record_alone(world: World) -> None:
    # Given a request queued by its owner, and a backend's message carrying another user's token
    a_queued_grant_request(world, access_left=timedelta(hours=1))
    world.tiktok.checks.then(None)  # TikTok does not confirm that token's user owns the request
    before = world.record

    # When the worker runs that message
    with pytest.raises(TransferError):
        world.service.download_job(QueuedJob(REQUEST_ID, access_token="access-stranger"), REMAINING_MS)

    # Then the owner's record is as it was: a message's token changes nothing it does not own
    assert world.record == before
    assert world.events.detail_types == []


# -- TikTok's window is over, the archive is still kept ---------------------------------------------
def test_a_repeat_after_tiktoks_window_closed_still_gets_the_stored_archive(world: World) -> None:
    # Given an archive downloaded and stored, then TikTok's four days pass (ArchiveRetentionDays: 7)
    world.tiktok.checks.then(ready()).then(RequestStatus(REQUEST_ID, "expired")).then(
        RequestStatus(REQUEST_ID, "expired")
    )
    world.service.download(CALLER, REMAINING_MS)

    # When the owner repeats the POST, synchronously and asynchronously
    again = world.service.download(CALLER, REMAINING_MS)
    queued = world.service.queue(CALLER, REMAINING_MS)

    # Then both answer the stored record with a fresh link, as GET does; nothing downloaded again
    for answer in (again, queued):
        assert answer.record.status is DownloadStatus.COMPLETED
        assert answer.url == f"https://archive-bucket.example/archives/{REQUEST_ID}.zip"
    assert world.transfer.runs == [CALLER]
    assert world.events.detail_types == ["Download Completed"]


def test_a_repeat_after_tiktoks_window_closed_without_a_stored_archive_is_gone(world: World) -> None:
    world.tiktok.checks.then(RequestStatus(REQUEST_ID, "expired"))

    with pytest.raises(RequestExpiredError):
        world.service.download(CALLER, REMAINING_MS)
    assert world.records.items == {}


def test_a_progress_report_dynamodb_refuses_is_logged_and_the_download_goes_on(world: World) -> None:
    # Given a running download whose progress write fails once (DynamoDB briefly unavailable)
    throttled = RecordStoreError("DynamoDB UpdateItem failed: ThrottlingException")
    world.records.faults.arm("report_progress", throttled)
    reporter = _ProgressReporter(world.records, world.claim())
    world.clock.advance(PROGRESS_EVERY_SECONDS + 1)

    # When the store reports a part, then another later
    reporter.part_done(1, 5 * 1024 * 1024)
    world.clock.advance(PROGRESS_EVERY_SECONDS + 1)
    reporter.part_done(2, 10 * 1024 * 1024)

    # Then nothing was raised into the transfer, and the second report was recorded
    assert world.record.progress is not None
    assert world.record.progress.parts_uploaded == 2
