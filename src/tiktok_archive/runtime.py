"""Per-container wiring: settings, clients and the transfer service, built once on first use.

Nothing here runs at import time; the first invocation builds the service and every later one in the
same container reuses its connection pools and part-upload threads. Tests call ``reset()`` to rebuild
with another environment.
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor

import boto3
from botocore.config import Config

from tiktok_archive.adapters.s3_archive_store import S3ArchiveStore
from tiktok_archive.adapters.tiktok import TikTokClient, build_pool
from tiktok_archive.logic.transfer import ArchiveTransfer
from tiktok_archive.settings import Settings


@functools.cache
def transfer_service() -> ArchiveTransfer:
    """The container's transfer service.

    Raises:
        ConfigurationError: the environment is invalid (the message names the variable).
    """
    settings = Settings.from_environment()
    s3_client = boto3.client(
        "s3",
        config=Config(
            signature_version="s3v4",
            # Every in-flight part needs its own connection, plus one for create/complete/presign.
            max_pool_connections=settings.upload_concurrency + 2,
            # SlowDown, 500 and throttling answers are retried by botocore itself, per part.
            # (total_max_attempts counts the first try; botocore's max_attempts would not.)
            retries={"mode": settings.s3_retry_mode, "total_max_attempts": settings.s3_max_attempts},
            connect_timeout=5,
            read_timeout=60,
            tcp_keepalive=True,
        ),
    )
    executor = ThreadPoolExecutor(max_workers=settings.upload_concurrency, thread_name_prefix="s3-part")
    store = S3ArchiveStore(
        s3_client,
        executor,
        settings.bucket_name,
        settings.part_size_bytes,
        settings.upload_concurrency,
    )
    tiktok = TikTokClient(
        settings.tiktok_api_base_url,
        build_pool(),
        connect_timeout=settings.connect_timeout_seconds,
        read_timeout=settings.read_timeout_seconds,
        max_attempts=settings.tiktok_max_attempts,
    )
    return ArchiveTransfer(
        tiktok,
        store,
        key_prefix=settings.object_key_prefix,
        url_ttl_seconds=settings.presigned_url_ttl_seconds,
        deadline_margin_seconds=settings.deadline_margin_seconds,
    )


def reset() -> None:
    """Forget the built service so the next call reads the environment again (tests only)."""
    transfer_service.cache_clear()
