"""Downloads as a caller sees them: one record per ``request_id``, idempotent, owned, observable.

Both triggers call :class:`DownloadService`; it claims the download's record before the transfer runs
(so a duplicate request or a redelivered message does not download again), records the outcome,
publishes it as an event, and hands a stored archive only to a caller whose token TikTok confirms owns
the request. It knows nothing of API Gateway or SQS events.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from tiktok_archive.adapters.download_events import DownloadEvents
from tiktok_archive.adapters.download_jobs import DownloadJobs, open_job_token
from tiktok_archive.adapters.download_records import Claimed, DownloadRecords, Held
from tiktok_archive.adapters.tiktok import TikTokClient
from tiktok_archive.adapters.token_vault import TokenVault
from tiktok_archive.logic.ownership import (
    EXPIRED_MESSAGE,
    NOT_FOUND_MESSAGE,
    confirm_owner,
    logged_as,
    require_ready,
)
from tiktok_archive.logic.tokens import TokenService
from tiktok_archive.logic.transfer import ArchiveTransfer
from tiktok_archive.models.download import DownloadRequest, QueuedJob, format_utc, utc_now
from tiktok_archive.models.download_record import ENDED, DownloadRecord, DownloadStatus, Progress
from tiktok_archive.models.errors import (
    DownloadInProgressError,
    DownloadNotFoundError,
    RecordStoreError,
    RequestCancelledError,
    RequestExpiredError,
    TransferError,
    UnexpectedError,
)
from tiktok_archive.observability import logger

# A claim outlives its invocation's deadline by this much, then lapses by itself: a crashed or killed
# attempt never blocks the download for longer.
LEASE_GRACE_SECONDS = 5
# A queued job that has not started after this long may be queued again by a repeated async request
# or a repeated trigger (a duplicate message is harmless: the claim lets only one of them download).
QUEUED_LEASE = timedelta(minutes=15)


# A running download records its progress at most this often.
PROGRESS_EVERY_SECONDS = 3.0


@dataclass(frozen=True)
class Answer:
    """A download's record, with a fresh link to the archive when it is stored."""

    record: DownloadRecord
    url: str | None = None
    expires_at: datetime | None = None

    def to_body(self) -> dict[str, Any]:
        body = self.record.to_body()
        if self.url is not None and self.expires_at is not None:
            body["url"] = self.url
            body["expires_at"] = format_utc(self.expires_at)
        return body


