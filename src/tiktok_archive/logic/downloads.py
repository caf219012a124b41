"""Downloads as a caller sees them: one record per ``request_id``, idempotent, owned, observable.

Both triggers call :class:`DownloadService`; it claims the download's record before the transfer runs
(so a duplicate request or a redelivered message does not download again), records the outcome and
publishes it as an event. It knows nothing of API Gateway or SQS events.

Authorization comes first: TikTok's Check Status, asked with the user's token, must confirm that the
token's user owns the request before anything is written, queued or published. And a record is its
caller's: the claim is conditional on it, so another caller — even one holding the user's token — gets
the same 404 as for an unknown request, and changes nothing.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from tiktok_archive.adapters.download_events import DownloadEvents
from tiktok_archive.adapters.download_jobs import DownloadJobs, open_job_token
from tiktok_archive.adapters.download_records import Claimed, DownloadRecords, Unchanged
from tiktok_archive.adapters.tiktok import TikTokClient
from tiktok_archive.adapters.token_vault import TokenVault
from tiktok_archive.logic.grant_release import release_grant, release_unneeded
from tiktok_archive.logic.handover import Holding, TokenHandover
from tiktok_archive.logic.ownership import (
    EXPIRED_MESSAGE,
    NOT_FOUND_MESSAGE,
    confirm_owner,
    logged_as,
    require_ready,
)
from tiktok_archive.logic.tokens import TokenService
from tiktok_archive.logic.transfer import ArchiveTransfer
from tiktok_archive.models.clock import utc_now
from tiktok_archive.models.deadline import Deadline
from tiktok_archive.models.download import DownloadRequest
from tiktok_archive.models.download_record import (
    ENDED,
    Answer,
    DownloadRecord,
    DownloadStatus,
    Owner,
    Progress,
)
from tiktok_archive.models.errors import (
    DownloadInProgressError,
    DownloadNotFoundError,
    RecordStoreError,
    RequestCancelledError,
    RequestExpiredError,
    ServiceError,
    UnexpectedError,
)
from tiktok_archive.models.messages import DownloadJob
from tiktok_archive.models.portability import HandedTokens
from tiktok_archive.observability import logger

# A claim outlives its invocation's deadline by this much, then lapses by itself: a crashed or killed
# attempt never blocks the download for longer.
LEASE_GRACE_SECONDS = 5
# A queued job that has not started after this long may be queued again by a repeated async request
# or a repeated trigger (a duplicate message is harmless: the claim lets only one of them download).
QUEUED_LEASE = timedelta(minutes=15)
# A running download records its progress at most this often.
PROGRESS_EVERY_SECONDS = 3.0
# Where a job of the service's own may pick a download up: queued (or retried after a failure, or taken
# over from a crashed attempt) — never a request TikTok is still preparing.
_JOB_STATUSES = frozenset({DownloadStatus.QUEUED, DownloadStatus.IN_PROGRESS, DownloadStatus.FAILED})


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
        handover: takes the tokens a caller hands over, built on first use.
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
        handover: Callable[[], TokenHandover],
    ) -> None:
        self._tokens = tokens
        self._handover = handover
        self._transfer = transfer
        self._records = records
        self._tiktok = tiktok
        self._events = events
        self._jobs = jobs
        self._vault = vault

    # -- POST /downloads -----------------------------------------------------------------------------
    def download(self, caller: str, request_id: int, handed: HandedTokens, deadline: Deadline) -> Answer:
        """Download ``request_id``'s archive once for ``caller``; a repeat gets the stored one (a fresh link).

        Raises:
            DownloadNotFoundError: TikTok does not confirm that the token's user owns the request, or the
                record is another caller's.
            TikTokApiError: TikTok refused the token (``access_token_invalid``, a scope error …).
            ArchiveNotReadyError / RequestExpiredError / RequestCancelledError: TikTok's status.
            DownloadInProgressError: another invocation holds the download (409, with Retry-After).
            OpenIdMismatchError / ReauthorizationRequiredError: the refresh token handed over.
            ServiceError: the download failed; the record says so and an event was published.
        """
        with logged_as(request_id):
            holding, owner = self._take(caller, handed, deadline)
            return self._letting_go(
                owner,
                lambda: self._handover().act(
                    holding,
                    deadline,
                    lambda token: self._claimed_download(
                        DownloadRequest(request_id, token), owner, deadline, link=True
                    ),
                ),
            )

    def queue(self, caller: str, request_id: int, handed: HandedTokens, deadline: Deadline) -> Answer:
        """Queue ``request_id`` for the worker (``Prefer: respond-async``) once TikTok confirms the owner.

        Returns:
            the queued record; or the record as it is when the download already runs or is queued
            (nothing is queued twice), or is stored (then with a fresh link).

        Raises:
            as :meth:`download`; and QueueError: KMS or SQS failed (the record says ``failed``);
            ConfigurationError: the queue or the key is not configured.
        """
        with logged_as(request_id):
            holding, owner = self._take(caller, handed, deadline)
            return self._letting_go(
                owner,
                lambda: self._handover().act(
                    holding,
                    deadline,
                    lambda token: self._queued(DownloadRequest(request_id, token), owner, deadline),
                ),
            )

    def _queued(self, request: DownloadRequest, owner: Owner, deadline: Deadline) -> Answer:
        request_id = request.request_id
        stored = self._ready_or_stored(request, owner, deadline)
        if stored is not None:
            return self._answer(stored)
        jobs = self._jobs()
        queued = self._records.enqueue(request_id, QUEUED_LEASE, owner)
        if isinstance(queued, Unchanged):
            if not owner.may_act_on(queued.record):
                raise DownloadNotFoundError(NOT_FOUND_MESSAGE)
            if queued.record.status in ENDED:
                raise _ended(queued.record.status)  # as the synchronous path answers: nothing to queue
            return self._answer(queued.record)
        try:
            if owner.grant_id is not None:
                jobs.send_for_grant(request_id)
                message_id = None
            else:
                message_id = jobs.send(request_id, request.access_token)
        except ServiceError as error:
            self._records.abandon(request_id, error)
            raise
        logger.info("download queued", extra={"message_id": message_id})
        return Answer(queued)

    def _take(self, caller: str, handed: HandedTokens, deadline: Deadline) -> tuple[Holding, Owner]:
        holding = self._handover().take(caller, handed, deadline)
        return holding, Owner(caller, holding.user_openid, holding.grant_id)

    def _letting_go(self, owner: Owner, work: Callable[[], Answer]) -> Answer:
        """``work``'s answer; the grant of the tokens just handed over goes if no request needs it then.

        Tokens handed over with a request that is stored, ended, failed for good or another caller's are
        not kept; a transient failure keeps them (the caller's retry joins the grant).
        """
        try:
            answer = work()
        except ServiceError as error:
            if not error.is_transient:
                self._let_go(owner)
            raise
        if answer.record.status.final:
            self._let_go(owner)
        return answer

    def _let_go(self, owner: Owner) -> None:
        if owner.grant_id is not None:
            release_unneeded(self._records, self._tokens(), owner.grant_id, owner.caller, owner.user_openid)

    # -- the worker ----------------------------------------------------------------------------------
    def download_job(self, job: DownloadJob, deadline: Deadline) -> Answer:
        """The worker's side of a queued download (no link is handed out).

        A backend's own message (a token in clear) acts on a record no API caller made; a job the
        service queued (a token it sealed, or the user's grant) acts on the record it made.

        Raises:
            MissingTokenError: the message has no usable token (permanent).
            TokenVaultError: KMS could not open the token (transient).
            ServiceError: as :meth:`download`.
        """
        try:
            with logged_as(job.request_id):
                if job.from_grant:
                    return self._download_with_grant(job.request_id, deadline)
                if job.access_token is not None:
                    owner = Owner(None)
                    token = job.access_token
                else:
                    owner = Owner(None, service=True)
                    token = open_job_token(self._vault(), job.request_id, job.encrypted_access_token or "")
                stored = self._records.get(job.request_id)
                if stored is not None and stored.status.final:
                    return _nothing_to_download(stored)
                return self._claimed_download(
                    DownloadRequest(job.request_id, token), owner, deadline, link=False
                )
        except ServiceError as error:
            if not error.is_transient and (job.from_grant or job.encrypted_access_token):
                self._end_queued(job.request_id, error)
            raise

    def _download_with_grant(self, request_id: int, deadline: Deadline) -> Answer:
        """A request the lifecycle queued: its user's stored grant provides the token."""
        record = self._records.get(request_id)
        if record is None or record.grant_id is None:
            raise DownloadNotFoundError("no request added with POST /requests has this request_id")
        if record.status.final:
            return _nothing_to_download(record)
        if record.status not in _JOB_STATUSES:
            logger.info(
                "a job for a request that is not ready here is ignored", extra={"status": record.status.value}
            )
            return Answer(record)
        owner = Owner(None, service=True)
        return self._tokens().with_access_token(
            record.grant_id,
            deadline,
            lambda token: self._claimed_download(
                DownloadRequest(request_id, token), owner, deadline, link=False
            ),
        )

    def _end_queued(self, request_id: int, error: ServiceError) -> None:
        """A job the service queued itself failed for good before its download began: say so.

        Only for jobs whose token the service vouched for (the user's grant, or a token it sealed after
        TikTok confirmed the owner): a backend's message may carry anyone's token. A download that began
        recorded its own failure (its grant goes if no request needs it any longer); a record no longer
        ``queued`` is left as it is.
        """
        with logged_as(request_id):
            record = self._records.get(request_id)
            if record is None:
                return
            if record.status is not DownloadStatus.QUEUED:
                self._release(record)
                return
            if isinstance(error, RequestExpiredError):
                ended = self._records.end(request_id, DownloadStatus.EXPIRED)
            elif isinstance(error, RequestCancelledError):
                ended = self._records.end(request_id, DownloadStatus.CANCELLED)
            else:
                ended = self._records.end(request_id, DownloadStatus.FAILED, error=error)
            if not isinstance(ended, Unchanged):
                logger.info("queued request ended", extra={"status": ended.status.value})
                self._events.publish(ended)
                self._release(ended)

    # -- one download ----------------------------------------------------------------------------------
    def _claimed_download(
        self, request: DownloadRequest, owner: Owner, deadline: Deadline, *, link: bool
    ) -> Answer:
        """Once TikTok confirmed owner and readiness, the download under the record's claim."""
        stored = self._ready_or_stored(request, owner, deadline)
        if stored is not None:
            return self._held(stored, request, link=link)
        bucket, key = self._transfer.location(request.request_id)
        lease = timedelta(seconds=max(0.0, deadline.remaining()) + LEASE_GRACE_SECONDS)
        claim = self._records.claim(request.request_id, bucket, key, lease, owner)
        if isinstance(claim, Unchanged):
            if not owner.may_act_on(claim.record):
                logger.info("the record of this request is another caller's")
                raise DownloadNotFoundError(NOT_FOUND_MESSAGE)
            return self._held(claim.record, request, link=link)
        reporter = _ProgressReporter(self._records, claim)
        try:
            result = self._transfer.run(request, deadline, reporter)
        except ServiceError as error:
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
        self._release(record)
        return Answer(record, result.url, result.expires_at)

    def _ready_or_stored(
        self, request: DownloadRequest, owner: Owner, deadline: Deadline
    ) -> DownloadRecord | None:
        """Confirm the owner and that TikTok offers the archive (``None``), or the stored record.

        The stored record when TikTok's four-day window is over but the archive is still kept here
        (``ArchiveRetentionDays`` outlives it): a repeat gets its link, as ``GET`` does.

        Raises:
            as :func:`confirm_owner` and :func:`require_ready`; DownloadNotFoundError for a stored
            record of another caller's.
        """
        status = confirm_owner(self._tiktok, request, deadline)
        try:
            require_ready(status)
        except RequestExpiredError:
            stored = self._records.get(request.request_id)
            if stored is None or stored.status is not DownloadStatus.COMPLETED:
                raise
            if not owner.may_act_on(stored):
                raise DownloadNotFoundError(NOT_FOUND_MESSAGE) from None
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
            return self._answer(record) if link else Answer(record)
        now = datetime.now(UTC)
        raise DownloadInProgressError(
            "this request_id is being downloaded by another invocation; ask again later, or "
            f"GET /downloads/{request.request_id}",
            retry_after=str(record.retry_after_seconds(now)),
            # A queued duplicate comes back when the claim lapses, not every 30 s until the DLQ.
            redeliver_after=record.retry_after_seconds(now, longest=None),
        )

    def _answer(self, record: DownloadRecord) -> Answer:
        if record.status is not DownloadStatus.COMPLETED:
            return Answer(record)
        url, expires_at = self._transfer.link(record.request_id)
        return Answer(record, url, expires_at)

    def _release(self, record: DownloadRecord) -> None:
        if record.grant_id is not None:
            release_grant(self._records, self._tokens(), record)

    def _finish_failed(self, claim: Claimed, error: ServiceError) -> None:
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
    says it was cancelled, revoked or taken over meanwhile; and tells a failed transfer whether the
    record ended meanwhile (a cancellation or a purge aborts the upload from outside: a stop, not a
    failure).
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

    def stopped(self) -> ServiceError | None:
        try:
            record = self._records.get(self._claim.record.request_id)
        except RecordStoreError:
            return None
        return _ended(record.status) if record is not None and record.status in ENDED else None


def _nothing_to_download(record: DownloadRecord) -> Answer:
    """A job's answer when the record is final: stored, or ended (nothing is downloaded again)."""
    logger.info("nothing to download", extra={"status": record.status.value})
    return Answer(record)


def _ended(status: DownloadStatus) -> ServiceError:
    """The error for a download asked of a request that ended (cancelled, revoked, expired)."""
    if status is DownloadStatus.EXPIRED:
        return RequestExpiredError(EXPIRED_MESSAGE)
    if status is DownloadStatus.REVOKED:
        return RequestCancelledError(
            "the user's data was removed (the user disconnected the app, or was erased), this request's too"
        )
    return RequestCancelledError("this request was cancelled")
