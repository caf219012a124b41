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
grant, refreshed on the way (:class:`TokenService`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from tiktok_archive.adapters.download_events import DownloadEvents
from tiktok_archive.adapters.download_jobs import DownloadJobs
from tiktok_archive.adapters.download_records import DownloadRecords, Held
from tiktok_archive.adapters.grants import grant_id_for, user_grant_id
from tiktok_archive.adapters.lifecycle_queue import MAX_DELAY_SECONDS, LifecycleQueue
from tiktok_archive.adapters.tiktok import TikTokClient
from tiktok_archive.logic.downloads import QUEUED_LEASE
from tiktok_archive.logic.ownership import NOT_FOUND_MESSAGE, NOT_OWNED, confirm_owner, logged_as
from tiktok_archive.logic.tokens import TokenService
from tiktok_archive.logic.transfer import ArchiveTransfer
from tiktok_archive.models.deadline import Deadline
from tiktok_archive.models.download import DownloadRequest
from tiktok_archive.models.download import utc_now as _now  # tests freeze this module's clock
from tiktok_archive.models.download_record import ENDED, DownloadRecord, DownloadStatus, Preparation
from tiktok_archive.models.errors import (
    DownloadNotFoundError,
    PreparationTimedOutError,
    RecordStoreError,
    TikTokApiError,
    TransferError,
)
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
        events: publishes state changes.
        queue: the lifecycle queue (status checks).
        jobs: the download queue, built on first use.
        transfer: deletes a cancelled request's stored archive, and gives the invocation's deadline.
        schedule: the status checks' timing.
    """

    def __init__(
        self,
        tiktok: TikTokClient,
        records: DownloadRecords,
        tokens: TokenService,
        events: DownloadEvents,
        queue: LifecycleQueue,
        jobs: Callable[[], DownloadJobs],
        transfer: ArchiveTransfer,
        schedule: Schedule,
    ) -> None:
        self._tiktok = tiktok
        self._records = records
        self._tokens = tokens
        self._events = events
        self._queue = queue
        self._jobs = jobs
        self._transfer = transfer
        self._schedule = schedule

    # -- POST /requests ------------------------------------------------------------------------------
    def add(self, access_token: str, new: NewRequest, remaining_ms: int) -> DownloadRecord:
        """Add a data request at TikTok with the caller's token, keep the user's tokens, start waiting.

        Returns:
            the ``waiting`` record.

        Raises:
            TikTokApiError: TikTok refused (``scope_permission_missed`` once a ``*.single`` scope was
                used, a bad token …); nothing was kept.
            RecordStoreError / TokenVaultError: TikTok accepted the request but it could not be kept;
                the message names the ``request_id`` so that it can still be downloaded.
        """
        deadline = self._transfer.deadline(remaining_ms)
        user = self._confirmed_user(access_token, new.open_id, deadline)
        request_id = self._tiktok.add_request(access_token, new.data_format, list(new.categories), deadline)
        with logged_as(request_id):
            logger.info("TikTok accepted the data request")
            try:
                record = self._keep(request_id, access_token, new, user)
            except TransferError as error:
                logger.error("added request not kept", extra=error.log_fields())
                raise type(error)(
                    f"TikTok accepted request_id {request_id}, but it could not be kept ({error.message}); "
                    f"POST /downloads with this request_id once TikTok has prepared it"
                ) from None
            try:
                self._queue.schedule_check(request_id, 0, self._schedule.initial)
            except TransferError as error:
                # The record is waiting with its next check due: the sweeper re-drives it.
                logger.error("first status check not scheduled", extra=error.log_fields())
            self._events.publish(record)
            return record

    def _confirmed_user(self, access_token: str, open_id: str | None, deadline: Deadline) -> str | None:
        """``open_id`` if the caller's tokens may join that user's grant; ``None`` keeps them apart.

        ``open_id`` is the caller's word. It starts a user's grant when there is none; it joins an
        existing one only once TikTok, asked with the caller's token, confirms that the token's user owns
        the grant's latest request — a wrong or forged ``open_id`` must not replace another user's tokens
        (their refresh token rotates: replaced, it is lost). Not confirmed, the request keeps the
        caller's tokens in a grant of its own, linked to no user.

        Raises:
            TikTokApiError: TikTok refused the caller's token (nothing was added).
            RecordStoreError: DynamoDB failed.
        """
        if open_id is None:
            return None
        grant = self._tokens.find(user_grant_id(open_id))
        if grant is None:
            return open_id
        if grant.last_request_id is not None:
            try:
                confirm_owner(self._tiktok, DownloadRequest(grant.last_request_id, access_token), deadline)
                return open_id
            except DownloadNotFoundError:
                pass
        logger.warning(
            "TikTok did not confirm that the caller's token is the open_id's user: "
            "the request is kept apart from that user's grant"
        )
        return None

    def _keep(self, request_id: int, access_token: str, new: NewRequest, user: str | None) -> DownloadRecord:
        grant_id = grant_id_for(user, request_id)
        self._tokens.store(grant_id, access_token, new.refresh_token, user, request_id)
        now = _now()
        created = self._records.create_waiting(
            request_id,
            grant_id=grant_id,
            user_openid=user,
            preparation=Preparation(
                data_format=new.data_format,
                categories=new.categories,
                next_check_at=now + timedelta(seconds=self._schedule.initial),
                give_up_at=now + self._schedule.give_up_after,
            ),
            poll_interval=self._schedule.initial,
        )
        if isinstance(created, Held):  # TikTok handed out an id the service already knows
            raise RecordStoreError(f"request_id {request_id} already has a record")
        return created

    # -- the schedule ----------------------------------------------------------------------------
    def check(self, request_id: int, seq: int, remaining_ms: int) -> CheckOutcome:
        """Status check number ``seq`` of a waiting request (a lifecycle queue message).

        Returns:
            what happened; stale checks (another one is expected, or the request moved on) do nothing.

        Raises:
            TransferError: only transient failures of AWS (the message comes back).
        """
        with logged_as(request_id):
            record = self._records.get(request_id)
            if record is None or record.status is not DownloadStatus.WAITING or record.poll_seq != seq:
                logger.info("status check is stale", extra={"seq": seq})
                return CheckOutcome("stale")
            return self._check(record, remaining_ms)

    def _check(self, record: DownloadRecord, remaining_ms: int) -> CheckOutcome:
        prep = record.preparation
        if record.grant_id is None or prep is None:
            return CheckOutcome("stale")
        if prep.give_up_at is not None and _now() >= prep.give_up_at:
            return self._fail(record, PreparationTimedOutError("TikTok did not prepare the archive in time"))
        deadline = self._transfer.deadline(remaining_ms)
        grant_id = record.grant_id
        request_id = record.request_id
        try:
            status = self._tokens.with_access_token(
                grant_id,
                deadline,
                lambda token: self._tiktok.check_request(DownloadRequest(request_id, token), deadline),
            )
        except TransferError as error:
            return self._check_failed(record, error)
        if status is None:
            return self._fail(record, DownloadNotFoundError(NOT_FOUND_MESSAGE))
        self._learn_user(record, grant_id)
        return self._follow(record, status)

    def _check_failed(self, record: DownloadRecord, error: TransferError) -> CheckOutcome:
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
            if not isinstance(ready, Held):
                logger.info("archive ready at TikTok; download queued")
                self._events.publish(ready)
            return CheckOutcome("ready")
        if status.status in (TikTokStatus.EXPIRED, TikTokStatus.CANCELLED):
            final = (
                DownloadStatus.EXPIRED if status.status == TikTokStatus.EXPIRED else DownloadStatus.CANCELLED
            )
            ended = self._records.end(record.request_id, final, seq=seq, tiktok_status=status.status)
            if not isinstance(ended, Held):
                logger.info("request ended at TikTok", extra={"tiktok_status": status.status})
                self._events.publish(ended)
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

    def _fail(self, record: DownloadRecord, error: TransferError) -> CheckOutcome:
        logger.warning("waiting request failed", extra=error.log_fields())
        ended = self._records.end(record.request_id, DownloadStatus.FAILED, error=error, seq=record.poll_seq)
        if not isinstance(ended, Held):
            self._events.publish(ended)
        return CheckOutcome("failed")

    def _learn_user(self, record: DownloadRecord, grant_id: str) -> None:
        if record.user_openid is None:
            user = self._tokens.user_of(grant_id)
            if user is not None:
                self._records.set_user(record.request_id, user)

    def redrive(self, overdue_for: timedelta) -> int:
        """Check again, now, every waiting request whose next check is ``overdue_for`` late.

        Its chain of delayed messages was lost. Returns how many. A re-driven check carries the expected
        ``seq``: if the chain was only slow, one of the two checks finds the other done and is stale.

        Raises:
            TransferError: only transient failures of AWS.
        """
        late = self._records.overdue(_now() - overdue_for)
        for record in late:
            with logged_as(record.request_id):
                self._queue.schedule_check(record.request_id, record.poll_seq, 0)
                logger.warning("status check re-driven: the schedule had lost it")
        return len(late)

    # -- TikTok's webhooks ---------------------------------------------------------------------------
    def archive_ready(self, request_id: int) -> str:
        """TikTok announced the archive ready: a waiting request's download is queued now.

        Returns:
            ``"queued"``; ``"unknown"`` for a request the service never saw (acknowledged, logged);
            ``"nothing"`` for one already queued, downloading, done or ended.

        Raises:
            TransferError: only transient failures of AWS.
        """
        with logged_as(request_id):
            record = self._records.get(request_id)
            if record is None:
                logger.info("TikTok announced an archive ready for a request this service does not know")
                return "unknown"
            if record.status is not DownloadStatus.WAITING or record.grant_id is None:
                return "nothing"
            self._jobs().send_for_grant(request_id)
            queued = self._records.queue_now(request_id, READY_LEASE)
            if isinstance(queued, Held):
                return "nothing"
            logger.info("archive ready (webhook); download queued, status checks stopped")
            self._events.publish(queued)
            return "queued"

    def revoke_user(self, user_openid: str, reason: int | None) -> int:
        """The user disconnected the app: purge everything of theirs.

        Every record of the user (the ``by-user`` index): its archive deleted, its schedule stopped, a
        running download stopped at its next progress report, the record left ``revoked`` (a tombstone
        that expires with the retention period); every grant of theirs erased; one ``Authorization
        Removed`` event with the count. Running it again changes nothing and publishes nothing.

        Returns:
            how many records this call revoked.

        Raises:
            TransferError: only transient failures of AWS (the message comes back and finishes the job).
        """
        records = self._records.of_user(user_openid)
        grants = {user_grant_id(user_openid)} | {r.grant_id for r in records if r.grant_id}
        revoked = []
        for record in records:
            with logged_as(record.request_id):
                # The record ends first: a download finishing meanwhile finds its claim gone and deletes
                # its own archive; then whatever is stored goes (again on a redelivery, in case an
                # earlier delete failed — deleting nothing is harmless).
                if record.status is not DownloadStatus.REVOKED:
                    ended = self._records.end(record.request_id, DownloadStatus.REVOKED)
                    if not isinstance(ended, Held) or ended.record.status is DownloadStatus.REVOKED:
                        revoked.append(record.request_id)
                self._transfer.discard(record.request_id)
        erased = 0
        for grant_id in sorted(grants):
            erased += self._tokens.erase(grant_id)
        if revoked or erased:
            logger.info(
                "user's data purged", extra={"revoked_requests": len(revoked), "erased_grants": erased}
            )
            self._events.publish_user_event(
                "Authorization Removed",
                {
                    "open_id": user_openid,
                    "reason": reason,
                    "requests_revoked": len(revoked),
                    "request_ids": [str(i) for i in revoked],
                },
            )
        return len(revoked)

    # -- DELETE /downloads/{id} ---------------------------------------------------------------------
    def cancel(self, request: DownloadRequest, remaining_ms: int) -> DownloadRecord:
        """Cancel the owner's request: at TikTok while it is still pending, and here for good.

        The polling stops, the stored archive (if any) is deleted, a running download stops at its next
        progress report and leaves nothing, and the record says ``cancelled``. Idempotent: a second call
        answers the same.

        Raises:
            DownloadNotFoundError: TikTok does not confirm the owner, or the service has no record.
            TikTokApiError: TikTok refused (the token, or the cancellation); nothing changed.
        """
        with logged_as(request.request_id):
            deadline = self._transfer.deadline(remaining_ms)
            status = confirm_owner(self._tiktok, request, deadline)
            record = self._records.get(request.request_id)
            if record is None:
                raise DownloadNotFoundError(NOT_FOUND_MESSAGE)
            if record.status in ENDED:
                if record.status is not DownloadStatus.EXPIRED:
                    self._transfer.discard(request.request_id)  # in case an earlier delete failed
                return record
            if status.status == TikTokStatus.PENDING:
                self._tiktok.cancel_request(request, deadline)
                logger.info("request cancelled at TikTok")
            ended = self._records.end(request.request_id, DownloadStatus.CANCELLED)
            self._transfer.discard(request.request_id)
            if isinstance(ended, Held):
                return ended.record
            logger.info("request cancelled", extra={"was": record.status.value})
            self._events.publish(ended)
            return ended


def _moment(seconds: int | None) -> datetime | None:
    return datetime.fromtimestamp(seconds, UTC) if seconds else None