class DownloadService:
    """Idempotent downloads with records, ownership checks and completion events.

    Args:
        transfer: streams an archive into S3 (knows nothing of records).
        records: the downloads table.
        tiktok: asks TikTok who owns a request.
        events: publishes outcomes.
        jobs: the queue of async downloads, built on first use (only async requests need it).
        vault: opens the tokens of queued jobs, built on first use (only the worker needs it).
        tokens: users' stored grants, built on first use (jobs of requests added with ``POST /requests``).

    Authorization comes first: no record is written, no job queued and no event published for a
    caller until TikTok's Check Status, asked with the caller's token, confirms that its user owns the
    request.
    """

    def __init__(
        self,
        transfer: ArchiveTransfer,
        records: DownloadRecords,
        tiktok: TikTokClient,
        events: DownloadEvents,
        jobs: Callable[[], DownloadJobs],
        vault: Callable[[], TokenVault],
        tokens: Callable[[], TokenService],
    ) -> None:
        self._tokens = tokens
        self._transfer = transfer
        self._records = records
        self._tiktok = tiktok
        self._events = events
        self._jobs = jobs
        self._vault = vault

    def download(self, request: DownloadRequest, remaining_ms: int, *, link: bool = True) -> Answer:
        """Download ``request``'s archive once; a repeat gets the stored one (with a fresh link).

        Args:
            request: what to download, with whose token.
            remaining_ms: the invocation's time left.
            link: whether the caller gets a link (the worker needs none: for it a stored archive is
                done, without asking TikTok anything).

        Raises:
            DownloadNotFoundError: TikTok does not confirm that the token's user owns the request.
            TikTokApiError: TikTok refused the token (``access_token_invalid``, a scope error …).
            ArchiveNotReadyError / RequestExpiredError / RequestCancelledError: TikTok's status.
            DownloadInProgressError: another invocation holds the download (409, with Retry-After).
            TransferError: the download failed; the record says so and an event was published.
        """
        with logged_as(request.request_id):
            return self._download(request, remaining_ms, link=link)

    def _download(self, request: DownloadRequest, remaining_ms: int, *, link: bool) -> Answer:
        if not link:
            stored = self._records.get(request.request_id)
            if stored is not None and stored.status.final:
                return _nothing_to_download(stored)
        return self._claimed_download(request, remaining_ms, link=link)

    def _claimed_download(self, request: DownloadRequest, remaining_ms: int, *, link: bool) -> Answer:
        """Once TikTok confirmed owner and readiness, the download under the record's claim."""
        stored = self._ready_or_stored(request, remaining_ms)
        if stored is not None:
            return self._held(stored, request, link=link)
        bucket, key = self._transfer.location(request.request_id)
        lease = timedelta(seconds=remaining_ms / 1000 + LEASE_GRACE_SECONDS)
        claim = self._records.claim(request.request_id, bucket, key, lease)
        if isinstance(claim, Held):
            return self._held(claim.record, request, link=link)
        reporter = _ProgressReporter(self._records, claim)
        try:
            result = self._transfer.run(request, remaining_ms, reporter.part_done)
        except TransferError as error:
            self._finish_failed(claim, error)
            raise
        except Exception:
            self._finish_failed(claim, UnexpectedError("internal error"))
            raise
        archive = result.archive
        try:
            record = self._records.complete(
                claim, archive.size_bytes, archive.checksum_crc32, result.manifest
            )
            if record.status in ENDED:
                # Cancelled or revoked while the last bytes arrived: the archive must not stay.
                self._transfer.discard(request.request_id)
                raise _ended(record.status)
        except RecordStoreError as error:
            # The archive is stored and the caller gets it; only a later repeat will download again.
            logger.error("download stored but not recorded", extra=error.log_fields())
            record = dataclasses.replace(
                claim.record,
                status=DownloadStatus.COMPLETED,
                size_bytes=archive.size_bytes,
                checksum=archive.checksum_crc32,
                completed_at=utc_now(),
                manifest=result.manifest,
            )
        self._events.publish(record)
        return Answer(record, result.url, result.expires_at)

    def download_job(self, job: QueuedJob, remaining_ms: int) -> Answer:
        """The worker's side of a queued download (no link is handed out).

        Raises:
            MissingTokenError: the message has no usable token (permanent).
            TokenVaultError: KMS could not open the token (transient).
            TransferError: as :meth:`download`.
        """
        try:
            if job.from_grant:
                return self._download_with_grant(job.request_id, remaining_ms)
            token = job.access_token
            if token is None:
                token = open_job_token(self._vault(), job.request_id, job.encrypted_access_token or "")
            return self.download(DownloadRequest(job.request_id, token), remaining_ms, link=False)
        except TransferError as error:
            if not error.is_transient and (job.from_grant or job.encrypted_access_token):
                self._end_queued(job.request_id, error)
            raise

    def _end_queued(self, request_id: int, error: TransferError) -> None:
        """A job the service queued itself failed for good before its download began: say so.

        Only for jobs whose token the service vouched for (the user's grant, or a token it sealed after
        TikTok confirmed the owner): a backend's message may carry anyone's token. A download that began
        recorded its own failure; a record no longer ``queued`` is left as it is.
        """
        with logged_as(request_id):
            record = self._records.get(request_id)
            if record is None or record.status is not DownloadStatus.QUEUED:
                return
            if isinstance(error, RequestExpiredError):
                ended = self._records.end(request_id, DownloadStatus.EXPIRED)
            elif isinstance(error, RequestCancelledError):
                ended = self._records.end(request_id, DownloadStatus.CANCELLED)
            else:
                ended = self._records.end(request_id, DownloadStatus.FAILED, error=error)
            if not isinstance(ended, Held):
                logger.info("queued request ended", extra={"status": ended.status.value})
                self._events.publish(ended)

    def _download_with_grant(self, request_id: int, remaining_ms: int) -> Answer:
        """A request added with ``POST /requests``: its user's stored grant provides the token."""
        with logged_as(request_id):
            record = self._records.get(request_id)
            if record is None or record.grant_id is None:
                raise DownloadNotFoundError("no request added with POST /requests has this request_id")
            if record.status.final:
                return _nothing_to_download(record)
            return self._tokens().with_access_token(
                record.grant_id,
                self._transfer.deadline(remaining_ms),
                lambda token: self._claimed_download(
                    DownloadRequest(request_id, token), remaining_ms, link=False
                ),
            )

    def queue(self, request: DownloadRequest, remaining_ms: int) -> Answer:
        """Queue ``request`` for the worker (``Prefer: respond-async``) once TikTok confirms the owner.

        Returns:
            the queued record; or the record as it is when the download already runs or is queued
            (nothing is queued twice), or is stored (then with a fresh link).

        Raises:
            DownloadNotFoundError: TikTok does not confirm that the token's user owns the request.
            TikTokApiError: TikTok refused the token (``access_token_invalid``, a scope error …).
            RequestExpiredError / RequestCancelledError: the request ended here (cancelled, revoked,
                expired) although TikTok still offers the archive.
            QueueError: KMS or SQS failed; the record says ``failed``.
            ConfigurationError: the queue or the key is not configured.
        """
        with logged_as(request.request_id):
            return self._queue(request, remaining_ms)

    def _queue(self, request: DownloadRequest, remaining_ms: int) -> Answer:
        stored = self._ready_or_stored(request, remaining_ms)
        if stored is not None:
            return self._answer(stored, request)
        jobs = self._jobs()
        queued = self._records.enqueue(request.request_id, QUEUED_LEASE)
        if isinstance(queued, Held):
            if queued.record.status in ENDED:
                raise _ended(queued.record.status)  # as the synchronous path answers: nothing to queue
            return self._answer(queued.record, request)
        try:
            message_id = jobs.send(request.request_id, request.access_token)
        except TransferError as error:
            self._records.abandon(request.request_id, error)
            raise
        logger.info("download queued", extra={"message_id": message_id})
        return Answer(queued)

    def describe(self, request: DownloadRequest, remaining_ms: int) -> Answer:
        """The record of ``request`` for its owner, with a fresh link when the archive is stored.

        Raises:
            DownloadNotFoundError: TikTok does not confirm the owner, or there is no record (the same
                answer).
            TikTokApiError: TikTok refused the token (``access_token_invalid``, a scope error …).
        """
        with logged_as(request.request_id):
            confirm_owner(self._tiktok, request, self._transfer.deadline(remaining_ms))
            record = self._records.get(request.request_id)
            if record is None:
                raise DownloadNotFoundError(NOT_FOUND_MESSAGE)
            return self._answer(record, request)

    def _ready_or_stored(self, request: DownloadRequest, remaining_ms: int) -> DownloadRecord | None:
        """Confirm the owner and that TikTok offers the archive (``None``), or the stored record.

        The stored record when TikTok's four-day window is over but the archive is still kept here
        (``ArchiveRetentionDays`` outlives it): a repeat gets its link, as ``GET`` does.

        Raises:
            as :func:`confirm_owner` and :func:`require_ready`.
        """
        status = confirm_owner(self._tiktok, request, self._transfer.deadline(remaining_ms))
        try:
            require_ready(status)
        except RequestExpiredError:
            stored = self._records.get(request.request_id)
            if stored is None or stored.status is not DownloadStatus.COMPLETED:
                raise
            return stored
        return None

    def _held(self, record: DownloadRecord, request: DownloadRequest, *, link: bool) -> Answer:
        """The answer for a download that could not be claimed (its owner is already confirmed)."""
        if record.status in ENDED:
            if not link:
                return Answer(record)
            raise _ended(record.status)
        if record.status is DownloadStatus.COMPLETED:
            logger.info(
                "download already completed; "
                + ("answered with a fresh link" if link else "not downloaded again")
            )
            return self._answer(record, request) if link else Answer(record)
        now = datetime.now(UTC)
        raise DownloadInProgressError(
            "this request_id is being downloaded by another invocation; ask again later, or "
            f"GET /downloads/{request.request_id}",
            retry_after=str(record.retry_after_seconds(now)),
            # A queued duplicate comes back when the claim lapses, not every 30 s until the DLQ.
            redeliver_after=record.retry_after_seconds(now, longest=None),
        )

    def _answer(self, record: DownloadRecord, request: DownloadRequest) -> Answer:
        if record.status is not DownloadStatus.COMPLETED:
            return Answer(record)
        url, expires_at = self._transfer.link(request.request_id)
        return Answer(record, url, expires_at)

    def _finish_failed(self, claim: Claimed, error: TransferError) -> None:
        try:
            record = self._records.fail(claim, error)
        except RecordStoreError as store_error:
            logger.error("download failure not recorded", extra=store_error.log_fields())
            return
        if record.status is DownloadStatus.FAILED:  # not cancelled or taken over meanwhile
            self._events.publish(record)


