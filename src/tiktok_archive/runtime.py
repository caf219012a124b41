"""Per-container wiring: the use cases the handlers call, each built once on first use, and the deadline.

Nothing here runs at import time; the first invocation builds what it calls (and the adapters under it,
:mod:`runtime_adapters`), and every later one in the same container reuses them. Tests call ``reset()``
to rebuild with another environment.

**Imports are deferred, here and in** :mod:`runtime_adapters` **only.** Every handler imports this module,
so a top-level import of a use case would load every function's logic, adapters and their libraries
(boto3, the S3 transfer, urllib3 …) into every function's cold start. Instead each builder imports the
class it builds inside itself, the first time it runs: a function loads only the chain its own handlers
call, when they first call it. Annotations name the classes through ``TYPE_CHECKING`` imports. Everything
else in the package imports at the top, as usual; ``tests/unit/test_cold_start_imports.py`` checks what
each handler's import loads.
"""

from __future__ import annotations

import functools
import gc
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from tiktok_archive.models.deadline import Deadline
from tiktok_archive.models.errors import ConfigurationError
from tiktok_archive.models.tiktok_quota import Priority
from tiktok_archive.runtime_adapters import (
    app_credentials,
    archive_store,
    check_floor,
    download_events,
    download_jobs,
    download_records,
    grants,
    lifecycle_queue,
    ready_queue,
    settings,
    tiktok_client,
    token_vault,
    webhook_deliveries,
)
from tiktok_archive.runtime_adapters import reset as reset_adapters
from tiktok_archive.settings import DEFAULT_DEADLINE_MARGIN_SECONDS, Settings

if TYPE_CHECKING:
    from tiktok_archive.logic.add_request import AddRequest
    from tiktok_archive.logic.caller_downloads import CallerDownloads
    from tiktok_archive.logic.cancel_request import CancelRequest
    from tiktok_archive.logic.claimed_download import ClaimedDownload
    from tiktok_archive.logic.handover import TokenHandover
    from tiktok_archive.logic.purge import UserPurge
    from tiktok_archive.logic.queries import RecordQueries
    from tiktok_archive.logic.queued_downloads import QueuedDownloads
    from tiktok_archive.logic.status_checks import ArchiveReady, StatusChecks
    from tiktok_archive.logic.sweep import Sweep
    from tiktok_archive.logic.tokens import TokenService
    from tiktok_archive.logic.transfer import ArchiveTransfer
    from tiktok_archive.logic.webhooks import WebhookReceiver
    from tiktok_archive.models.check_schedule import Schedule


@functools.cache
def transfer_service() -> ArchiveTransfer:
    """The container's transfer service.

    Raises:
        ConfigurationError: the environment is invalid (the message names the variable).
    """
    from tiktok_archive.logic.transfer import ArchiveTransfer

    config = settings()
    service = ArchiveTransfer(
        tiktok_client(),
        archive_store(),
        key_prefix=config.object_key_prefix,
        url_ttl_seconds=config.presigned_url_ttl_seconds,
    )
    # The modules and clients loaded so far live as long as the container: out of the cyclic collector's
    # way, so that a full collection during a transfer scans what the transfer allocated, not them (one
    # over the ~140,000 objects of the worker's imports cost 65 ms of CPU in a 512 MiB transfer).
    gc.freeze()
    return service


@functools.cache
def token_service() -> TokenService:
    """Users' tokens: kept sealed, refreshed (built on first use).

    Raises:
        ConfigurationError: ``GRANTS_TABLE_NAME`` or ``TOKEN_KMS_KEY_ID`` is not set.
    """
    from tiktok_archive.logic.tokens import TokenService

    return TokenService(grants(), token_vault(), tiktok_client(), app_credentials)


@functools.cache
def token_handover() -> TokenHandover:
    """Takes the users' tokens callers hand over (built on first use).

    Raises:
        ConfigurationError: ``GRANTS_TABLE_NAME`` or ``TOKEN_KMS_KEY_ID`` is not set.
    """
    from tiktok_archive.logic.handover import TokenHandover

    return TokenHandover(token_service(), grants())


@functools.cache
def webhook_receiver() -> WebhookReceiver:
    """TikTok's webhook deliveries, verified, recorded and queued."""
    from tiktok_archive.logic.webhooks import WebhookReceiver

    return WebhookReceiver(app_credentials, webhook_deliveries, lifecycle_queue, ready_queue)


@functools.cache
def record_queries() -> RecordQueries:
    """Reads of a caller's records."""
    from tiktok_archive.logic.queries import RecordQueries

    return RecordQueries(download_records(), transfer_service())


@functools.cache
def user_purge() -> UserPurge:
    """Users' purges (built on first use).

    Raises:
        ConfigurationError: the environment is invalid (the message names the variable).
    """
    from tiktok_archive.logic.purge import UserPurge

    return UserPurge(
        download_records(),
        grants(),
        token_service(),
        transfer_service(),
        download_events(),
        lifecycle_queue(),
        tiktok_client(),
        app_credentials,
    )


