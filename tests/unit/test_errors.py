"""The error taxonomy: each failure's status, code and transience."""

from __future__ import annotations

import pytest

from tiktok_archive.models.errors import ConfigurationError, StorageError
from tiktok_archive.models.tiktok_errors import (
    TikTokApiError,
    UpstreamBadResponseError,
    UpstreamStreamBrokenError,
    UpstreamUnavailableError,
)


@pytest.mark.parametrize(
    ("code", "upstream", "status", "transient"),
    [
        ("invalid_params", 400, 400, False),
        ("access_token_invalid", 401, 401, False),
        ("scope_not_authorized", 401, 401, False),
        ("scope_permission_missed", 400, 400, False),
        ("rate_limit_exceeded", 429, 429, True),
        ("internal_error", 500, 502, True),
        # The documented codes keep their meaning whatever status carried them, 200 included.
        ("access_token_invalid", 200, 401, False),
        # Unknown codes are judged by the status TikTok sent.
        ("new_code", 503, 502, True),
        ("new_code", 429, 429, True),
        ("new_code", 403, 403, False),
        ("new_code", 404, 400, False),
        ("new_code", 200, 502, True),
    ],
)
def test_tiktok_codes_map_to_status_and_transience(
    code: str, upstream: int, status: int, transient: bool
) -> None:
    error = TikTokApiError(code, "msg", log_id="L", upstream_status=upstream)
    assert (error.status, error.is_transient, error.error_code) == (status, transient, code)


def test_error_body_has_code_message_and_log_id() -> None:
    error = TikTokApiError("invalid_params", "Incorrect `request_id`.", log_id="2024X", upstream_status=400)
    assert error.to_body() == {
        "error": {"code": "invalid_params", "message": "Incorrect `request_id`.", "log_id": "2024X"}
    }
    assert error.log_fields()["tiktok_log_id"] == "2024X"
    assert error.log_fields()["upstream_status"] == 400


@pytest.mark.parametrize(
    ("error_type", "status"),
    [
        (UpstreamUnavailableError, 502),
        (UpstreamStreamBrokenError, 502),
        (UpstreamBadResponseError, 502),
        (StorageError, 503),
    ],
)
def test_infrastructure_failures_are_transient_and_never_a_bare_500(error_type: type, status: int) -> None:
    error = error_type("x")
    assert error.status == status
    assert error.is_transient


def test_configuration_error_is_retried_not_dropped() -> None:
    assert ConfigurationError("BUCKET_NAME is required").is_transient
