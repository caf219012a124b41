"""Typed settings: defaults, bounds, and messages that name the variable."""

from __future__ import annotations

import pytest

from tiktok_archive.models.errors import ConfigurationError
from tiktok_archive.settings import MIB, Settings


def test_defaults_need_only_the_bucket() -> None:
    settings = Settings.from_environment({"BUCKET_NAME": "b"})
    assert settings.bucket_name == "b"
    assert settings.tiktok_api_base_url == "https://open.tiktokapis.com"
    assert settings.part_size_bytes == 8 * MIB
    assert settings.upload_concurrency == 4
    assert settings.presigned_url_ttl_seconds == 3600
    assert settings.object_key_prefix == "archives/"


def test_values_are_read_and_the_base_url_trailing_slash_dropped() -> None:
    settings = Settings.from_environment(
        {
            "BUCKET_NAME": "b",
            "TIKTOK_API_BASE_URL": "http://127.0.0.1:9000/",
            "PART_SIZE_MIB": "5",
            "UPLOAD_CONCURRENCY": "2",
            "PRESIGNED_URL_TTL_SECONDS": "604800",
            "OBJECT_KEY_PREFIX": "",
        }
    )
    assert settings.tiktok_api_base_url == "http://127.0.0.1:9000"
    assert settings.part_size_bytes == 5 * MIB
    assert settings.upload_concurrency == 2
    assert settings.presigned_url_ttl_seconds == 604800
    assert settings.object_key_prefix == ""


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("BUCKET_NAME", ""),
        ("PART_SIZE_MIB", "4"),
        ("PART_SIZE_MIB", "eight"),
        ("UPLOAD_CONCURRENCY", "0"),
        ("PRESIGNED_URL_TTL_SECONDS", "0"),
        ("PRESIGNED_URL_TTL_SECONDS", "604801"),
        ("TIKTOK_API_BASE_URL", "open.tiktokapis.com"),
        ("TIKTOK_API_BASE_URL", "https://open.tiktokapis.com/v2"),
        ("OBJECT_KEY_PREFIX", "/archives/"),
    ],
)
def test_invalid_values_are_refused_naming_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        Settings.from_environment({"BUCKET_NAME": "b", variable: value})
    assert variable in raised.value.message
