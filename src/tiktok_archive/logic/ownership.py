"""Authorization before anything else: TikTok, asked with the caller's token, says who owns a request.

Shared by every service that acts on a caller's ``request_id``: nothing is read, written, queued or
published for a caller until TikTok's Check Status confirms, with the caller's own token, that its user
owns the request. Also the one place that logs every record of a request with its id.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from tiktok_archive.adapters.tiktok import TikTokClient
from tiktok_archive.models.deadline import Deadline
from tiktok_archive.models.download import DownloadRequest
from tiktok_archive.models.errors import (
    ArchiveNotReadyError,
    DownloadNotFoundError,
    RequestCancelledError,
    RequestExpiredError,
)
from tiktok_archive.models.portability import RequestStatus, TikTokStatus
from tiktok_archive.models.tiktok_errors import TikTokApiError
from tiktok_archive.observability import logger

# A TikTok answer that says "this token's user does not own this request": the same 404 as an
# unknown request_id, so that the answer reveals nothing about other users' downloads.
NOT_OWNED = "invalid_params"
NOT_FOUND_MESSAGE = "no download of this request_id is known to this caller"
EXPIRED_MESSAGE = "TikTok's four-day download window for this request is over"
# How long a caller waits before asking again about an archive TikTok is still preparing.
NOT_READY_RETRY_AFTER_SECONDS = 60


def confirm_owner(tiktok: TikTokClient, request: DownloadRequest, deadline: Deadline) -> RequestStatus:
    """TikTok's status of the request, once TikTok confirms — with this token — that its user owns it.

    Raises:
        DownloadNotFoundError: TikTok answered ``invalid_params`` for the request, or answered without
            naming this very request (the same 404 as an unknown request: no oracle).
        TikTokApiError: any other refusal keeps TikTok's code, status and ``log_id``
            (``access_token_invalid``, ``scope_not_authorized``, ``scope_permission_missed``, a rate
            limit …).
    """
    try:
        status = tiktok.check_request(request, deadline)
    except TikTokApiError as error:
        if error.error_code != NOT_OWNED:
            raise
        status = None
    if status is None:
        logger.info("TikTok did not confirm the owner")
        raise DownloadNotFoundError(NOT_FOUND_MESSAGE)
    return status


def require_ready(status: RequestStatus) -> None:
    """Raise unless TikTok says the archive can be downloaded now (``downloading``).

    Raises:
        ArchiveNotReadyError: ``pending`` (transient, with Retry-After).
        RequestExpiredError / RequestCancelledError: ``expired`` / ``cancelled`` (permanent).
    """
    if status.status == TikTokStatus.PENDING:
        raise ArchiveNotReadyError(
            "TikTok is still preparing this archive; ask again later",
            retry_after=str(NOT_READY_RETRY_AFTER_SECONDS),
        )
    if status.status == TikTokStatus.EXPIRED:
        raise RequestExpiredError(EXPIRED_MESSAGE)
    if status.status == TikTokStatus.CANCELLED:
        raise RequestCancelledError("this request was cancelled at TikTok")


@contextlib.contextmanager
def logged_as(request_id: int) -> Iterator[None]:
    """Every log record while handling ``request_id`` carries it."""
    logger.append_keys(request_id=str(request_id))
    try:
        yield
    finally:
        logger.remove_keys(["request_id"])
