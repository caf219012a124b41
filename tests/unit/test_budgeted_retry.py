"""The TikTok retry policy: full-jitter backoff, Retry-After within a cap, never past the deadline."""

from __future__ import annotations

import pytest
from urllib3 import HTTPResponse
from urllib3.exceptions import MaxRetryError

from tiktok_archive.adapters.tiktok.budget import (
    BACKOFF_BASE_SECONDS,
    BACKOFF_MAX_SECONDS,
    RETRY_AFTER_MAX_SECONDS,
    AttemptBudget,
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


def test_the_operations_of_one_unit_of_work_share_its_attempts() -> None:
    # Given a unit of work (one message) allowed 5 attempts, and three TikTok operations of it (a check,
    # a refresh, the download) each allowed 4 tries
    unit = Deadline.after(60).unit(5)
    check, refresh, download = (AttemptBudget(4, unit) for _ in range(3))

    # When the check spends 3 tries and the refresh 2
    assert [check.take() for _ in range(3)] == [True] * 3
    assert [refresh.take() for _ in range(2)] == [True] * 2

    # Then the download gets none: the unit is spent, although its own budget is not
    assert download.take() is False
    assert (download.used, unit.attempts_left) == (0, 0)


def test_a_refresh_within_its_lease_still_draws_from_the_units_attempts() -> None:
    # Given a unit of work allowed 3 attempts, and a refresh that must end within 5 s (its lease)
    unit = Deadline.after(60).unit(3)
    within_lease = unit.within(5)
    assert 4 < within_lease.remaining() <= 5
    assert unit.within(120).remaining() == pytest.approx(unit.remaining(), abs=0.1)  # never later

    # When the refresh spends 2 tries
    refresh = AttemptBudget(4, within_lease)
    assert [refresh.take() for _ in range(2)] == [True, True]

    # Then the unit has one left, for the call made again with the new token
    assert (unit.attempts_left, within_lease.attempts_left) == (1, 1)
    assert [AttemptBudget(4, unit).take() for _ in range(2)] == [True, False]


def test_a_message_delivered_again_is_a_new_unit_on_the_new_invocations_deadline() -> None:
    first, second = Deadline.after(60).unit(2), Deadline.after(60).unit(2)
    assert [first.take_attempt() for _ in range(3)] == [True, True, False]
    assert second.attempts_left == 2


def test_without_a_unit_attempts_are_not_counted_beyond_the_operations_own() -> None:
    deadline = Deadline.after(60)
    assert all(AttemptBudget(4, deadline).take() for _ in range(50))
    assert deadline.attempts_left is None
