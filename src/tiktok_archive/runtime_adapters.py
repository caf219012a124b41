"""The runtime's adapters: settings, AWS and TikTok clients, tables and queues, built once per container.

Nothing here runs at import time; the first invocation that needs an adapter builds it, and every later
one in the same container reuses it, with its connection pools and part-upload threads. What the
handlers call — the use cases over these adapters — is built in :mod:`runtime`. As there, each builder
imports the adapter it builds inside itself (see :mod:`runtime`'s docstring for why).
"""

from __future__ import annotations

import functools
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from tiktok_archive.models.errors import ConfigurationError
from tiktok_archive.settings import Settings

if TYPE_CHECKING:
    from tiktok_archive.adapters.app_credentials import AppCredentialsSource
    from tiktok_archive.adapters.check_floor import CheckFloor
    from tiktok_archive.adapters.download_events import DownloadEvents
    from tiktok_archive.adapters.download_jobs import DownloadJobs
    from tiktok_archive.adapters.download_records import DownloadRecords
    from tiktok_archive.adapters.grants import Grants
    from tiktok_archive.adapters.lifecycle_queue import LifecycleQueue
    from tiktok_archive.adapters.queue_visibility import MessageVisibility
    from tiktok_archive.adapters.s3_archive_store import S3ArchiveStore
    from tiktok_archive.adapters.tiktok import TikTokClient
    from tiktok_archive.adapters.tiktok_quota import SharedQuota
    from tiktok_archive.adapters.token_vault import TokenVault
    from tiktok_archive.adapters.webhook_deliveries import WebhookDeliveries


@functools.cache
def settings() -> Settings:
    """The container's settings.

    Raises:
        ConfigurationError: the environment is invalid (the message names the variable).
    """
    return Settings.from_environment()


@functools.cache
def _small_calls_client(service: str) -> Any:
    """One client per service for every adapter's small calls (DynamoDB, SQS, KMS …).

    One connection pool and one creation cost per container, not one per adapter.
    """
    from tiktok_archive.adapters import aws_clients

    return aws_clients.client(service, aws_clients.SMALL_CALLS)


