"""TikTok's shared quota: sub-windows and caps, priorities, the DynamoDB counter, and the choke point."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import EndpointConnectionError
from hypothesis import given, settings
from hypothesis import strategies as st
from moto import mock_aws

from tests.unit.fakes import FakeQuota
from tiktok_archive.adapters.tiktok.budget import AttemptBudget, BudgetedRetry
from tiktok_archive.adapters.tiktok_quota import SharedQuota
from tiktok_archive.models.deadline import Deadline
from tiktok_archive.models.errors import ConfigurationError
from tiktok_archive.models.tiktok_errors import TikTokBudgetExhaustedError
from tiktok_archive.models.tiktok_quota import (
    SUB_WINDOWS,
    WINDOW_SECONDS,
    Endpoint,
    Priority,
    QuotaPlan,
    until_next_window,
    window_key,
    window_start,
)
from tiktok_archive.settings import Settings

T0 = 1_764_777_600.0  # a sub-window's start


class Now:
    """Epoch seconds that only the test moves."""

    def __init__(self, at: float = T0) -> None:
        self.at = at

    def __call__(self) -> float:
        return self.at


# -- the arithmetic ------------------------------------------------------------------------------
def test_a_minute_is_six_sub_windows_keyed_by_endpoint_and_start() -> None:
    assert (SUB_WINDOWS, WINDOW_SECONDS) == (6, 10)
    assert window_start(T0 + 9.99) == T0
    assert window_start(T0 + 10) == T0 + 10
    assert window_key(Endpoint.CHECK, window_start(T0 + 3)) == f"check {int(T0)}"
    assert until_next_window(T0 + 2.5) == pytest.approx(7.5)
    assert until_next_window(T0) == WINDOW_SECONDS


def test_default_caps_keep_any_minute_under_tiktoks_1000() -> None:
    plan = QuotaPlan()  # 1,000 a minute, a 90 % share
    assert plan.window_cap == 128  # 900 / 7: any 60 s window overlaps at most 7 sub-windows
    assert plan.peak_per_minute == 896 <= 900
    assert plan.sustained_per_minute == 768
    caps = [plan.cap(priority) for priority in Priority]
    assert caps == [128, 115, 102, 76]  # purges, the API, downloads, status checks


def test_a_flood_of_status_checks_leaves_the_rest_to_purges_and_the_api() -> None:
    now = Now()
    quota = FakeQuota(QuotaPlan(), now)
    checks = [quota.take(Endpoint.CHECK, Priority.CHECK) for _ in range(200)]
    assert checks.count(None) == 76
    assert checks[76] == pytest.approx(WINDOW_SECONDS)  # refused: come back at the next sub-window
    assert quota.take(Endpoint.CHECK, Priority.INTERACTIVE) is None
    purges = [quota.take(Endpoint.CHECK, Priority.PURGE) for _ in range(100)]
    assert purges.count(None) == 128 - 77
    assert quota.take(Endpoint.DOWNLOAD, Priority.CHECK) is None  # each endpoint has its own quota
    now.at += WINDOW_SECONDS
    assert quota.take(Endpoint.CHECK, Priority.CHECK) is None  # a new sub-window


@settings(max_examples=60, deadline=None)
@given(
    quota=st.integers(min_value=10, max_value=2000),
    share=st.integers(min_value=50, max_value=100),
    takes=st.lists(
        st.tuples(
            st.floats(min_value=0, max_value=3, allow_nan=False),
            st.sampled_from(list(Priority)),
            st.integers(min_value=1, max_value=40),
        ),
        max_size=120,
    ),
)
def test_no_sixty_seconds_ever_hold_more_than_the_quota(
    quota: int, share: int, takes: list[tuple[float, Priority, int]]
) -> None:
    plan = QuotaPlan(quota, share)
    if plan.cap(Priority.CHECK) < 1:
        return  # refused by the settings
    now = Now(T0 + 3.7)
    fake = FakeQuota(plan, now)
    for gap, priority, burst in takes:
        now.at += gap
        for _ in range(burst):
            fake.take(Endpoint.CHECK, priority)
    assert fake.most_in_a_minute(Endpoint.CHECK) <= quota * share // 100


def test_settings_read_the_quota_and_refuse_one_that_starves_checks() -> None:
    env = {"BUCKET_NAME": "b", "DOWNLOADS_TABLE_NAME": "t"}
    assert Settings.from_environment(env).quota == QuotaPlan(1000, 90)
    assert Settings.from_environment(env).quota_table_name == ""
    given_env = {**env, "TIKTOK_CALLS_PER_MINUTE": "70", "TIKTOK_QUOTA_SHARE_PERCENT": "100"}
    assert Settings.from_environment(given_env).quota.window_cap == 10
    with pytest.raises(ConfigurationError, match="TIKTOK_CALLS_PER_MINUTE"):
        Settings.from_environment({**env, "TIKTOK_CALLS_PER_MINUTE": "10"})


# -- the DynamoDB counter ------------------------------------------------------------------------
@pytest.fixture
def dynamodb() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("dynamodb", region_name="eu-west-1")
        client.create_table(
            TableName="quota",
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": "window", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "window", "KeyType": "HASH"}],
        )
        yield client


def test_the_dynamodb_counter_answers_as_the_fake_does(dynamodb: Any) -> None:
    plan = QuotaPlan(140, 100)  # 20 a sub-window; checks 12, downloads 16
    now = Now(T0 + 1)
    shared, fake = SharedQuota(dynamodb, "quota", plan, now), FakeQuota(plan, now)
    script = [Priority.CHECK] * 14 + [Priority.DOWNLOAD] * 6 + [Priority.PURGE] * 6
    for priority in script:
        assert shared.take(Endpoint.DOWNLOAD, priority) == fake.take(Endpoint.DOWNLOAD, priority)
    item = dynamodb.get_item(TableName="quota", Key={"window": {"S": f"download {int(T0)}"}})["Item"]
    assert item["calls"] == {"N": "20"}
    assert item["expires_at"] == {"N": str(int(T0) + 120)}
    now.at += WINDOW_SECONDS
    assert shared.take(Endpoint.DOWNLOAD, Priority.CHECK) is None


def test_a_failing_dynamodb_lets_the_call_through(caplog: pytest.LogCaptureFixture) -> None:
    class Unreachable:
        def update_item(self, **_: Any) -> None:
            raise EndpointConnectionError(endpoint_url="https://dynamodb")

    quota = SharedQuota(Unreachable(), "quota", QuotaPlan(), Now())  # type: ignore[arg-type]
    assert quota.take(Endpoint.REVOKE, Priority.PURGE) is None


# -- the choke point: every try draws ------------------------------------------------------------
def test_a_refused_first_try_raises_and_spends_no_attempt() -> None:
    now = Now()
    quota = FakeQuota(QuotaPlan(70, 100), now)  # 10 a sub-window, 6 for checks
    unit = Deadline.after(60).unit(3, Priority.CHECK)
    for _ in range(6):
        quota.take(Endpoint.CHECK, Priority.CHECK)
    budget = AttemptBudget(4, unit, quota)
    with pytest.raises(TikTokBudgetExhaustedError) as refused:
        budget.take(Endpoint.CHECK)
    assert (budget.used, unit.attempts_left) == (0, 3)
    assert refused.value.status == 503
    assert refused.value.retry_after == "10"
    assert refused.value.redeliver_after is not None
    assert 10 <= refused.value.redeliver_after <= 10 + WINDOW_SECONDS
    assert budget.take(Endpoint.REFRESH) is True  # another endpoint
    assert budget.take() is True  # not a call to TikTok: not counted


def test_a_unit_out_of_attempts_draws_nothing_from_the_quota() -> None:
    quota = FakeQuota(QuotaPlan(), Now())
    unit = Deadline.after(60).unit(1, Priority.PURGE)
    assert AttemptBudget(4, unit, quota).take(Endpoint.REVOKE) is True
    assert AttemptBudget(4, unit, quota).take(Endpoint.REVOKE) is False
    assert len(quota.granted) == 1


def test_the_units_priority_is_kept_by_its_shorter_deadlines() -> None:
    unit = Deadline.after(60).unit(3, Priority.PURGE)
    assert unit.within(5).priority is Priority.PURGE
    assert Deadline.after(60).priority is Priority.CHECK  # not a unit: the lowest


def test_a_retry_draws_after_its_wait_and_a_refused_one_defers_the_work() -> None:
    now = Now()
    quota = FakeQuota(QuotaPlan(70, 100), now)
    budget = AttemptBudget(4, Deadline.after(60).unit(10, Priority.DOWNLOAD), quota)
    assert budget.take(Endpoint.DOWNLOAD)
    retry = BudgetedRetry.drawing_on(budget, endpoint=Endpoint.DOWNLOAD)
    retry.sleep()
    assert len(quota.granted) == 2
    for _ in range(6):
        quota.take(Endpoint.DOWNLOAD, Priority.DOWNLOAD)
    with pytest.raises(TikTokBudgetExhaustedError):
        retry.sleep()
