"""A portability request from consent to archive: add it, wait for TikTok, hand it to the download, cancel.

:class:`RequestLifecycle` is the service behind ``POST /requests``, ``DELETE /downloads/{id}`` and the
lifecycle queue. It knows nothing of API Gateway or SQS events, and nothing of how an archive is
streamed (that is :class:`DownloadService`'s one download).

Waiting without anyone polling: each added request is checked on a schedule — first after
``STATUS_POLL_INITIAL_SECONDS``, then twice as long after each check up to ``STATUS_POLL_MAX_SECONDS`` —
by a chain of delayed queue messages, one message per check (see :class:`LifecycleQueue`). A check sends
the next one before it records itself, so a failed write repeats a check rather than breaking the
chain; the record's ``poll_seq`` makes any other check stale. TikTok's answer moves the request on:
``downloading`` queues the download (once: the record's claim), ``expired`` / ``cancelled`` end it; a 429
slows its schedule; after ``STATUS_POLL_GIVE_UP_HOURS`` it is given up. The user's tokens come from their
grant, refreshed on the way (:class:`TokenService`); a request that ends releases its grant when no other
request needs it (:func:`release_grant`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from tiktok_archive.adapters.download_events import DownloadEvents
from tiktok_archive.adapters.download_jobs import DownloadJobs
from tiktok_archive.adapters.download_records import DownloadRecords, Unchanged
from tiktok_archive.adapters.lifecycle_queue import MAX_DELAY_SECONDS, LifecycleQueue
from tiktok_archive.adapters.tiktok import TikTokClient
from tiktok_archive.logic.downloads import QUEUED_LEASE
from tiktok_archive.logic.grant_release import release_grant, release_unneeded
from tiktok_archive.logic.handover import Holding, TokenHandover
from tiktok_archive.logic.ownership import NOT_FOUND_MESSAGE, NOT_OWNED, logged_as
from tiktok_archive.logic.queries import RecordQueries
from tiktok_archive.logic.tokens import TokenService
from tiktok_archive.logic.transfer import ArchiveTransfer
from tiktok_archive.models.clock import utc_now as _now  # tests freeze this module's clock
from tiktok_archive.models.deadline import Deadline
from tiktok_archive.models.download import DownloadRequest
from tiktok_archive.models.download_record import ENDED, DownloadRecord, DownloadStatus, Preparation
from tiktok_archive.models.errors import (
    DownloadNotFoundError,
    PreparationTimedOutError,
    ReauthorizationRequiredError,
    RecordStoreError,
    ServiceError,
    TikTokApiError,
)
from tiktok_archive.models.messages import ArchiveReadyWork
from tiktok_archive.models.portability import NewRequest, RequestStatus, TikTokStatus
from tiktok_archive.observability import logger

# A ready archive's job waits this long before a repeated trigger may queue it again.
READY_LEASE = QUEUED_LEASE


@dataclass(frozen=True)
class Schedule:
    """When to check a waiting request.

    First after ``initial``, doubling up to ``longest``, until ``give_up_after``.
    """

    initial: int
    longest: int
    give_up_after: timedelta

    def after(self, interval: int) -> int:
        """The interval that follows ``interval``."""
        return min(self.longest, max(1, interval * 2))


@dataclass(frozen=True)
class CheckOutcome:
    """What a status check did; ``rate_limited_for``: TikTok asked to wait that long (seconds)."""

    action: str
    rate_limited_for: int | None = None


class RequestLifecycle:
    """Adds requests at TikTok, follows their preparation, and cancels them.

    Args:
        tiktok: TikTok's portability endpoints.
        records: the downloads table.
        tokens: users' grants.
        handover: takes the tokens a caller hands over.
        events: publishes state changes.
        queue: the lifecycle queue (status checks).
        jobs: the download queue, built on first use.
        transfer: deletes a cancelled request's stored archive.
        schedule: the status checks' timing.
    """

    def __init__(
        self,
        tiktok: TikTokClient,
        records: DownloadRecords,
        tokens: TokenService,
        handover: TokenHandover,
        events: DownloadEvents,
        queue: LifecycleQueue,
        jobs: Callable[[], DownloadJobs],
        transfer: ArchiveTransfer,
        schedule: Schedule,
    ) -> None:
        self._tiktok = tiktok
        self._records = records
        self._tokens = tokens
        self._handover = handover
        self._events = events
        self._queue = queue
        self._jobs = jobs
        self._transfer = transfer
        self._schedule = schedule
        self._queries = RecordQueries(records, transfer)

    # -- POST /requests ------------------------------------------------------------------------------
    def add(self, caller: str, new: NewRequest, deadline: Deadline) -> DownloadRecord:
        """Take the user's tokens, add a data request at TikTok, start waiting; the record is ``caller``'s.

        Returns:
            the ``waiting`` record.

        Raises:
            OpenIdMismatchError / ReauthorizationRequiredError: TikTok named another user, or refused
                the refresh token (see :meth:`TokenHandover.take`); nothing was added.
            TikTokApiError: TikTok refused the Add (``scope_permission_missed`` once a ``*.single``
                scope was used …); nothing was added.
            RecordStoreError / TokenVaultError: TikTok accepted the request but it could not be kept;
                the message names the ``request_id`` so that it can still be downloaded.
        """
        holding = self._handover.take(caller, new.tokens, deadline)
        try:
            request_id = self._handover.act(
                holding,
                deadline,
                lambda token: self._tiktok.add_request(
                    token, new.data_format, list(new.categories), deadline
                ),
            )
        except ServiceError as error:
            # TikTok refused for good: a grant made for this request alone is not kept. A transient
            # failure keeps it, so that the caller's retry (with the same, now rotated, tokens) joins it.
            if not error.is_transient:
                release_unneeded(self._records, self._tokens, holding.grant_id, caller, holding.user_openid)
            raise
        with logged_as(request_id):
            logger.info("TikTok accepted the data request")
            try:
                record = self._keep(caller, request_id, new, holding, deadline)
            except ServiceError as error:
                logger.error("added request not kept", extra=error.log_fields())
                raise type(error)(
                    f"TikTok accepted request_id {request_id}, but it could not be kept ({error.message}); "
                    f"POST /downloads with this request_id once TikTok has prepared it"
                ) from None
            try:
                self._queue.schedule_check(request_id, 0, self._schedule.initial)
            except ServiceError as error:
                # The record is waiting with its next check due: the sweeper re-drives it.
                logger.error("first status check not scheduled", extra=error.log_fields())
            self._events.publish(record)
            return record

    def _keep(
        self, caller: str, request_id: int, new: NewRequest, holding: Holding, deadline: Deadline
    ) -> DownloadRecord:
        grant_id = self._handover.keep_for_request(caller, holding, request_id, deadline)
        now = _now()
        created = self._records.create_waiting(
            request_id,
            caller=caller,
            grant_id=grant_id,
            user_openid=holding.user_openid,
            preparation=Preparation(
                data_format=new.data_format,
                categories=new.categories,
                next_check_at=now + timedelta(seconds=self._schedule.initial),
                give_up_at=now + self._schedule.give_up_after,
            ),
            poll_interval=self._schedule.initial,
        )
        if isinstance(created, Unchanged):  # TikTok handed out an id the service already knows
            raise RecordStoreError(f"request_id {request_id} already has a record")
        return created

    # -- the schedule ----------------------------------------------------------------------------
    def check(self, request_id: int, seq: int, deadline: Deadline) -> CheckOutcome:
        """Status check number ``seq`` of a waiting request (a lifecycle queue message).

        Returns:
            what happened; stale checks (another one is expected, or the request moved on) do nothing.

        Raises:
            ServiceError: only transient failures of AWS (the message comes back).
        """
        with logged_as(request_id):
            record = self._records.get(request_id)
            if record is None or record.status is not DownloadStatus.WAITING or record.poll_seq != seq:
                logger.info("status check is stale", extra={"seq": seq})
                return CheckOutcome("stale")
            return self._check(record, deadline)

    def _check(self, record: DownloadRecord, deadline: Deadline) -> CheckOutcome:
        prep = record.preparation
        if record.grant_id is None or prep is None:
            return CheckOutcome("stale")
        if prep.give_up_at is not None and _now() >= prep.give_up_at:
            return self._fail(record, PreparationTimedOutError("TikTok did not prepare the archive in time"))
        grant_id = record.grant_id
        request_id = record.request_id
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

    def _next(self, record: DownloadRecord, status: RequestStatus | None, interval: int) -> None:
        """Send the next check, then record this one (a lost write repeats a check, never loses one)."""
        interval = min(interval, MAX_DELAY_SECONDS)  # a Retry-After may exceed the schedule's longest
        self._queue.schedule_check(record.request_id, record.poll_seq + 1, interval)
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

    def redrive(self, overdue_for: timedelta) -> int:
        """Check again, now, every waiting request whose next check is ``overdue_for`` late.

        Its chain of delayed messages was lost. Returns how many. A re-driven check carries the expected
        ``seq``: if the chain was only slow, one of the two checks finds the other done and is stale.

        Raises:
            ServiceError: only transient failures of AWS.
        """
        late = self._records.overdue(_now() - overdue_for)
        for record in late:
            with logged_as(record.request_id):
                self._queue.schedule_check(record.request_id, record.poll_seq, 0)
                logger.warning("status check re-driven: the schedule had lost it")
        return len(late)

    # -- TikTok's webhooks ---------------------------------------------------------------------------
    def archive_ready(self, work: ArchiveReadyWork) -> str:
        """TikTok announced the archive ready: a waiting request's download is queued now.

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

    # -- DELETE /downloads/{id} ---------------------------------------------------------------------
    def cancel(self, caller: str, request_id: int, deadline: Deadline) -> DownloadRecord:
        """Cancel ``caller``'s request: at TikTok, with the tokens the service holds, and here for good.

        The polling stops, the stored archive (if any) and open uploads are deleted, a running download
        stops at its next progress report and leaves nothing, the record says ``cancelled`` and the grant
        is released when no other request needs it. Idempotent: a second call answers the same.

        Raises:
            DownloadNotFoundError: no record, or another caller's (the same answer); nothing changed.
            TikTokApiError / ServiceError: TikTok could not cancel (a rate limit, TikTok failing);
                nothing changed: ask again.
        """
        with logged_as(request_id):
            record = self._queries.owned(caller, request_id)
            if record.status in ENDED:
                if record.status is not DownloadStatus.EXPIRED:
                    self._transfer.discard(request_id)  # in case an earlier delete failed
                return record
            if record.grant_id is not None and record.status is not DownloadStatus.COMPLETED:
                self._cancel_at_tiktok(record.grant_id, request_id, deadline)
            ended = self._records.end(request_id, DownloadStatus.CANCELLED)
            self._transfer.discard(request_id)
            if isinstance(ended, Unchanged):
                return ended.record
            logger.info("request cancelled", extra={"was": record.status.value})
            self._events.publish(ended)
            release_grant(self._records, self._tokens, ended)
            return ended

    def _cancel_at_tiktok(self, grant_id: str, request_id: int, deadline: Deadline) -> None:
        """Cancel at TikTok with the user's tokens; a request TikTok already ended is fine."""
        try:
            self._tokens.with_access_token(
                grant_id,
                deadline,
                lambda token: self._tiktok.cancel_request(DownloadRequest(request_id, token), deadline),
            )
        except TikTokApiError as error:
            if error.is_transient:
                raise  # TikTok is busy or failing: nothing changed, the caller asks again
            # Already ended at TikTok (invalid_params), or the held tokens refused (a scope withdrawn, a
            # token TikTok will not take): cancelled here all the same; TikTok expires its request.
            logger.info("not cancelled at TikTok; cancelled here", extra=error.log_fields())
            return
        except ReauthorizationRequiredError:
            logger.warning("the user's tokens are gone: the request is cancelled here, TikTok expires it")
            return
        logger.info("request cancelled at TikTok")


def _moment(seconds: int | None) -> datetime | None:
    return datetime.fromtimestamp(seconds, UTC) if seconds else None
