"""``POST /requests``: take the user's tokens, add a data request at TikTok, and start waiting for it.

:class:`AddRequest` knows nothing of API Gateway. Once TikTok accepted the request, the record says
``waiting`` and the first status check is queued (:mod:`status_checks` follows it from there); the
user's tokens stay in their grant, which the checks, the download and a cancellation use.
"""

from __future__ import annotations

from datetime import timedelta

from tiktok_archive.adapters.download_events import DownloadEvents
from tiktok_archive.adapters.download_records import DownloadRecords
from tiktok_archive.adapters.lifecycle_queue import LifecycleQueue
from tiktok_archive.adapters.record_writes import Unchanged
from tiktok_archive.adapters.tiktok import TikTokClient
from tiktok_archive.logic.grant_release import release_unneeded
from tiktok_archive.logic.handover import Holding, TokenHandover
from tiktok_archive.logic.ownership import logged_as
from tiktok_archive.logic.tokens import TokenService
from tiktok_archive.models.check_schedule import Schedule
from tiktok_archive.models.clock import utc_now as _now  # tests freeze this module's clock
from tiktok_archive.models.deadline import Deadline
from tiktok_archive.models.download_record import DownloadRecord, Preparation
from tiktok_archive.models.errors import RecordStoreError, ServiceError
from tiktok_archive.models.portability import NewRequest
from tiktok_archive.observability import logger


class AddRequest:
    """Adds a caller's data request at TikTok and starts following it.

    Args:
        tiktok: TikTok's portability endpoints.
        records: the downloads table.
        tokens: users' grants (a grant made for a request TikTok refused is released).
        handover: takes the tokens a caller hands over.
        events: publishes state changes.
        queue: the lifecycle queue (the first status check).
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
        schedule: Schedule,
    ) -> None:
        self._tiktok = tiktok
        self._records = records
        self._tokens = tokens
        self._handover = handover
        self._events = events
        self._queue = queue
        self._schedule = schedule

    def add(self, caller: str, new: NewRequest, deadline: Deadline) -> DownloadRecord:
        """Take the user's tokens, add a data request at TikTok, start waiting; the record is ``caller``'s.

        Returns:
            the ``waiting`` record.

        Raises:
            OpenIdMismatchError / ReauthorizationRequiredError / TokenRefreshInProgressError: TikTok named
                another user, refused the refresh token, or another handover of it is under way (see
                :meth:`TokenHandover.take`); nothing was added.
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
