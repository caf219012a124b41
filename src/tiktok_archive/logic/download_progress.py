"""A running download's progress, recorded; and how a download learns its request ended meanwhile."""

from __future__ import annotations

import time

from tiktok_archive.adapters.download_records import DownloadRecords
from tiktok_archive.adapters.record_writes import Claimed
from tiktok_archive.logic.ownership import EXPIRED_MESSAGE
from tiktok_archive.models.clock import utc_now
from tiktok_archive.models.download_record import ENDED, DownloadStatus, Progress
from tiktok_archive.models.errors import (
    DownloadInProgressError,
    RecordStoreError,
    RequestCancelledError,
    RequestExpiredError,
    ServiceError,
)
from tiktok_archive.observability import logger

# A running download records its progress at most this often.
PROGRESS_EVERY_SECONDS = 3.0


class ProgressReporter:
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
            raise ended_error(held.record.status)
        raise DownloadInProgressError("another invocation took this download over")

    def stopped(self) -> ServiceError | None:
        try:
            record = self._records.get(self._claim.record.request_id)
        except ServiceError:
            # Not known (the store failed, or no time is left to ask it): a failure, as the transfer saw it.
            return None
        return ended_error(record.status) if record is not None and record.status in ENDED else None


def ended_error(status: DownloadStatus) -> ServiceError:
    """The error for a download asked of a request that ended (cancelled, revoked, expired)."""
    if status is DownloadStatus.EXPIRED:
        return RequestExpiredError(EXPIRED_MESSAGE)
    if status is DownloadStatus.REVOKED:
        return RequestCancelledError(
            "the user's data was removed (the user disconnected the app, or was erased), this request's too"
        )
    return RequestCancelledError("this request was cancelled")
