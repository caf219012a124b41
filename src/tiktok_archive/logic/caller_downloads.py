"""``POST /downloads``: a caller's download, now (with a link) or queued for the worker; tokens handed over.

:class:`CallerDownloads` takes the tokens the caller hands over (:class:`TokenHandover`: with a refresh
token, TikTok names the user and the service keeps their grant), then runs the download under its claim
(:class:`ClaimedDownload`) — or, with ``Prefer: respond-async``, queues it once TikTok confirmed the
owner. Tokens handed over with a request that is stored, ended, failed for good or another caller's are
not kept. It knows nothing of API Gateway.
"""

from __future__ import annotations

from collections.abc import Callable

from tiktok_archive.adapters.download_jobs import DownloadJobs
from tiktok_archive.adapters.download_records import DownloadRecords
from tiktok_archive.adapters.record_writes import Unchanged
from tiktok_archive.logic.claimed_download import ClaimedDownload
from tiktok_archive.logic.download_progress import ended_error
from tiktok_archive.logic.grant_release import release_unneeded
from tiktok_archive.logic.handover import Holding, TokenHandover
from tiktok_archive.logic.ownership import NOT_FOUND_MESSAGE, logged_as
from tiktok_archive.logic.tokens import TokenService
from tiktok_archive.models.deadline import Deadline
from tiktok_archive.models.download import DownloadRequest
from tiktok_archive.models.download_record import ENDED, Answer, Owner
from tiktok_archive.models.errors import DownloadNotFoundError, ServiceError
from tiktok_archive.models.messages import QUEUED_LEASE
from tiktok_archive.models.portability import HandedTokens
from tiktok_archive.observability import logger


class CallerDownloads:
    """A caller's downloads: now, or queued.

    Args:
        download: one download under its record's claim.
        records: the downloads table.
        jobs: the queue of async downloads, built on first use (only async requests need it).
        tokens: users' stored grants, built on first use (a grant no request needs is released).
        handover: takes the tokens a caller hands over, built on first use.
    """

    def __init__(
        self,
        download: ClaimedDownload,
        records: DownloadRecords,
        jobs: Callable[[], DownloadJobs],
        tokens: Callable[[], TokenService],
        handover: Callable[[], TokenHandover],
    ) -> None:
        self._download = download
        self._records = records
        self._jobs = jobs
        self._tokens = tokens
        self._handover = handover

    def download(self, caller: str, request_id: int, handed: HandedTokens, deadline: Deadline) -> Answer:
        """Download ``request_id``'s archive once for ``caller``; a repeat gets the stored one (a fresh link).

        Raises:
            DownloadNotFoundError: TikTok does not confirm that the token's user owns the request, or the
                record is another caller's.
            TikTokApiError: TikTok refused the token (``access_token_invalid``, a scope error …).
            ArchiveNotReadyError / RequestExpiredError / RequestCancelledError: TikTok's status.
            DownloadInProgressError: another invocation holds the download (409, with Retry-After).
            OpenIdMismatchError / ReauthorizationRequiredError / TokenRefreshInProgressError: the refresh
                token handed over (see :meth:`TokenHandover.take`).
            ServiceError: the download failed; the record says so and an event was published.
        """
        with logged_as(request_id):
            holding, owner = self._take(caller, handed, deadline)
            return self._letting_go(
                owner,
                lambda: self._handover().act(
                    holding,
                    deadline,
                    lambda token: self._download.run(
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
        stored = self._download.stored_or_ready(request, owner, deadline)
        if stored is not None:
            return self._download.answer(stored)
        jobs = self._jobs()
        queued = self._records.enqueue(request_id, QUEUED_LEASE, owner)
        if isinstance(queued, Unchanged):
            if not owner.may_act_on(queued.record):
                raise DownloadNotFoundError(NOT_FOUND_MESSAGE)
            if queued.record.status in ENDED:
                raise ended_error(queued.record.status)  # as the synchronous path answers: nothing to queue
            return self._download.answer(queued.record)
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
