"""Typed configuration, read from the environment once per container.

AWS endpoints are not configured here: boto3 reads its standard ``AWS_ENDPOINT_URL`` /
``AWS_ENDPOINT_URL_S3`` variables itself.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, cast
from urllib.parse import urlsplit

from tiktok_archive.models.errors import ConfigurationError
from tiktok_archive.models.tiktok_quota import Priority, QuotaPlan

MIB = 1024 * 1024
# S3 refuses parts below 5 MiB (except the last) and above 5 GiB.
MIN_PART_SIZE_MIB = 5
MAX_PART_SIZE_MIB = 5 * 1024
MAX_UPLOAD_CONCURRENCY = 32
MAX_PRESIGNED_URL_TTL_SECONDS = 604_800  # SigV4 presigned URLs live at most 7 days.
MAX_DELAY_SECONDS = 900  # SQS's longest message delay: the longest interval without webhooks.
# Without AWS_LAMBDA_FUNCTION_MEMORY_SIZE (outside Lambda) and without explicit values.
DEFAULT_PART_SIZE_MIB = 8
DEFAULT_UPLOAD_CONCURRENCY = 4
DEFAULT_DEADLINE_MARGIN_SECONDS = 10.0
# What the runtime, the imported libraries and the clients take before any archive byte (about 60 MiB
# measured after imports, plus clients, threads and HTTP buffers), and the share of the rest that the
# archive's parts may use: the other half is headroom for the interpreter's allocator.
RUNTIME_RESERVE_MIB = 80
PARTS_SHARE_OF_THE_REST = 0.5


def memory_defaults(memory_mib: int, part_mib: int | None = None) -> tuple[int, int]:
    """Part size (MiB) and concurrency that keep ``part × (concurrency + 2)`` inside the function.

    Without a given ``part_mib``: 8 MiB parts when at least 2 of them can be in flight, else 5 MiB (S3's
    minimum). Concurrency: as many parts as the budget holds, at most 4, at least 1 (one part always
    uploads while the next is read). 128 MiB gives 5 MiB × 2 (20 MiB of parts); 256 MiB and more give
    8 MiB × 4 (48 MiB).
    """
    budget = int(max(0, memory_mib - RUNTIME_RESERVE_MIB) * PARTS_SHARE_OF_THE_REST)
    if part_mib is None:
        fits = budget >= DEFAULT_PART_SIZE_MIB * (2 + 2)
        part_mib = DEFAULT_PART_SIZE_MIB if fits else MIN_PART_SIZE_MIB
    return part_mib, max(1, min(DEFAULT_UPLOAD_CONCURRENCY, budget // part_mib - 2))


@dataclass(frozen=True)
class Settings:
    """The service's configuration.

    Attributes:
        bucket_name: the S3 bucket archives are written to (``BUCKET_NAME``, required).
        downloads_table_name: the DynamoDB table of download records (``DOWNLOADS_TABLE_NAME``,
            required).
        download_queue_url: the queue async requests go to (``DOWNLOAD_QUEUE_URL``; needed for
            ``Prefer: respond-async`` only).
        token_kms_key_id: the KMS key that encrypts tokens in queued jobs (``TOKEN_KMS_KEY_ID``; needed
            for async requests and to open their jobs).
        event_bus_name: where completion events go (``EVENT_BUS_NAME``, default ``default``).
        record_retention_days: how long a record outlives its last change, like the archives
            (``RECORD_RETENTION_DAYS``, 1–3650, default 7).
        tiktok_api_base_url: TikTok's API origin (``TIKTOK_API_BASE_URL``).
        object_key_prefix: prepended to ``{request_id}.zip`` (``OBJECT_KEY_PREFIX``).
        part_size_bytes: multipart part size of the first 1,000 parts (``PART_SIZE_MIB``, 5–5120); by
            default derived from the function's memory (``AWS_LAMBDA_FUNCTION_MEMORY_SIZE``, see
            :func:`memory_defaults`), 8 outside Lambda.
        upload_concurrency: parts uploading while the download goes on (``UPLOAD_CONCURRENCY``, 1–32);
            by default derived from the function's memory, 4 outside Lambda.
        memory_mib: the function's memory (``AWS_LAMBDA_FUNCTION_MEMORY_SIZE``), when known.
        presigned_url_ttl_seconds: validity of returned URLs (``PRESIGNED_URL_TTL_SECONDS``, 1–604800,
            default 3600).
        connect_timeout_seconds: TCP/TLS connect timeout to TikTok (``TIKTOK_CONNECT_TIMEOUT_SECONDS``).
        read_timeout_seconds: longest silence tolerated on the TikTok socket
            (``TIKTOK_READ_TIMEOUT_SECONDS``, 1–300, default 30); a stalled stream is resumed or fetched
            again after it.
        tiktok_max_attempts: tries of each TikTok request that fails before its first byte, and of a
            broken stream (``TIKTOK_MAX_ATTEMPTS``, 1–10, default 4).
        attempts_per_unit: attempts one unit of work (an API request, a queue message) makes at most:
            every try of every TikTok operation, and every store the service tries again itself
            (``ATTEMPTS_PER_UNIT``, 1–100, default 3 × ``TIKTOK_MAX_ATTEMPTS``: a check, a refresh and
            the download, each with its tries).
        deadline_margin_seconds: how long before Lambda's deadline an invocation stops, aborts and
            answers (``DEADLINE_MARGIN_SECONDS``, 1–300, default 10).
        s3_retry_mode: botocore's retry mode for S3 calls (``S3_RETRY_MODE``, ``standard`` or
            ``adaptive``).
        s3_max_attempts: botocore's attempts per S3 call, first one included (``S3_MAX_ATTEMPTS``, 1–10,
            default 5).
        grants_table_name: the DynamoDB table of users' sealed tokens (``GRANTS_TABLE_NAME``; needed by
            ``POST /requests`` and whatever acts for a user without a caller).
        webhook_deliveries_table_name: the DynamoDB table of TikTok's webhook deliveries
            (``WEBHOOK_DELIVERIES_TABLE_NAME``; needed by the webhook function).
        lifecycle_queue_url: the queue of status checks and webhook work (``LIFECYCLE_QUEUE_URL``).
        ready_queue_url: the queue of TikTok's ``download.ready`` work (``READY_QUEUE_URL``; the
            webhook's; without it that work goes on the lifecycle queue).
        app_secret_arn: the Secrets Manager secret ``{"client_key", "client_secret"}`` of the TikTok app
            (``TIKTOK_APP_SECRET_ARN``; needed to refresh tokens and to verify webhooks).
        status_poll_initial_seconds: the first status check of an added request comes this long after
            it (``STATUS_POLL_INITIAL_SECONDS``, 1–900, default 60); each next one twice as long after…
        status_poll_max_seconds: …up to this (``STATUS_POLL_MAX_SECONDS``, 1–900, default 900: SQS's
            longest delay)…
        webhooks_configured: …or, when TikTok's webhooks announce the archives (``WEBHOOKS_CONFIGURED``,
            ``true``/``false``, default false), up to the backstop…
        status_poll_backstop_seconds: …this long (``STATUS_POLL_BACKSTOP_SECONDS``, 900–86400, default
            21600): a check then only catches a lost webhook.
        status_poll_give_up_hours: a request still being prepared after this long is given up
            (``STATUS_POLL_GIVE_UP_HOURS``, 1–8760, default 168).
        status_poll_pace_ms: the least time between two TikTok calls of one lifecycle invocation
            (``STATUS_POLL_PACE_MS``, 0–10000, default 150): with the template's concurrency cap, what
            keeps many users' checks under TikTok's rate limit.
        quota_table_name: the DynamoDB table of TikTok's quota, shared by every function that calls
            TikTok (``TIKTOK_QUOTA_TABLE_NAME``; unset: calls are not budgeted).
        quota: TikTok's calls a minute per endpoint (``TIKTOK_CALLS_PER_MINUTE``, 10–1,000,000, default
            1000) and the share of them the service uses (``TIKTOK_QUOTA_SHARE_PERCENT``, 1–100,
            default 90); see :mod:`tiktok_archive.models.tiktok_quota`.
    """

    bucket_name: str
    downloads_table_name: str = ""
    download_queue_url: str = ""
    token_kms_key_id: str = ""
    event_bus_name: str = "default"
    record_retention_days: int = 7
    tiktok_api_base_url: str = "https://open.tiktokapis.com"
    object_key_prefix: str = "archives/"
    part_size_bytes: int = 8 * MIB
    upload_concurrency: int = 4
    presigned_url_ttl_seconds: int = 3600
    connect_timeout_seconds: float = 5.0
    read_timeout_seconds: float = 30.0
    tiktok_max_attempts: int = 4
    attempts_per_unit: int = 12
    deadline_margin_seconds: float = 10.0
    memory_mib: int | None = None
    s3_retry_mode: Literal["standard", "adaptive"] = "standard"
    s3_max_attempts: int = 5
    grants_table_name: str = ""
    webhook_deliveries_table_name: str = ""
    lifecycle_queue_url: str = ""
    ready_queue_url: str = ""
    app_secret_arn: str = ""
    status_poll_initial_seconds: int = 60
    status_poll_max_seconds: int = 900
    status_poll_give_up_hours: int = 168
    status_poll_pace_ms: int = 150
    webhooks_configured: bool = False
    status_poll_backstop_seconds: int = 21_600
    quota_table_name: str = ""
    quota: QuotaPlan = field(default_factory=QuotaPlan)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and validate the settings.

        Raises:
            ConfigurationError: a variable is missing or invalid; the message names it.
        """
        env = os.environ if environ is None else environ
        bucket = env.get("BUCKET_NAME", "").strip()
        if not bucket:
            raise ConfigurationError("BUCKET_NAME is required: the S3 bucket archives are written to")
        table = env.get("DOWNLOADS_TABLE_NAME", "").strip()
        if not table:
            raise ConfigurationError(
                "DOWNLOADS_TABLE_NAME is required: the DynamoDB table of download records"
            )
        base_url = env.get("TIKTOK_API_BASE_URL", cls.tiktok_api_base_url).strip().rstrip("/")
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path or parts.query:
            raise ConfigurationError(
                f"TIKTOK_API_BASE_URL must be an origin such as https://open.tiktokapis.com, got {base_url!r}"
            )
        prefix = env.get("OBJECT_KEY_PREFIX", cls.object_key_prefix)
        if prefix.startswith("/") or len(prefix.encode()) > 512:
            raise ConfigurationError(
                "OBJECT_KEY_PREFIX must not start with '/' and must be at most 512 bytes"
            )
        memory = _int(env, "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", 0, 128, 10_240) or None
        explicit_part = _int(env, "PART_SIZE_MIB", 0, MIN_PART_SIZE_MIB, MAX_PART_SIZE_MIB) or None
        if memory is not None:
            part_mib, concurrency_default = memory_defaults(memory, explicit_part)
        else:
            part_mib, concurrency_default = explicit_part or DEFAULT_PART_SIZE_MIB, DEFAULT_UPLOAD_CONCURRENCY
        return cls(
            bucket_name=bucket,
            downloads_table_name=table,
            download_queue_url=env.get("DOWNLOAD_QUEUE_URL", "").strip(),
            token_kms_key_id=env.get("TOKEN_KMS_KEY_ID", "").strip(),
            event_bus_name=env.get("EVENT_BUS_NAME", "").strip() or cls.event_bus_name,
            record_retention_days=_int(env, "RECORD_RETENTION_DAYS", 7, 1, 3650),
            tiktok_api_base_url=base_url,
            object_key_prefix=prefix,
            part_size_bytes=part_mib * MIB,
            upload_concurrency=_int(
                env, "UPLOAD_CONCURRENCY", concurrency_default, 1, MAX_UPLOAD_CONCURRENCY
            ),
            presigned_url_ttl_seconds=_int(
                env, "PRESIGNED_URL_TTL_SECONDS", 3600, 1, MAX_PRESIGNED_URL_TTL_SECONDS
            ),
            connect_timeout_seconds=_int(env, "TIKTOK_CONNECT_TIMEOUT_SECONDS", 5, 1, 60),
            read_timeout_seconds=_int(env, "TIKTOK_READ_TIMEOUT_SECONDS", 30, 1, 300),
            tiktok_max_attempts=(attempts := _int(env, "TIKTOK_MAX_ATTEMPTS", 4, 1, 10)),
            attempts_per_unit=_int(env, "ATTEMPTS_PER_UNIT", 3 * attempts, 1, 100),
            deadline_margin_seconds=_int(env, "DEADLINE_MARGIN_SECONDS", 10, 1, 300),
            s3_retry_mode=cast(
                "Literal['standard', 'adaptive']",
                _choice(env, "S3_RETRY_MODE", "standard", ("standard", "adaptive")),
            ),
            s3_max_attempts=_int(env, "S3_MAX_ATTEMPTS", 5, 1, 10),
            grants_table_name=env.get("GRANTS_TABLE_NAME", "").strip(),
            webhook_deliveries_table_name=env.get("WEBHOOK_DELIVERIES_TABLE_NAME", "").strip(),
            lifecycle_queue_url=env.get("LIFECYCLE_QUEUE_URL", "").strip(),
            ready_queue_url=env.get("READY_QUEUE_URL", "").strip(),
            app_secret_arn=env.get("TIKTOK_APP_SECRET_ARN", "").strip(),
            status_poll_initial_seconds=_int(env, "STATUS_POLL_INITIAL_SECONDS", 60, 1, 900),
            status_poll_max_seconds=_int(env, "STATUS_POLL_MAX_SECONDS", 900, 1, MAX_DELAY_SECONDS),
            status_poll_give_up_hours=_int(env, "STATUS_POLL_GIVE_UP_HOURS", 168, 1, 8760),
            status_poll_pace_ms=_int(env, "STATUS_POLL_PACE_MS", 150, 0, 10_000),
            webhooks_configured=_choice(env, "WEBHOOKS_CONFIGURED", "false", ("true", "false")) == "true",
            status_poll_backstop_seconds=_int(
                env, "STATUS_POLL_BACKSTOP_SECONDS", 21_600, MAX_DELAY_SECONDS, 86_400
            ),
            memory_mib=memory,
            quota_table_name=env.get("TIKTOK_QUOTA_TABLE_NAME", "").strip(),
            quota=_quota(env),
        )


def _quota(env: Mapping[str, str]) -> QuotaPlan:
    plan = QuotaPlan(
        calls_per_minute=_int(env, "TIKTOK_CALLS_PER_MINUTE", 1000, 10, 1_000_000),
        share_percent=_int(env, "TIKTOK_QUOTA_SHARE_PERCENT", 90, 1, 100),
    )
    if plan.cap(Priority.CHECK) < 1:
        raise ConfigurationError(
            "TIKTOK_CALLS_PER_MINUTE x TIKTOK_QUOTA_SHARE_PERCENT leaves status checks no call in a "
            f"sub-window (a cap of {plan.window_cap}): raise either"
        )
    return plan


def _int(env: Mapping[str, str], name: str, default: int, minimum: int, maximum: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a whole number, got {raw!r}") from None
    if not minimum <= value <= maximum:
        raise ConfigurationError(f"{name} must be between {minimum} and {maximum}, got {value}")
    return value


def _choice(env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = env.get(name, "").strip() or default
    if value not in allowed:
        raise ConfigurationError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return value
