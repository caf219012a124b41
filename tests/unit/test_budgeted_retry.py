"""The TikTok retry policy: full-jitter backoff, Retry-After within a cap, never past the deadline."""

from __future__ import annotations

import pytest
from urllib3 import HTTPResponse
from urllib3.exceptions import MaxRetryError

from tiktok_archive.adapters.tiktok.budget import (
    BACKOFF_BASE_SECONDS,
    BACKOFF_MAX_SECONDS,
    RETRY_AFTER_MAX_SECONDS,
    BudgetedRetry,
)
from tiktok_archive.models.deadline import Deadline

URL = "/v2/user/data/download/"


def answer(status: int, retry_after: str | None = None) -> HTTPResponse:
    headers = {"Retry-After": retry_after} if retry_after else {}
    return HTTPResponse(body=b"", headers=headers, status=status, preload_content=False)


def test_backoff_is_full_jitter_under_an_exponential_ceiling() -> None:
    retry = BudgetedRetry.for_attempts(10, Deadline.after(600))
    for failures in range(1, 9):
        retry = retry.increment("POST", URL, response=answer(503))
        ceiling = min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2 ** (failures - 1))
        waits = [retry.get_backoff_time() for _ in range(300)]
        assert 0 <= min(waits) < ceiling / 4  # full jitter reaches down to zero…
        assert ceiling * 3 / 4 < max(waits) <= ceiling  # …and up to the ceiling


def test_retry_after_is_what_is_waited_for() -> None:
    retry = BudgetedRetry.for_attempts(4, Deadline.after(600)).increment(
        "POST", URL, response=answer(429, "7")
    )
    assert retry.planned_wait == 7


def test_retry_after_beyond_the_cap_is_not_waited_for() -> None:
    retry = BudgetedRetry.for_attempts(4, Deadline.after(600))
    with pytest.raises(MaxRetryError):
        retry.increment("POST", URL, response=answer(429, str(int(RETRY_AFTER_MAX_SECONDS) + 1)))


def test_a_wait_that_would_end_after_the_deadline_is_not_started() -> None:
    retry = BudgetedRetry.for_attempts(4, Deadline.after(5))
    with pytest.raises(MaxRetryError):
        retry.increment("POST", URL, response=answer(503, "6"))


def test_attempts_are_counted_including_the_first() -> None:
    retry = BudgetedRetry.for_attempts(3, Deadline.after(600))
    retry = retry.increment("POST", URL, response=answer(500))
    retry = retry.increment("POST", URL, response=answer(500))
    with pytest.raises(MaxRetryError):
        retry.increment("POST", URL, response=answer(500))


def test_only_rate_limits_and_server_errors_are_retried() -> None:
    retry = BudgetedRetry.for_attempts(4, Deadline.after(600))
    assert [s for s in (200, 400, 401, 403, 404, 429, 500, 502, 503, 504) if retry.is_retry("POST", s)] == [
        429,
        500,
        502,
        503,
        504,
    ]