# -- the use cases -------------------------------------------------------------------------------
@functools.cache
def claimed_download() -> ClaimedDownload:
    """One download under its record's claim (the core of both the API's and the worker's downloads)."""
    from tiktok_archive.logic.claimed_download import ClaimedDownload

    return ClaimedDownload(
        transfer_service(), download_records(), tiktok_client(), download_events(), token_service
    )


@functools.cache
def caller_downloads() -> CallerDownloads:
    """``POST /downloads``: now, or queued (the queue, the key and the grants built on first need)."""
    from tiktok_archive.logic.caller_downloads import CallerDownloads

    return CallerDownloads(
        claimed_download(), download_records(), download_jobs, token_service, token_handover
    )


@functools.cache
def queued_downloads() -> QueuedDownloads:
    """The worker's jobs (the key and the grants built on first need: a backend's own jobs need neither)."""
    from tiktok_archive.logic.queued_downloads import QueuedDownloads

    return QueuedDownloads(
        claimed_download(), download_records(), download_events(), token_vault, token_service
    )


@functools.cache
def add_request() -> AddRequest:
    """``POST /requests``.

    Raises:
        ConfigurationError: the environment is invalid (the message names the variable).
    """
    from tiktok_archive.logic.add_request import AddRequest

    return AddRequest(
        tiktok_client(),
        download_records(),
        token_service(),
        token_handover(),
        download_events(),
        lifecycle_queue(),
        _schedule(),
    )


@functools.cache
def status_checks() -> StatusChecks:
    """Waiting requests' status checks, and the sweeper's re-drive (the download queue built on first need).

    Raises:
        ConfigurationError: the environment is invalid (the message names the variable).
    """
    from tiktok_archive.logic.status_checks import StatusChecks

    return StatusChecks(
        tiktok_client(),
        download_records(),
        token_service(),
        download_events(),
        lifecycle_queue(),
        download_jobs,
        _schedule(),
        check_floor().seconds,
    )


@functools.cache
def sweep() -> Sweep:
    """The sweeper's run: the checks' floor, and lost chains re-driven.

    Raises:
        ConfigurationError: the environment is invalid (the message names the variable).
    """
    from tiktok_archive.logic.sweep import Sweep
    from tiktok_archive.models.check_schedule import CheckBudget

    config = settings()
    return Sweep(download_records(), lifecycle_queue(), check_floor(), CheckBudget.of(config.quota))


@functools.cache
def archive_ready() -> ArchiveReady:
    """TikTok's ``ready`` webhook's work: the download queued (the queue built on first need)."""
    from tiktok_archive.logic.status_checks import ArchiveReady

    return ArchiveReady(download_records(), download_events(), download_jobs)


@functools.cache
def cancel_request() -> CancelRequest:
    """``DELETE /downloads/{request_id}``.

    Raises:
        ConfigurationError: the environment is invalid (the message names the variable).
    """
    from tiktok_archive.logic.cancel_request import CancelRequest

    return CancelRequest(
        tiktok_client(),
        download_records(),
        record_queries(),
        token_service(),
        download_events(),
        transfer_service(),
    )


def _schedule() -> Schedule:
    from tiktok_archive.models.check_schedule import Schedule

    config = settings()
    longest = config.status_poll_max_seconds
    if config.webhooks_configured:
        longest = config.status_poll_backstop_seconds
    return Schedule(
        config.status_poll_initial_seconds,
        max(config.status_poll_initial_seconds, longest),
        timedelta(hours=config.status_poll_give_up_hours),
        webhooks=config.webhooks_configured,
    )


# -- the invocation ------------------------------------------------------------------------------
def start_invocation(context: Any) -> Deadline:
    """The invocation's one deadline (handlers call this first, once, and pass it down).

    Lambda's deadline less ``DEADLINE_MARGIN_SECONDS``, measured from this moment. The AWS clients are
    told when the invocation ends, so that none of their tries outlives it.
    """
    from tiktok_archive.adapters import aws_clients

    remaining_ms: int = context.get_remaining_time_in_millis()
    aws_clients.start_invocation(remaining_ms)
    try:
        margin = settings().deadline_margin_seconds
    except ConfigurationError:
        margin = DEFAULT_DEADLINE_MARGIN_SECONDS  # the error is answered where the settings are used
    return Deadline.for_invocation(remaining_ms, margin)


def unit_of_work(deadline: Deadline, priority: Priority) -> Deadline:
    """A unit of work (one API request, one queue message) on the invocation's ``deadline``.

    The same moment, its own count of attempts (``ATTEMPTS_PER_UNIT``), and its ``priority`` on
    TikTok's shared quota (the handler knows what the unit is).
    """
    try:
        attempts = settings().attempts_per_unit
    except ConfigurationError:
        attempts = Settings.attempts_per_unit
    return deadline.unit(attempts, priority)


def reset() -> None:
    """Forget everything built so the next call reads the environment again (tests only)."""
    for built in (
        cancel_request,
        archive_ready,
        status_checks,
        sweep,
        add_request,
        queued_downloads,
        caller_downloads,
        claimed_download,
        user_purge,
        record_queries,
        webhook_receiver,
        token_handover,
        token_service,
        transfer_service,
    ):
        built.cache_clear()
    reset_adapters()