class _ProgressReporter:
    """Records a running download's progress at most every :data:`PROGRESS_EVERY_SECONDS`.

    It stops the download (an error raised into the transfer, which aborts the upload) when the record
    says it was cancelled, revoked or taken over meanwhile.
    """

    def __init__(self, records: DownloadRecords, claim: Claimed) -> None:
        self._records = records
        self._claim = claim
        self._started = time.monotonic()
        self._last = self._started

    def part_done(self, parts: int, size: int) -> None:
        now = time.monotonic()
        if now - self._last < PROGRESS_EVERY_SECONDS:
            return
        self._last = now
        progress = Progress(
            bytes_received=size,
            parts_uploaded=parts,
            mib_per_second=round(size / 1048576 / max(now - self._started, 1e-6), 1),
            at=utc_now(),
        )
        try:
            held = self._records.report_progress(self._claim, progress)
        except RecordStoreError as error:
            # Progress is for show: a DynamoDB hiccup must not stop a long download.
            logger.warning("download progress not recorded", extra=error.log_fields())
            return
        if held is None:
            return
        if held.record.status in ENDED:
            logger.info(
                "download stopped: the request ended meanwhile", extra={"status": held.record.status.value}
            )
            raise _ended(held.record.status)
        raise DownloadInProgressError("another invocation took this download over")


def _nothing_to_download(record: DownloadRecord) -> Answer:
    """A job's answer when the record is final: stored, or ended (nothing is downloaded again)."""
    logger.info("nothing to download", extra={"status": record.status.value})
    return Answer(record)


def _ended(status: DownloadStatus) -> TransferError:
    """The error for a download asked of a request that ended (cancelled, revoked, expired)."""
    if status is DownloadStatus.EXPIRED:
        return RequestExpiredError(EXPIRED_MESSAGE)
    if status is DownloadStatus.REVOKED:
        return RequestCancelledError("the user disconnected the app; this request's data was removed")
    return RequestCancelledError("this request was cancelled")