@functools.cache
def archive_store() -> S3ArchiveStore:
    """The container's S3 writer: one client and one pool of part uploaders."""
    from concurrent.futures import ThreadPoolExecutor

    from tiktok_archive.adapters import aws_clients
    from tiktok_archive.adapters.s3_archive_store import S3ArchiveStore

    config = settings()
    limits = aws_clients.s3_limits(config.deadline_margin_seconds, config.s3_max_attempts)
    s3_client = aws_clients.client(
        "s3",
        limits,
        signature_version="s3v4",
        # Parts carry the CRC32 we computed (S3 refuses a part that arrived altered) and travel over
        # TLS, so SigV4 need not SHA-256 every byte again. botocore only skips that hash by itself when
        # it computes the checksum (boto3's managed transfer does); given ours, it would hash each part
        # (about 0.6 s of CPU per GiB) unless told not to.
        s3={"payload_signing_enabled": False},
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
    """The container's TikTok client and its connection pool, drawing on the shared quota (when set)."""
    from tiktok_archive.adapters.tiktok import TikTokClient, build_pool

    config = settings()
    return TikTokClient(
        config.tiktok_api_base_url,
        build_pool(),
        connect_timeout=config.connect_timeout_seconds,
        read_timeout=config.read_timeout_seconds,
        max_attempts=config.tiktok_max_attempts,
        quota=tiktok_quota(),
    )


def tiktok_quota() -> SharedQuota | None:
    """TikTok's quota shared by every invocation (None without ``TIKTOK_QUOTA_TABLE_NAME``)."""
    from tiktok_archive.adapters.tiktok_quota import SharedQuota

    config = settings()
    if not config.quota_table_name:
        return None
    return SharedQuota(_quota_client(), config.quota_table_name, config.quota)


@functools.cache
def _quota_client() -> Any:
    """The quota counter's DynamoDB client: short tries, since the counter fails open."""
    from tiktok_archive.adapters import aws_clients

    return aws_clients.client("dynamodb", aws_clients.QUOTA_CALLS)


@functools.cache
def token_vault() -> TokenVault:
    """The KMS key that seals tokens (built on first use).

    Raises:
        ConfigurationError: ``TOKEN_KMS_KEY_ID`` is not set.
    """
    from tiktok_archive.adapters.token_vault import TokenVault

    config = settings()
    if not config.token_kms_key_id:
        raise ConfigurationError("TOKEN_KMS_KEY_ID is required to seal and open tokens")
    return TokenVault(_small_calls_client("kms"), config.token_kms_key_id)


@functools.cache
def download_jobs() -> DownloadJobs:
    """The queue of async downloads (built on first use).

    Raises:
        ConfigurationError: ``DOWNLOAD_QUEUE_URL`` or ``TOKEN_KMS_KEY_ID`` is not set.
    """
    from tiktok_archive.adapters.download_jobs import DownloadJobs

    config = settings()
    if not config.download_queue_url:
        raise ConfigurationError(
            "DOWNLOAD_QUEUE_URL is required for queued downloads (Prefer: respond-async)"
        )
    return DownloadJobs(_small_calls_client("sqs"), token_vault(), config.download_queue_url)


@functools.cache
def download_records() -> DownloadRecords:
    """The downloads table."""
    from tiktok_archive.adapters.download_records import DownloadRecords

    config = settings()
    return DownloadRecords(
        _small_calls_client("dynamodb"),
        config.downloads_table_name,
        timedelta(days=config.record_retention_days),
    )


@functools.cache
def check_floor() -> CheckFloor:
    """The status checks' floor interval (the sweeper stores it, checks read it, cached)."""
    from tiktok_archive.adapters.check_floor import CheckFloor

    return CheckFloor(_small_calls_client("dynamodb"), settings().downloads_table_name)


@functools.cache
def download_events() -> DownloadEvents:
    """The event bus."""
    from tiktok_archive.adapters.download_events import DownloadEvents

    return DownloadEvents(_small_calls_client("events"), settings().event_bus_name)


@functools.cache
def app_credentials() -> AppCredentialsSource:
    """The TikTok app's credentials (built on first use: only refreshes and webhooks need them).

    Raises:
        ConfigurationError: ``TIKTOK_APP_SECRET_ARN`` is not set.
    """
    from aws_lambda_powertools.utilities.parameters import SecretsProvider

    from tiktok_archive.adapters.app_credentials import AppCredentialsSource

    config = settings()
    if not config.app_secret_arn:
        raise ConfigurationError("TIKTOK_APP_SECRET_ARN is required to refresh tokens and verify webhooks")
    provider = SecretsProvider(boto3_client=_small_calls_client("secretsmanager"))
    return AppCredentialsSource(provider, config.app_secret_arn)


@functools.cache
def grants() -> Grants:
    """Users' grants (built on first use).

    Raises:
        ConfigurationError: ``GRANTS_TABLE_NAME`` is not set.
    """
    from tiktok_archive.adapters.grants import Grants

    config = settings()
    if not config.grants_table_name:
        raise ConfigurationError("GRANTS_TABLE_NAME is required to keep the users' tokens handed over")
    return Grants(_small_calls_client("dynamodb"), config.grants_table_name)


@functools.cache
def lifecycle_queue() -> LifecycleQueue:
    """The queue of status checks and webhook work.

    Raises:
        ConfigurationError: ``LIFECYCLE_QUEUE_URL`` is not set.
    """
    from tiktok_archive.adapters.lifecycle_queue import LifecycleQueue

    config = settings()
    if not config.lifecycle_queue_url:
        raise ConfigurationError(
            "LIFECYCLE_QUEUE_URL is required to follow requests added with POST /requests"
        )
    return LifecycleQueue(_small_calls_client("sqs"), config.lifecycle_queue_url)


@functools.cache
def ready_queue() -> LifecycleQueue:
    """The queue of TikTok's ``download.ready`` work (the lifecycle function's too, with no checks).

    The lifecycle queue when ``READY_QUEUE_URL`` is not set.

    Raises:
        ConfigurationError: neither ``READY_QUEUE_URL`` nor ``LIFECYCLE_QUEUE_URL`` is set.
    """
    from tiktok_archive.adapters.lifecycle_queue import LifecycleQueue

    config = settings()
    if not config.ready_queue_url:
        return lifecycle_queue()
    return LifecycleQueue(_small_calls_client("sqs"), config.ready_queue_url)


@functools.cache
def webhook_deliveries() -> WebhookDeliveries:
    """The deliveries table.

    Raises:
        ConfigurationError: ``WEBHOOK_DELIVERIES_TABLE_NAME`` is not set.
    """
    from tiktok_archive.adapters.webhook_deliveries import WebhookDeliveries

    config = settings()
    if not config.webhook_deliveries_table_name:
        raise ConfigurationError("WEBHOOK_DELIVERIES_TABLE_NAME is required to take TikTok's webhooks")
    return WebhookDeliveries(_small_calls_client("dynamodb"), config.webhook_deliveries_table_name)


@functools.cache
def message_visibility() -> MessageVisibility:
    """Changes a received message's visibility (the worker's redelivery timing)."""
    from tiktok_archive.adapters.queue_visibility import MessageVisibility

    return MessageVisibility(_small_calls_client("sqs"))


def reset() -> None:
    """Forget every adapter built, so that the next call reads the environment again (tests only)."""
    for built in (
        grants,
        webhook_deliveries,
        lifecycle_queue,
        ready_queue,
        app_credentials,
        download_events,
        download_records,
        check_floor,
        download_jobs,
        token_vault,
        tiktok_client,
        archive_store,
        message_visibility,
        _small_calls_client,
        _quota_client,
        settings,
    ):
        built.cache_clear()
