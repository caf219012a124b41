"""One download under its record's claim: TikTok's word first, then the claim, the transfer, the outcome.

Both triggers' use cases (:mod:`caller_downloads`, :mod:`queued_downloads`) run a download through
:class:`ClaimedDownload`. Authorization comes first: TikTok's Check Status, asked with the user's token,
must confirm that the token's user owns the request before anything is written, queued or published —
except for a job the service queued for a user's grant, whose owner and readiness TikTok already stated
(``known_ready``: the download itself asks TikTok, and a refusal is explained by Check Status). Then the
record is claimed (a lease: a duplicate request or a redelivered message does not download
again, and a record is its caller's — another caller, even one holding the user's token, gets the same
404 as for an unknown request), the archive streamed into S3 (:class:`ArchiveTransfer`, which knows
nothing of records), its progress recorded, and the outcome recorded and published; a grant no request
needs any longer is released.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from tiktok_archive.adapters.download_events import DownloadEvents
from tiktok_archive.adapters.download_records import DownloadRecords
from tiktok_archive.adapters.record_writes import Claimed, Unchanged
from tiktok_archive.adapters.tiktok import TikTokClient
from tiktok_archive.logic.download_progress import ProgressReporter, ended_error
from tiktok_archive.logic.grant_release import release_grant
from tiktok_archive.logic.ownership import (
    NOT_FOUND_MESSAGE,
    NOT_OWNED,
    confirm_owner,
    require_ready,
)
from tiktok_archive.logic.tokens import INVALID_TOKEN, TokenService
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
from tiktok_archive.models.tiktok_errors import TikTokApiError, TikTokBudgetExhaustedError
from tiktok_archive.observability import logger

# A claim outlives its invocation's deadline by this much, then lapses by itself: a crashed or killed
# attempt never blocks the download for longer.
LEASE_GRACE_SECONDS = 5
# The record's end when TikTok's status explains a refused download.
_ENDED_BY: dict[type[ServiceError], DownloadStatus] = {
    RequestExpiredError: DownloadStatus.EXPIRED,
    RequestCancelledError: DownloadStatus.CANCELLED,
}


class ClaimedDownload:
    """One download under its record's claim: idempotent, owned, its outcome recorded and published.

    Args:
        transfer: streams an archive into S3 (knows nothing of records).
        records: the downloads table.
        tiktok: asks TikTok who owns a request.
        events: publishes outcomes.
        tokens: users' stored grants, built on first use (released once no request needs them).
    """

    def __init__(
        self,
        transfer: ArchiveTransfer,
        records: DownloadRecords,
        tiktok: TikTokClient,
        events: DownloadEvents,
        tokens: Callable[[], TokenService],
    ) -> None:
        self._transfer = transfer
        self._records = records
        self._tiktok = tiktok
        self._events = events
        self._tokens = tokens

    def run(
        self,
        request: DownloadRequest,
        owner: Owner,
        deadline: Deadline,
        *,
        link: bool,
        known_ready: bool = False,
    ) -> Answer:
        """Download ``request``'s archive for ``owner`` under the record's claim, once TikTok confirmed both.

        ``link``: the answer carries a presigned link (the API's), and a request that ended is an error;
        without (the worker's), the record is answered as it is.

        ``known_ready``: TikTok said so already — the service added the request with its user's grant
        (TikTok answered that user with this ``request_id``) and TikTok announced it ready (a status check
        saw ``downloading``, its signed webhook said ``download.ready``, or ``POST /downloads`` confirmed
        it). Then the download is asked for at once, without a Check Status call first (at scale, that
        call competes with the status checks for the same endpoint's quota); only when TikTok refuses
        the download does Check Status say why (expired, cancelled, not the user's).

        Returns:
            the completed record (with a link when asked); or the record as it is when it was stored
            already, or it ended (``link=False``).

        Raises:
            DownloadNotFoundError: TikTok does not confirm that the token's user owns the request, or the
                record is not ``owner``'s to act on.
            TikTokApiError / ArchiveNotReadyError / RequestExpiredError / RequestCancelledError: TikTok's
                answer or status (see :func:`confirm_owner`).
            DownloadInProgressError: another invocation holds the download (409, with Retry-After).
            ServiceError: the download failed; the record says so and an event was published.
        """
        if not known_ready:
            stored = self.stored_or_ready(request, owner, deadline)
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
        reporter = ProgressReporter(self._records, claim)
        try:
            result = self._transfer.run(request, deadline, reporter)
        except ServiceError as error:
            if known_ready and isinstance(error, TikTokApiError) and error.error_code == INVALID_TOKEN:
                # TikTok refused the token, not the download: the record is as before (``use`` of
                # :meth:`TokenService.with_access_token` changes nothing TikTok did not accept).
                self._give_back(claim)
                raise
            explained = self._explained(request, owner, deadline, error) if known_ready else error
            if explained is not error and explained.is_transient:
                # TikTok's status says "later" (still pending, a rate limit, the quota): no outcome yet.
                self._give_back(claim)
                raise explained from None
            self._finish_failed(claim, explained)
            if explained is error:
                raise
            raise explained from None
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
                raise ended_error(record.status)
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
        self.release(record)
        return Answer(record, result.url, result.expires_at)

    def stored_or_ready(
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
            raise ended_error(record.status)
        if record.status is DownloadStatus.COMPLETED:
            logger.info(
                "download already completed; "
                + ("answered with a fresh link" if link else "not downloaded again")
            )
            return self.answer(record) if link else Answer(record)
        now = datetime.now(UTC)
        raise DownloadInProgressError(
            "this request_id is being downloaded by another invocation; ask again later, or "
            f"GET /downloads/{request.request_id}",
            retry_after=str(record.retry_after_seconds(now)),
            # A queued duplicate comes back when the claim lapses, not every 30 s until the DLQ.
            redeliver_after=record.retry_after_seconds(now, longest=None),
        )

    def answer(self, record: DownloadRecord) -> Answer:
        """The record's answer: with a fresh presigned link once its archive is stored."""
        if record.status is not DownloadStatus.COMPLETED:
            return Answer(record)
        url, expires_at = self._transfer.link(record.request_id)
        return Answer(record, url, expires_at)

    def release(self, record: DownloadRecord) -> None:
        """Delete the record's grant if no request needs it any longer (never raises)."""
        if record.grant_id is not None:
            release_grant(self._records, self._tokens(), record)

    def _give_back(self, claim: Claimed) -> None:
        """The record ``queued`` again, as before its claim (never raises: a claim kept lapses)."""
        try:
            self._records.unclaim(claim)
        except RecordStoreError as store_error:
            logger.warning("claim not given back", extra=store_error.log_fields())

    def _explained(
        self, request: DownloadRequest, owner: Owner, deadline: Deadline, error: ServiceError
    ) -> ServiceError:
        """Why TikTok refused to download a request it had said was ready: its Check Status says.

        TikTok's download answers ``invalid_params`` alike for a request that expired, was cancelled or
        is not the token's user's; any other failure is its own explanation.
        """
        if not (isinstance(error, TikTokApiError) and error.error_code == NOT_OWNED):
            return error
        try:
            self.stored_or_ready(request, owner, deadline)
        except ServiceError as explanation:
            logger.info("TikTok refused the download", extra=explanation.log_fields())
            return explanation
        return error

    def _finish_failed(self, claim: Claimed, error: ServiceError) -> None:
        try:
            end = _ENDED_BY.get(type(error))
            if end is not None:
                ended = self._records.end(claim.record.request_id, end)
                if not isinstance(ended, Unchanged):
                    self._events.publish(ended)
                    self.release(ended)
                return
            record = self._records.fail(claim, error)
        except RecordStoreError as store_error:
            logger.error("download failure not recorded", extra=store_error.log_fields())
            return
        # Not cancelled or taken over meanwhile; and not deferred for TikTok's quota, which is no outcome:
        # the work comes back (the record says why it waits, and a later claim takes it).
        if record.status is DownloadStatus.FAILED and not isinstance(error, TikTokBudgetExhaustedError):
            self._events.publish(record)
