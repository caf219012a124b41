"""Typed settings: defaults, bounds, and messages that name the variable."""

from __future__ import annotations

import pytest

from tiktok_archive import runtime_adapters
from tiktok_archive.models.check_schedule import CheckBudget
from tiktok_archive.models.errors import ConfigurationError
from tiktok_archive.settings import MIB, Settings


def test_defaults_need_only_the_bucket() -> None:
    settings = Settings.from_environment({"BUCKET_NAME": "b", "DOWNLOADS_TABLE_NAME": "t"})
    assert settings.bucket_name == "b"
    assert settings.tiktok_api_base_url == "https://open.tiktokapis.com"
    assert settings.part_size_bytes == 8 * MIB
    assert settings.upload_concurrency == 4
    assert settings.presigned_url_ttl_seconds == 3600
    assert settings.object_key_prefix == "archives/"
    assert settings.read_timeout_seconds == 30
    assert settings.tiktok_max_attempts == 4
    assert settings.deadline_margin_seconds == 10
    assert (settings.s3_retry_mode, settings.s3_max_attempts) == ("standard", 5)


def test_polling_defaults_to_no_webhooks_and_the_quotas_456_checks_a_minute() -> None:
    settings = Settings.from_environment({"BUCKET_NAME": "b", "DOWNLOADS_TABLE_NAME": "t"})
    assert (settings.status_poll_max_seconds, settings.webhooks_configured) == (900, False)
    assert settings.status_poll_backstop_seconds == 21_600
    assert CheckBudget.of(settings.quota).checks_per_minute == 456  # 6 sub-windows × 60 % of 1,000 × 90 % / 7
    configured = Settings.from_environment(
        {
            "BUCKET_NAME": "b",
            "DOWNLOADS_TABLE_NAME": "t",
            "WEBHOOKS_CONFIGURED": "true",
            "STATUS_POLL_BACKSTOP_SECONDS": "86400",
            "TIKTOK_CALLS_PER_MINUTE": "2000",
            "TIKTOK_QUOTA_SHARE_PERCENT": "100",
        }
    )
    assert (configured.webhooks_configured, configured.status_poll_backstop_seconds) == (True, 86_400)
    assert CheckBudget.of(configured.quota).checks_per_minute == 6 * (2000 // 7) * 60 // 100


def test_values_are_read_and_the_base_url_trailing_slash_dropped() -> None:
    settings = Settings.from_environment(
        {
            "BUCKET_NAME": "b",
            "DOWNLOADS_TABLE_NAME": "t",
            "TIKTOK_API_BASE_URL": "http://127.0.0.1:9000/",
            "PART_SIZE_MIB": "5",
            "UPLOAD_CONCURRENCY": "2",
            "PRESIGNED_URL_TTL_SECONDS": "604800",
            "OBJECT_KEY_PREFIX": "",
            "TIKTOK_MAX_ATTEMPTS": "1",
            "DEADLINE_MARGIN_SECONDS": "3",
            "S3_RETRY_MODE": "adaptive",
            "S3_MAX_ATTEMPTS": "10",
        }
    )
    assert settings.tiktok_api_base_url == "http://127.0.0.1:9000"
    assert settings.part_size_bytes == 5 * MIB
    assert settings.upload_concurrency == 2
    assert settings.presigned_url_ttl_seconds == 604800
    assert settings.object_key_prefix == ""
    assert (settings.tiktok_max_attempts, settings.deadline_margin_seconds) == (1, 3)
    assert (settings.s3_retry_mode, settings.s3_max_attempts) == ("adaptive", 10)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("BUCKET_NAME", ""),
        ("DOWNLOADS_TABLE_NAME", ""),
        ("RECORD_RETENTION_DAYS", "0"),
        ("PART_SIZE_MIB", "4"),
        ("PART_SIZE_MIB", "eight"),
        ("UPLOAD_CONCURRENCY", "0"),
        ("PRESIGNED_URL_TTL_SECONDS", "0"),
        ("PRESIGNED_URL_TTL_SECONDS", "604801"),
        ("TIKTOK_API_BASE_URL", "open.tiktokapis.com"),
        ("TIKTOK_API_BASE_URL", "https://open.tiktokapis.com/v2"),
        ("OBJECT_KEY_PREFIX", "/archives/"),
        ("TIKTOK_MAX_ATTEMPTS", "0"),
        ("TIKTOK_MAX_ATTEMPTS", "11"),
        ("DEADLINE_MARGIN_SECONDS", "0"),
        ("S3_RETRY_MODE", "legacy"),
        ("S3_MAX_ATTEMPTS", "0"),
        ("STATUS_POLL_MAX_SECONDS", "901"),
        ("WEBHOOKS_CONFIGURED", "yes"),
        ("STATUS_POLL_BACKSTOP_SECONDS", "899"),
        ("STATUS_POLL_BACKSTOP_SECONDS", "86401"),
        ("TIKTOK_CALLS_PER_MINUTE", "0"),
        ("TIKTOK_QUOTA_SHARE_PERCENT", "0"),
        ("TIKTOK_QUOTA_SHARE_PERCENT", "101"),
    ],
)
def test_invalid_values_are_refused_naming_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        Settings.from_environment({"BUCKET_NAME": "b", "DOWNLOADS_TABLE_NAME": "t", variable: value})
    assert variable in raised.value.message


