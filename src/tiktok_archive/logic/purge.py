"""A user's data goes: TikTok's ``authorization.removed``, or a caller's ``DELETE /users/{open_id}``.

What a purge removes — for every caller (``authorization.removed``) or for one (an erasure):

- every record of the user: ended ``revoked`` (a running download stops at its next progress report and
  leaves nothing), its stored archive deleted and any multipart upload still open for it aborted; the
  record stays as a tombstone, without its archive's location, until it expires;
- every grant of the user: deleted. An erasure first cancels the user's unfinished requests at TikTok
  and revokes their authorization (``/v2/oauth/revoke/``) with the tokens the grant holds — that part
  calls TikTok, so it is queued on its own and waits out TikTok's rate limits; the local purge never does;
- one event per caller: ``Authorization Removed`` or ``User Erased``.

The index that finds a user's records is eventually consistent: a record written a moment before the
purge may not show yet. So every purge runs twice: now, and again :data:`SECOND_PASS_AFTER` later (SQS's
longest delay, as long as a Lambda invocation can live), for the records created before the first pass
began. Running either again changes nothing. A purge that keeps failing waits in the lifecycle queue's
dead-letter queue (alarmed), from where an operator re-drives it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from tiktok_archive.adapters.app_credentials import AppCredentialsSource
from tiktok_archive.adapters.download_events import DownloadEvents
from tiktok_archive.adapters.download_records import DownloadRecords
from tiktok_archive.adapters.grants import Grants, request_grant_id, user_grant_id
from tiktok_archive.adapters.lifecycle_queue import MAX_DELAY_SECONDS, LifecycleQueue
from tiktok_archive.adapters.record_writes import Unchanged
from tiktok_archive.adapters.tiktok import TikTokClient
from tiktok_archive.logic.grant_release import needs_grant
from tiktok_archive.logic.ownership import NOT_OWNED, logged_as
from tiktok_archive.logic.tokens import TokenService
from tiktok_archive.logic.transfer import ArchiveTransfer
from tiktok_archive.models.clock import utc_now as _now  # tests freeze this module's clock
from tiktok_archive.models.deadline import Deadline
from tiktok_archive.models.download import DownloadRequest
from tiktok_archive.models.download_record import DownloadRecord, DownloadStatus
from tiktok_archive.models.errors import ReauthorizationRequiredError
from tiktok_archive.models.messages import EraseUser, PurgeAgain, RevokeAtTikTok
from tiktok_archive.models.tiktok_errors import TikTokApiError
from tiktok_archive.observability import logger

SECOND_PASS_AFTER = MAX_DELAY_SECONDS
AUTHORIZATION_REMOVED_EVENT = "Authorization Removed"
USER_ERASED_EVENT = "User Erased"


@dataclass(frozen=True)
class Purged:
    """What one pass of a purge did."""

    revoked: tuple[int, ...]
    grants_deleted: int
    uploads_aborted: int


class UserPurge:
    """Removes a user's data.

    Args:
        records: the downloads table.
        grants: the grants table (every caller's grants of a user).
        tokens: the grants' tokens (for the erasure's cancellations and revocation).
        transfer: deletes archives and aborts their uploads.
        events: publishes what a purge removed.
        queue: the lifecycle queue (the second pass, the TikTok side of an erasure).
        tiktok: cancels and revokes at TikTok.
        app: the app's credentials (the revocation needs them).
    """

    def __init__(
        self,
        records: DownloadRecords,
        grants: Grants,
        tokens: TokenService,
        transfer: ArchiveTransfer,
        events: DownloadEvents,
        queue: LifecycleQueue,
        tiktok: TikTokClient,
        app: Callable[[], AppCredentialsSource],
    ) -> None:
        self._records = records
        self._grants = grants
        self._tokens = tokens
        self._transfer = transfer
        self._events = events
        self._queue = queue
        self._tiktok = tiktok
        self._app = app

    # -- authorization.removed -------------------------------------------------------------------
    def authorization_removed(self, open_id: str, reason: int | None) -> Purged:
        """The user disconnected the app at TikTok: every caller's records and grants of theirs go.

        Raises:
            ServiceError: only transient failures of AWS (the message comes back and finishes the job).
        """
        started = _now()
        records = self._records.of_user(open_id)
        purged = self._purge(records, before=None)
        grants = self._grants.of_user(open_id)
        grant_ids = {grant.grant_id for grant in grants} | {r.grant_id for r in records if r.grant_id}
        deleted = purged.grants_deleted + sum(
            self._tokens.delete(grant_id, forget_handed=True) for grant_id in sorted(grant_ids)
        )
        self._queue.send(PurgeAgain(open_id, None, reason, started), SECOND_PASS_AFTER)
        callers = {record.caller for record in records} | {grant.caller for grant in grants}
        if purged.revoked or deleted:
            self._announce(
                AUTHORIZATION_REMOVED_EVENT, open_id, records, purged.revoked, callers=callers, reason=reason
            )
        logger.info(
            "user's data purged: the user disconnected the app",
            extra={"revoked_requests": len(purged.revoked), "erased_grants": deleted},
        )
        return Purged(purged.revoked, deleted, purged.uploads_aborted)

    # -- DELETE /users/{open_id} -----------------------------------------------------------------
    def erase(self, message: EraseUser) -> Purged:
        """``caller`` erases ``open_id``: its records of the user go now, the TikTok side is queued.

        Raises:
            ServiceError: only transient failures of AWS (the message comes back and finishes the job).
        """
        started = _now()
        caller, open_id = message.caller, message.open_id
        grant_id = user_grant_id(caller, open_id)
        holds_tokens = self._grants.mark_erasing(grant_id)
        records = self._records.of_caller_user(caller, open_id)
        if holds_tokens:
            # Queued before the records end: a delivery of this message that fails halfway through the
            # purge comes back to records no longer unfinished, and would have nothing left to cancel.
            # Every unfinished request of the user is theirs at TikTok: the grant's token cancels it.
            unfinished = tuple(record.request_id for record in records if needs_grant(record))
            self._queue.send(RevokeAtTikTok(caller, open_id, unfinished))
        purged = self._purge(records, before=None)
        self._queue.send(PurgeAgain(open_id, caller, None, started), SECOND_PASS_AFTER)
        self._announce(USER_ERASED_EVENT, open_id, records, purged.revoked, callers={caller})
        logger.info(
            "user erased by the caller",
            extra={"revoked_requests": len(purged.revoked), "tokens_to_revoke": holds_tokens},
        )
        return purged

    def revoke_at_tiktok(self, message: RevokeAtTikTok, deadline: Deadline) -> bool:
        """The TikTok side of an erasure: cancel the unfinished requests, revoke the user, drop the grant.

        Returns:
            whether TikTok revoked the user's authorization (False: nothing left to revoke).

        Raises:
            TikTokApiError / ServiceError: transient ones (a rate limit, TikTok or AWS failing): the
                message comes back; the cancellations already made are not made again.
        """
        grant_id = user_grant_id(message.caller, message.open_id)
        grant = self._grants.get(grant_id)
        if grant is None or not grant.erasing:
            logger.info("nothing to revoke: the grant is gone, or the user consented again since")
            return False
        shared = any(other.caller != message.caller for other in self._grants.of_user(message.open_id))
        try:
            for request_id in message.cancel:
                self._cancel(grant_id, request_id, deadline)
            if shared:
                # TikTok revokes the user's authorization of the app, every token of it: other callers
                # of this stack hold the user's tokens too, and one caller changes nothing of another's.
                logger.warning(
                    "the user's authorization is shared with another caller: not revoked at TikTok"
                )
                revoked = False
            else:
                token = self._tokens.access_token(grant_id, deadline)
                revoked = self._tiktok.revoke_tokens(self._app().get(), token, deadline)
        except ReauthorizationRequiredError:
            revoked = False  # the user's tokens no longer work: nothing is left to cancel or revoke
        latest = self._grants.get(grant_id)
        if latest is not None and latest.erasing:
            self._tokens.delete(grant_id, generation=latest.generation, forget_handed=True)
        logger.info("user's authorization revoked at TikTok" if revoked else "user's tokens dropped")
        return revoked

    # -- the second pass -------------------------------------------------------------------------
    def again(self, message: PurgeAgain) -> Purged:
        """Purge again what the first pass may not have seen: records created before it began.

        Raises:
            ServiceError: only transient failures of AWS.
        """
        if message.caller is None:
            records = self._records.of_user(message.open_id)
        else:
            records = self._records.of_caller_user(message.caller, message.open_id)
        purged = self._purge(records, before=message.started_at)
        if message.caller is None:
            # A grant the first pass's index did not show yet goes too — not one consented to since.
            for grant in self._grants.of_user(message.open_id):
                if grant.adopted_at is not None and grant.adopted_at <= message.started_at:
                    self._tokens.delete(grant.grant_id, generation=grant.generation, forget_handed=True)
        if purged.revoked:
            logger.warning(
                "the second pass of a purge found records the first did not",
                extra={"revoked_requests": len(purged.revoked)},
            )
            event = USER_ERASED_EVENT if message.caller else AUTHORIZATION_REMOVED_EVENT
            self._announce(event, message.open_id, records, purged.revoked, reason=message.reason)
        return purged

    # -- records ---------------------------------------------------------------------------------
    def _purge(self, records: Iterable[DownloadRecord], *, before: datetime | None) -> Purged:
        """End each record ``revoked`` (the first pass: all; the second: those created ``before``)."""
        revoked: list[int] = []
        aborted = grants = 0
        for record in records:
            if before is not None and record.created_at > before:
                continue  # made after the purge began: a new consent, not the purged user's past
            with logged_as(record.request_id):
                # The record ends first: a download finishing meanwhile finds its claim gone and deletes
                # its own archive; then whatever is stored or half-written goes (again on a redelivery,
                # in case an earlier delete failed — deleting nothing is harmless).
                if record.status is not DownloadStatus.REVOKED:
                    ended = self._records.end(record.request_id, DownloadStatus.REVOKED)
                    if not isinstance(ended, Unchanged) or ended.record.status is DownloadStatus.REVOKED:
                        revoked.append(record.request_id)
                aborted += self._transfer.discard(record.request_id)
                if record.grant_id == request_grant_id(record.request_id):
                    grants += self._tokens.delete(record.grant_id)  # a request's own grant
        return Purged(tuple(revoked), grants, aborted)

    def _cancel(self, grant_id: str, request_id: int, deadline: Deadline) -> None:
        with logged_as(request_id):
            try:
                self._tokens.with_access_token(
                    grant_id,
                    deadline,
                    lambda token: self._tiktok.cancel_request(DownloadRequest(request_id, token), deadline),
                )
            except TikTokApiError as error:
                if error.error_code != NOT_OWNED:
                    raise
                return  # TikTok had ended it already (or cancelled it on an earlier try of this message)
            logger.info("request cancelled at TikTok")

    def _announce(
        self,
        detail_type: str,
        open_id: str,
        records: Iterable[DownloadRecord],
        revoked: tuple[int, ...],
        *,
        callers: Iterable[str | None] = (),
        reason: int | None = None,
    ) -> None:
        """One event per caller in ``callers`` and per caller whose records were revoked."""
        by_caller: dict[str | None, list[int]] = {caller: [] for caller in callers}
        owners = {record.request_id: record.caller for record in records}
        for request_id in revoked:
            by_caller.setdefault(owners.get(request_id), []).append(request_id)
        for owner, request_ids in by_caller.items():
            detail: dict[str, object] = {
                "caller": owner,
                "open_id": open_id,
                "requests_revoked": len(request_ids),
                "request_ids": [str(request_id) for request_id in request_ids],
            }
            if detail_type == AUTHORIZATION_REMOVED_EVENT:
                detail["reason"] = reason
            self._events.publish_user_event(detail_type, detail)
