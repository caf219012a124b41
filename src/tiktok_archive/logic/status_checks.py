"""Waiting for TikTok without anyone polling: a waiting request's status checks, and TikTok's ``ready``.

Each added request is checked on a :class:`Schedule` — first after ``STATUS_POLL_INITIAL_SECONDS``,
then twice as long after each check up to its longest (``STATUS_POLL_MAX_SECONDS``, or with webhooks the
backstop's hours), never sooner than the budget's floor (all waiting requests' checks fit the check
budget) — by a chain of delayed queue messages, one message per check (see :class:`LifecycleQueue`).
The record's ``next_check_at`` is authoritative: a message that comes earlier (SQS delays at most 900 s)
sends itself on for the time left, calling nobody. A check sends the next one before it records itself,
so a failed write repeats a check rather than breaking the chain; the record's ``poll_seq`` makes any
other check stale. TikTok's answer moves the request on: ``downloading`` queues the download (once: the
record's claim), ``expired`` / ``cancelled`` end it; a 429 slows its schedule; a check TikTok's quota has
no call for comes again after the quota's wait (the handler sends it again, as all refused work); after
``STATUS_POLL_GIVE_UP_HOURS`` it is given up. The sweeper re-drives a chain that was lost
(:mod:`~tiktok_archive.logic.sweep`).

TikTok's ``portability.download.ready`` webhook ends the wait too (:class:`ArchiveReady`): the download
is queued at once and the schedule's next check finds itself stale.

The user's tokens come from their grant, refreshed on the way (:class:`TokenService`); a request that
ends releases its grant when no other request needs it (:func:`release_grant`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from tiktok_archive.adapters.download_events import DownloadEvents
from tiktok_archive.adapters.download_jobs import DownloadJobs
from tiktok_archive.adapters.download_records import DownloadRecords
from tiktok_archive.adapters.lifecycle_queue import MAX_DELAY_SECONDS, LifecycleQueue
from tiktok_archive.adapters.record_writes import Unchanged
from tiktok_archive.adapters.tiktok import TikTokClient
from tiktok_archive.logic.grant_release import release_grant
from tiktok_archive.logic.ownership import NOT_FOUND_MESSAGE, NOT_OWNED, logged_as
from tiktok_archive.logic.tokens import TokenService
from tiktok_archive.models.check_schedule import Schedule
from tiktok_archive.models.clock import utc_now as _now  # tests freeze this module's clock
from tiktok_archive.models.deadline import Deadline
from tiktok_archive.models.download import DownloadRequest
from tiktok_archive.models.download_record import DownloadRecord, DownloadStatus
from tiktok_archive.models.errors import DownloadNotFoundError, PreparationTimedOutError, ServiceError
from tiktok_archive.models.messages import QUEUED_LEASE, ArchiveReadyWork
from tiktok_archive.models.portability import RequestStatus, TikTokStatus
from tiktok_archive.models.tiktok_errors import TikTokApiError, TikTokBudgetExhaustedError
from tiktok_archive.observability import logger

# A ready archive's job waits this long before a repeated trigger may queue it again.
READY_LEASE = QUEUED_LEASE
# A check message this much early or less is on time: the record's next_check_at is written just after its
# message is sent, so every message arrives a moment "early".
EARLY_TOLERANCE_SECONDS = 5


@dataclass(frozen=True)
class CheckOutcome:
    """What a status check did; ``rate_limited_for``: TikTok asked to wait that long (seconds)."""

    action: str
    rate_limited_for: int | None = None


class StatusChecks:
    """Checks waiting requests at TikTok on their schedule, and re-drives checks the schedule lost.

    Args:
        tiktok: TikTok's portability endpoints.
        records: the downloads table.
        tokens: users' grants.
        events: publishes state changes.
        queue: the lifecycle queue (the chain of checks).
        jobs: the download queue, built on first use.
        schedule: the status checks' timing.
        floor: the budget's floor of an interval, in seconds (the sweeper's, read cheaply).
    """

    def __init__(
        self,
        tiktok: TikTokClient,
        records: DownloadRecords,
        tokens: TokenService,
        events: DownloadEvents,
        queue: LifecycleQueue,
        jobs: Callable[[], DownloadJobs],
        schedule: Schedule,
        floor: Callable[[], int] = lambda: 0,
    ) -> None:
        self._tiktok = tiktok
        self._records = records
        self._tokens = tokens
        self._events = events
        self._queue = queue
        self._jobs = jobs
        self._schedule = schedule
        self._floor = floor

    def check(
        self, request_id: int, seq: int, deadline: Deadline, pace: Callable[[], None] = lambda: None
    ) -> CheckOutcome:
        """Status check number ``seq`` of a waiting request (a lifecycle queue message).

        ``pace`` is called just before TikTok is (not for a stale or an early check).

        Returns:
            what happened; stale checks (another one is expected, or the request moved on) do nothing;
            an early one (``"early"``) sent itself on to when the record expects it, calling nobody.

        Raises:
            TikTokBudgetExhaustedError: TikTok's shared quota has no call for this check now (the same
                check is to come again after ``redeliver_after``; nothing was changed).
            ServiceError: otherwise only transient failures of AWS (the message comes back).
        """
        with logged_as(request_id):
            record = self._records.get(request_id)
            if record is None or record.status is not DownloadStatus.WAITING or record.poll_seq != seq:
                logger.info("status check is stale", extra={"seq": seq})
                return CheckOutcome("stale")
            early_by = _early_by(record)
            if early_by:
                # The next hop first; acknowledging this message afterwards keeps the chain whole and
                # spends none of its receives.
                self._queue.schedule_check(request_id, seq, min(early_by, MAX_DELAY_SECONDS))
                logger.info("status check early; sent on", extra={"seq": seq, "due_in_seconds": early_by})
                return CheckOutcome("early")
            return self._check(record, deadline, pace)

    def _check(self, record: DownloadRecord, deadline: Deadline, pace: Callable[[], None]) -> CheckOutcome:
        prep = record.preparation
        if record.grant_id is None or prep is None:
            return CheckOutcome("stale")
        if prep.give_up_at is not None and _now() >= prep.give_up_at:
            return self._fail(record, PreparationTimedOutError("TikTok did not prepare the archive in time"))
        grant_id = record.grant_id
        request_id = record.request_id
        pace()
        try:
            status = self._tokens.with_access_token(
                grant_id,
                deadline,
                lambda token: self._tiktok.check_request(DownloadRequest(request_id, token), deadline),
            )
        except ServiceError as error:
            return self._check_failed(record, error)
        if status is None:
            return self._fail(record, DownloadNotFoundError(NOT_FOUND_MESSAGE))
        return self._follow(record, status)

    def _check_failed(self, record: DownloadRecord, error: ServiceError) -> CheckOutcome:
        """A check TikTok refused or that failed: the request fails, or is checked again later."""
        if isinstance(error, TikTokApiError) and error.error_code == NOT_OWNED:
            return self._fail(record, DownloadNotFoundError(NOT_FOUND_MESSAGE, log_id=error.log_id))
        if not error.is_transient:  # reauthorization_required, scope errors …
            return self._fail(record, error)
        interval = record.poll_interval or self._schedule.initial
        if isinstance(error, TikTokBudgetExhaustedError):
            # TikTok's quota had no call for a check now: not TikTok's failure, so the schedule stays as
            # it is, and the handler sends the same check again once the quota has room (its next
            # sub-window, jittered), as it defers all refused work (``settle``). Waiting a whole interval
            # instead would leave the checks' share unused.
            raise error
        if isinstance(error, TikTokApiError):
            # A 429 or TikTok failing: slow this request's schedule down (at least TikTok's Retry-After).
            interval = max(self._schedule.after(interval), error.redeliver_after or 0)
        logger.warning(
            "status check failed; checked again later",
            extra={**error.log_fields(), "next_in_seconds": interval},
        )
        self._next(record, None, interval)
        limited = isinstance(error, TikTokApiError) and error.upstream_status == 429
        return CheckOutcome(
            "rate_limited" if limited else "retry", error.redeliver_after if limited else None
        )

    def _follow(self, record: DownloadRecord, status: RequestStatus) -> CheckOutcome:
        """Move the request on by TikTok's answer."""
        seq = record.poll_seq
        if status.status == TikTokStatus.DOWNLOADING:
            self._jobs().send_for_grant(record.request_id)
            ready = self._records.mark_ready(
                record.request_id,
                seq,
                apply_time=_moment(status.apply_time),
                collect_time=_moment(status.collect_time),
                lease=READY_LEASE,
            )
            if not isinstance(ready, Unchanged):
                logger.info("archive ready at TikTok; download queued")
                self._events.publish(ready)
            return CheckOutcome("ready")
        if status.status in (TikTokStatus.EXPIRED, TikTokStatus.CANCELLED):
            final = (
                DownloadStatus.EXPIRED if status.status == TikTokStatus.EXPIRED else DownloadStatus.CANCELLED
            )
            ended = self._records.end(record.request_id, final, seq=seq, tiktok_status=status.status)
            if not isinstance(ended, Unchanged):
                logger.info("request ended at TikTok", extra={"tiktok_status": status.status})
                self._events.publish(ended)
                release_grant(self._records, self._tokens, ended)
            return CheckOutcome(final.value)
        self._next(record, status, self._schedule.after(record.poll_interval or self._schedule.initial))
        return CheckOutcome("waiting")

    def _next(self, record: DownloadRecord, status: RequestStatus | None, backoff: int) -> None:
        """Send the next check, then record this one (a lost write repeats a check, never loses one).

        The next check comes after ``backoff``, at least the budget's floor; beyond SQS's 900 s its
        message hops (the record's ``next_check_at`` says when it is due).
        """
        interval = self._schedule.spaced(backoff, self._floor())
        self._queue.schedule_check(record.request_id, record.poll_seq + 1, min(interval, MAX_DELAY_SECONDS))
        self._records.advance_schedule(
            record.request_id,
            record.poll_seq,
            tiktok_status=status.status if status else None,
            apply_time=_moment(status.apply_time) if status else None,
            collect_time=_moment(status.collect_time) if status else None,
            next_check_at=_now() + timedelta(seconds=interval),
            poll_interval=interval,
        )

    def _fail(self, record: DownloadRecord, error: ServiceError) -> CheckOutcome:
        logger.warning("waiting request failed", extra=error.log_fields())
        ended = self._records.end(record.request_id, DownloadStatus.FAILED, error=error, seq=record.poll_seq)
        if not isinstance(ended, Unchanged):
            self._events.publish(ended)
            release_grant(self._records, self._tokens, ended)
        return CheckOutcome("failed")