@pytest.mark.parametrize(
    ("memory", "part_mib", "concurrency"),
    [
        ("128", 5, 2),
        ("160", 8, 3),
        ("192", 8, 4),
        ("256", 8, 4),
        ("512", 8, 4),
        ("10240", 8, 4),
    ],
)
def test_part_size_and_concurrency_follow_the_functions_memory(
    memory: str, part_mib: int, concurrency: int
) -> None:
    settings = Settings.from_environment(
        {"BUCKET_NAME": "b", "DOWNLOADS_TABLE_NAME": "t", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": memory}
    )
    assert (settings.part_size_bytes // MIB, settings.upload_concurrency) == (part_mib, concurrency)
    # Parts in memory stay within half of what the runtime leaves free.
    assert part_mib * (concurrency + 2) <= (int(memory) - 80) / 2


def test_explicit_values_win_over_the_memory_and_a_lone_part_size_gets_a_fitting_concurrency() -> None:
    base = {"BUCKET_NAME": "b", "DOWNLOADS_TABLE_NAME": "t", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256"}
    both = Settings.from_environment({**base, "PART_SIZE_MIB": "16", "UPLOAD_CONCURRENCY": "8"})
    assert (both.part_size_bytes, both.upload_concurrency) == (16 * MIB, 8)
    part_only = Settings.from_environment({**base, "PART_SIZE_MIB": "16"})
    assert (part_only.part_size_bytes, part_only.upload_concurrency) == (16 * MIB, 3)  # 88 MiB // 16 - 2
    concurrency_only = Settings.from_environment({**base, "UPLOAD_CONCURRENCY": "2"})
    assert (concurrency_only.part_size_bytes, concurrency_only.upload_concurrency) == (8 * MIB, 2)


def test_the_ready_queue_is_its_own_when_configured_else_the_lifecycle_queue(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("BUCKET_NAME", "archives")
    monkeypatch.setenv("DOWNLOADS_TABLE_NAME", "downloads")
    monkeypatch.setenv("LIFECYCLE_QUEUE_URL", "http://127.0.0.1:9/123456789012/lifecycle")
    monkeypatch.delenv("READY_QUEUE_URL", raising=False)
    runtime_adapters.reset()
    try:
        assert runtime_adapters.ready_queue() is runtime_adapters.lifecycle_queue()
        monkeypatch.setenv("READY_QUEUE_URL", "http://127.0.0.1:9/123456789012/ready")
        runtime_adapters.reset()
        ready = runtime_adapters.ready_queue()
        assert ready is not runtime_adapters.lifecycle_queue()
        assert ready._queue_url.endswith("/ready")
    finally:
        runtime_adapters.reset()
