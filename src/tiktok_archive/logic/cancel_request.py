"""``DELETE /downloads/{request_id}``: cancel a caller's request at TikTok and here, for good.

:class:`CancelRequest` knows nothing of API Gateway. A cancelled request keeps no archive and hands out no
link again; a running download notices at its next progress report and leaves nothing.
"""

from __future__ import annotations

from tiktok_archive.adapters.download_events import DownloadEvents
from tiktok_archive.adapters.download_records import DownloadRecords
from tiktok_archive.adapters.record_writes import Unchanged
from tiktok_archive.adapters.tiktok import TikTokClient
from tiktok_archive.logic.grant_release import release_grant
from tiktok_archive.logic.ownership import logged_as
from tiktok_archive.logic.queries import RecordQueries
from tiktok_archive.logic.tokens import TokenService
from tiktok_archive.logic.transfer import ArchiveTransfer
from tiktok_archive.models.deadline import Deadline
from tiktok_archive.models.download import DownloadRequest
from tiktok_archive.models.download_record import ENDED, DownloadRecord, DownloadStatus
from tiktok_archive.models.errors import ReauthorizationRequiredError
from tiktok_archive.models.tiktok_errors import TikTokApiError
from tiktok_archive.observability import logger


class CancelRequest:
    """Cancels a caller's request.

    Args:
        tiktok: TikTok's portability endpoints.
        records: the downloads table.
        queries: finds the caller's record (another caller's is not found).
        tokens: users' grants (to cancel at TikTok; released once no request needs them).
        events: publishes state changes.
        transfer: deletes the stored archive and open uploads.
    """

    def __init__(
        self,
        tiktok: TikTokClient,
        records: DownloadRecords,
        queries: RecordQueries,
        tokens: TokenService,
        events: DownloadEvents,
        transfer: ArchiveTransfer,
    ) -> None:
        self._tiktok = tiktok
        self._records = records
        self._queries = queries
        self._tokens = tokens
        self._events = events
        self._transfer = transfer

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
