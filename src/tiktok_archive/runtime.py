"""Per-container wiring: settings, clients and the transfer service, built once on first use.

Nothing here runs at import time; the first invocation builds the service and every later one in the
same container reuses its connection pools and part-upload threads. Tests call ``reset()`` to rebuild
with another environment.
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from tiktok_archive.adapters import aws_clients
from tiktok_archive.adapters.aws_clients import SMALL_CALLS, s3_limits
from tiktok_archive.adapters.download_events import DownloadEvents
from tiktok_archive.adapters.download_jobs import DownloadJobs
from tiktok_archive.adapters.download_records import DownloadRecords
from tiktok_archive.adapters.queue_visibility import MessageVisibility
from tiktok_archive.adapters.s3_archive_store import S3ArchiveStore
from tiktok_archive.adapters.tiktok import TikTokClient, build_pool
from tiktok_archive.adapters.token_vault import TokenVault
from tiktok_archive.logic.downloads import DownloadService
from tiktok_archive.logic.transfer import ArchiveTransfer
from tiktok_archive.models.errors import ConfigurationError
from tiktok_archive.settings import Settings


@functools.cache
def settings() -> Settings:
    """The container's settings.

    Raises:
        ConfigurationError: the environment is invalid (the message names the variable).
    """
    return Settings.from_environment()


@functools.cache
def archive_store() -> S3ArchiveStore:
    """The container's S3 writer: one client and one pool of part uploaders."""
    config = settings()
    limits = s3_limits(config.deadline_margin_seconds, config.s3_max_attempts)
    s3_client = aws_clients.client(
        "s3",
        limits,
        signature_version="s3v4",
        # Every in-flight part needs its own connection, plus one for create/complete/presign.
        max_pool_connections=config.upload_concurrency + 2,
        # SlowDown, 500 and throttling answers are retried by botocore itself, per part.
        retry_mode=config.s3_retry_mode,
        tcp_keepalive=True,
    )
    executor = ThreadPoolExecutor(max_workers=config.upload_concurrency, thread_name_prefix="s3-part")
    return S3ArchiveStore(
        s3_client,
        executor,
        config.bucket_name,
        config.part_size_bytes,
        config.upload_concurrency,
        longest_try=limits.longest_try,
    )


@functools.cache
def tiktok_client() -> TikTokClient:
    """The container's TikTok client and its connection pool."""
    config = settings()
    return TikTokClient(
        config.tiktok_api_base_url,
        build_pool(),
        connect_timeout=config.connect_timeout_seconds,
        read_timeout=config.read_timeout_seconds,
        max_attempts=config.tiktok_max_attempts,
    )


@functools.cache
def transfer_service() -> ArchiveTransfer:
    """The container's transfer service.

    Raises:
        ConfigurationError: the environment is invalid (the message names the variable).
    """
    config = settings()
    return ArchiveTransfer(
        tiktok_client(),
        archive_store(),
        key_prefix=config.object_key_prefix,
        url_ttl_seconds=config.presigned_url_ttl_seconds,
        deadline_margin_seconds=config.deadline_margin_seconds,
    )


@functools.cache
def token_vault() -> TokenVault:
    """The KMS key that seals tokens (built on first use).

    Raises:
        ConfigurationError: ``TOKEN_KMS_KEY_ID`` is not set.
    """
    config = settings()
    if not config.token_kms_key_id:
        raise ConfigurationError("TOKEN_KMS_KEY_ID is required to seal and open tokens")
    return TokenVault(aws_clients.client("kms", SMALL_CALLS), config.token_kms_key_id)


@functools.cache
def download_jobs() -> DownloadJobs:
    """The queue of async downloads (built on first use).

    Raises:
        ConfigurationError: ``DOWNLOAD_QUEUE_URL`` or ``TOKEN_KMS_KEY_ID`` is not set.
    """
    config = settings()
    if not config.download_queue_url:
        raise ConfigurationError(
            "DOWNLOAD_QUEUE_URL is required for queued downloads (Prefer: respond-async)"
        )
    return DownloadJobs(aws_clients.client("sqs", SMALL_CALLS), token_vault(), config.download_queue_url)


@functools.cache
def download_service() -> DownloadService:
    """The container's download service (records, ownership, events around the transfer).

    Raises:
        ConfigurationError: the environment is invalid (the message names the variable).
    """
    config = settings()
    return DownloadService(
        transfer_service(),
        DownloadRecords(
            aws_clients.client("dynamodb", SMALL_CALLS),
            config.downloads_table_name,
            timedelta(days=config.record_retention_days),
        ),
        tiktok_client(),
        DownloadEvents(aws_clients.client("events", SMALL_CALLS), config.event_bus_name),
        download_jobs,
        token_vault,
    )


@functools.cache
def message_visibility() -> MessageVisibility:
    """Changes a received message's visibility (the worker's redelivery timing)."""
    return MessageVisibility(aws_clients.client("sqs", SMALL_CALLS))


def start_invocation(remaining_ms: int) -> None:
    """Tell the AWS clients when this invocation ends (handlers call it first): no try outlives it."""
    aws_clients.start_invocation(remaining_ms)


def reset() -> None:
    """Forget everything built so the next call reads the environment again (tests only)."""
    for built in (
        download_service,
        download_jobs,
        token_vault,
        transfer_service,
        tiktok_client,
        archive_store,
        message_visibility,
        settings,
    ):
        built.cache_clear()
