"""The invocation's time budget."""

from __future__ import annotations

import time

import pytest

from tiktok_archive.models.deadline import Deadline
from tiktok_archive.models.errors import DeadlineExceededError


def test_budget_is_the_remaining_time_less_the_margin() -> None:
    deadline = Deadline.for_invocation(remaining_ms=28_000, margin_seconds=10)
    assert 17.9 < deadline.remaining() <= 18.0
    assert not deadline.expired()
    assert deadline.bound(30) == pytest.approx(deadline.remaining(), abs=0.01)
    assert deadline.bound(2) == 2


def test_margin_larger_than_the_time_left_is_already_expired() -> None:
    deadline = Deadline.for_invocation(remaining_ms=5_000, margin_seconds=10)
    assert deadline.expired()
    assert deadline.bound(30) == 0.001
    with pytest.raises(DeadlineExceededError, match="ran out before starting") as raised:
        deadline.check("before starting")
    assert (raised.value.error_code, raised.value.status, raised.value.is_transient) == (
        "deadline_exceeded",
        504,
        True,
    )


def test_deadline_passes_with_time() -> None:
    deadline = Deadline.after(0.05)
    deadline.check("now")
    time.sleep(0.06)
    assert deadline.expired()


def test_the_invocation_ends_a_margin_after_its_deadline_in_every_part_of_the_unit() -> None:
    # Lambda ends the invocation at its timeout: the deadline plus the margin (what a mark must outlive)
    deadline = Deadline.for_invocation(remaining_ms=28_000, margin_seconds=10)
    assert 27.9 < deadline.invocation_left() <= 28.0
    unit = deadline.unit(3)
    assert unit.invocation_left() == pytest.approx(deadline.invocation_left(), abs=0.01)
    assert unit.within(1).invocation_left() == pytest.approx(deadline.invocation_left(), abs=0.01)
    # Without a margin (a deadline made for a part of the work), the deadline is the end
    assert Deadline.after(5).invocation_left() == pytest.approx(5, abs=0.01)