class ArchiveReady:
    """TikTok announced an archive ready (its webhook): the waiting request's download is queued now.

    Args:
        records: the downloads table.
        events: publishes state changes.
        jobs: the download queue, built on first use.
    """

    def __init__(
        self, records: DownloadRecords, events: DownloadEvents, jobs: Callable[[], DownloadJobs]
    ) -> None:
        self._records = records
        self._events = events
        self._jobs = jobs

    def queue(self, work: ArchiveReadyWork) -> str:
        """Queue the download of the request TikTok announced ready, if it is waiting.

        A webhook that names the user records them on a request whose user was not known (TikTok's
        word: the user's purge then finds it).

        Returns:
            ``"queued"``; ``"unknown"`` for a request the service never saw (acknowledged, logged);
            ``"nothing"`` for one already queued, downloading, done or ended.

        Raises:
            ServiceError: only transient failures of AWS.
        """
        request_id = work.request_id
        with logged_as(request_id):
            record = self._records.get(request_id)
            if record is None:
                logger.info("TikTok announced an archive ready for a request this service does not know")
                return "unknown"
            if work.user_openid is not None and record.user_openid is None:
                self._records.set_user(record, work.user_openid)
            if record.status is not DownloadStatus.WAITING or record.grant_id is None:
                return "nothing"
            self._jobs().send_for_grant(request_id)
            queued = self._records.queue_now(request_id, READY_LEASE)
            if isinstance(queued, Unchanged):
                return "nothing"
            logger.info("archive ready (webhook); download queued, status checks stopped")
            self._events.publish(queued)
            return "queued"


def _early_by(record: DownloadRecord) -> int:
    """Whole seconds until ``record``'s next check is due (its give-up time at the latest); 0: due now."""
    prep = record.preparation
    if prep is None or prep.next_check_at is None:
        return 0
    due = prep.next_check_at if prep.give_up_at is None else min(prep.next_check_at, prep.give_up_at)
    early = (due - _now()).total_seconds()
    return math.ceil(early) if early > EARLY_TOLERANCE_SECONDS else 0


def _moment(seconds: int | None) -> datetime | None:
    return datetime.fromtimestamp(seconds, UTC) if seconds else None
