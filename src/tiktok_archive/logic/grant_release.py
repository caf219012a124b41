"""Grants no request needs any longer are deleted: the service holds a user's tokens only while it works.

A request's own grant (``request <request_id>``) goes when its request ends. A user's grant goes when
the last request of that user and caller that could still use it ended: none is ``waiting``, ``queued``,
``in_progress``, or ``failed`` with a failure worth another try. The deletion is conditional on the
grant's generation, so tokens handed over meanwhile (a new request of the same user) keep the grant.
"""

from __future__ import annotations

from tiktok_archive.adapters.download_records import DownloadRecords
from tiktok_archive.logic.tokens import TokenService
from tiktok_archive.models.download_record import DownloadRecord, DownloadStatus
from tiktok_archive.models.errors import ServiceError
from tiktok_archive.observability import logger

_WORKING = frozenset({DownloadStatus.WAITING, DownloadStatus.QUEUED, DownloadStatus.IN_PROGRESS})


def needs_grant(record: DownloadRecord) -> bool:
    """Whether ``record`` may still act with its grant."""
    if record.status in _WORKING:
        return True
    return record.status is DownloadStatus.FAILED and record.error is not None and record.error.transient


def release_grant(records: DownloadRecords, tokens: TokenService, ended: DownloadRecord) -> bool:
    """Delete ``ended``'s grant if no request needs it any longer; never raises (TTL is the backstop).

    ``ended``: a record that just ended (as written: the index may not show its new state yet).

    Returns:
        whether the grant was deleted.
    """
    if needs_grant(ended):
        return False
    return release_unneeded(
        records, tokens, ended.grant_id, ended.caller, ended.user_openid, besides=ended.request_id
    )


def release_unneeded(
    records: DownloadRecords,
    tokens: TokenService,
    grant_id: str | None,
    caller: str | None,
    user_openid: str | None,
    *,
    besides: int | None = None,
) -> bool:
    """Delete ``grant_id`` unless a request (other than ``besides``) needs it; never raises.

    Returns:
        whether the grant was deleted.
    """
    if grant_id is None:
        return False
    try:
        if user_openid is None or caller is None:
            deleted = tokens.delete(grant_id)  # a request's own grant: its request ended
        else:
            grant = tokens.find(grant_id)
            if grant is None or grant.erasing:
                return False  # gone already, or an erasure deletes it once TikTok revoked it
            others = records.of_caller_user(caller, user_openid)
            if any(
                record.grant_id == grant_id and record.request_id != besides and needs_grant(record)
                for record in others
            ):
                return False
            deleted = tokens.delete(grant_id, generation=grant.generation)
    except ServiceError as error:
        logger.warning("grant not released; it expires with its refresh token", extra=error.log_fields())
        return False
    if deleted:
        logger.info("grant released: no request needs it any longer", extra={"grant_id": grant_id})
    return deleted
