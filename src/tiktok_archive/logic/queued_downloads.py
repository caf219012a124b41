"""The worker's jobs: a queued download, run from the message the download queue delivered.

Three kinds of job (:class:`~tiktok_archive.models.messages.DownloadJob`): a backend's own message (an
access token in clear), which acts on a record no API caller made; one ``POST /downloads`` queued with a
token the service sealed after TikTok confirmed the owner; one the lifecycle queued for a request added
with ``POST /requests``, whose user's grant provides the token. The last two act on the record the
service made, and when they fail for good before their download began, the record says so. The download
itself runs under its claim (:class:`ClaimedDownload`). It knows nothing of SQS events.
"""

from __future__ import annotations

from collections.abc import Callable

from tiktok_archive.adapters.download_events import DownloadEvents
from tiktok_archive.adapters.download_jobs import open_job_token
from tiktok_archive.adapters.download_records import DownloadRecords
from tiktok_archive.adapters.record_writes import Unchanged
from tiktok_archive.adapters.token_vault import TokenVault
from tiktok_archive.logic.claimed_download import ClaimedDownload
from tiktok_archive.logic.ownership import logged_as
from tiktok_archive.logic.tokens import TokenService
from tiktok_archive.models.deadline import Deadline
from tiktok_archive.models.download import DownloadRequest
from tiktok_archive.models.download_record import Answer, DownloadRecord, DownloadStatus, Owner
from tiktok_archive.models.errors import (
    ArchiveNotReadyError,
    DownloadNotFoundError,
    RequestCancelledError,
    RequestExpiredError,
    ServiceError,
)
from tiktok_archive.models.messages import DownloadJob
from tiktok_archive.observability import logger

# Where a job of the service's own may pick a download up: queued (or retried after a failure, or taken
# over from a crashed attempt) — never a request TikTok is still preparing.
_JOB_STATUSES = frozenset({DownloadStatus.QUEUED, DownloadStatus.IN_PROGRESS, DownloadStatus.FAILED})


class QueuedDownloads:
    """Runs the download queue's jobs.

    Args:
        download: one download under its record's claim.
        records: the downloads table.
        events: publishes a queued job's end.
        vault: opens the tokens of queued jobs, built on first use (only sealed jobs need it).
        tokens: users' stored grants, built on first use (jobs of requests added with ``POST /requests``).
    """

    def __init__(
        self,
        download: ClaimedDownload,
        records: DownloadRecords,
        events: DownloadEvents,
        vault: Callable[[], TokenVault],
        tokens: Callable[[], TokenService],
    ) -> None:
        self._download = download
        self._records = records
        self._events = events
        self._vault = vault
        self._tokens = tokens

    def run(self, job: DownloadJob, deadline: Deadline) -> Answer:
        """The worker's side of a queued download (no link is handed out).

        A backend's own message (a token in clear) acts on a record no API caller made; a job the
        service queued (a token it sealed, or the user's grant) acts on the record it made.

        Raises:
            MissingTokenError: the message has no usable token (permanent).
            TokenVaultError: KMS could not open the token (transient).
            ServiceError: as :meth:`ClaimedDownload.run`.
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
                return self._download.run(DownloadRequest(job.request_id, token), owner, deadline, link=False)
        except ServiceError as error:
            if not error.is_transient and (job.from_grant or job.encrypted_access_token):
                self._end_queued(job.request_id, error)
            raise

    def _download_with_grant(self, request_id: int, deadline: Deadline) -> Answer:
        """A request the service queued: its user's stored grant provides the token.

        Every such job follows TikTok's word that the request is ready (see ``known_ready`` of
        :meth:`ClaimedDownload.run`): the download is asked for without a Check Status call first.
        """
        record = self._records.get(request_id)
        if record is None or record.grant_id is None:
            raise DownloadNotFoundError("no request added with POST /requests has this request_id")
        if record.status.final:
            return _nothing_to_download(record)
        if record.status is DownloadStatus.WAITING:
            # The job is sent before the record says ``queued`` (a lost send must not strand a record
            # marked queued): a worker may see it first. It comes back; a job that never finds its
            # record queued ends in the dead-letter queue.
            raise ArchiveNotReadyError(
                "this request is not queued here yet; the job comes back", retry_after="30"
            )
        if record.status not in _JOB_STATUSES:
            logger.info(
                "a job for a request that is not ready here is ignored", extra={"status": record.status.value}
            )
            return Answer(record)
        owner = Owner(None, service=True)
        return self._tokens().with_access_token(
            record.grant_id,
            deadline,
            lambda token: self._download.run(
                DownloadRequest(request_id, token), owner, deadline, link=False, known_ready=True
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
                self._download.release(record)
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
                self._download.release(ended)


def _nothing_to_download(record: DownloadRecord) -> Answer:
    """A job's answer when the record is final: stored, or ended (nothing is downloaded again)."""
    logger.info("nothing to download", extra={"status": record.status.value})
    return Answer(record)
