"""The sweeper's run with in-memory collaborators: the checks' floor follows the number of waiting requests,
and every lost chain is re-driven, page after page, spread to fit the check budget, a run out of time going
on in the next."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

import pytest

from tests.conftest import BACKEND_CALLER
from tests.unit.fakes import (
    Clock,
    FakeCheckFloor,
    FakeDownloadRecords,
    FakeLifecycleQueue,
    Journal,
    freeze_time,
)
from tiktok_archive.logic.sweep import OVERDUE_FOR, PAGE_SECONDS, Sweep, SweepOutcome
from tiktok_archive.models.check_schedule import CheckBudget
from tiktok_archive.models.deadline import Deadline
from tiktok_archive.models.download_record import DownloadRecord, Preparation
from tiktok_archive.models.messages import StatusCheck
from tiktok_archive.models.tiktok_quota import QuotaPlan

FIRST_ID = 7_234_567_890_000_000_000
LATE = int(OVERDUE_FOR.total_seconds()) + 60  # seconds a lost check is late by
BUDGET = CheckBudget(600)  # checks a minute


class SlowQueue(FakeLifecycleQueue):
    """A lifecycle queue whose every send (a page's batches) takes ``seconds`` of the invocation's time."""

    def __init__(self, journal: Journal, clock: Clock, seconds: float) -> None:
        super().__init__(journal)
        self._clock = clock
        self._seconds = seconds

    def schedule_checks(self, checks: Sequence[tuple[StatusCheck, int]]) -> set[StatusCheck]:
        self._clock.advance(self._seconds)
        return super().schedule_checks(checks)


@dataclass
class World:
    clock: Clock
    journal: Journal
    records: FakeDownloadRecords
    queue: FakeLifecycleQueue
    floor: FakeCheckFloor

    def given_waiting(self, count: int, *, due_in: int = 0, first: int = FIRST_ID) -> list[int]:
        """``count`` waiting requests whose next check is due in ``due_in`` s (negative: late)."""
        now = self.clock.now()
        ids = list(range(first, first + count))
        for request_id in ids:
            created = self.records.create_waiting(
                request_id,
                caller=BACKEND_CALLER,
                grant_id=f"request {request_id}",
                user_openid=None,
                preparation=Preparation(
                    "json",
                    ("all_data",),
                    next_check_at=now + timedelta(seconds=due_in),
                    give_up_at=now + timedelta(days=7),
                ),
                poll_interval=900,
            )
            assert isinstance(created, DownloadRecord)
        self.journal.calls.clear()
        return ids

    def sweep(
        self, budget: CheckBudget = BUDGET, *, page_size: int = 100, seconds: float = 300
    ) -> SweepOutcome:
        return Sweep(self.records, self.queue, self.floor, budget, page_size).run(Deadline.after(seconds))

    def due_in(self, request_id: int) -> int:
        prep = self.records.items[request_id].preparation
        assert prep is not None
        assert prep.next_check_at is not None
        return int((prep.next_check_at - self.clock.now()).total_seconds())


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> World:
    clock = Clock()
    freeze_time(monkeypatch, clock)
    journal = Journal()
    return World(
        clock,
        journal,
        FakeDownloadRecords(clock, journal),
        FakeLifecycleQueue(journal),
        FakeCheckFloor(journal),
    )


# -- the floor -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("waiting", "floor"),
    [(0, 0), (1, 1), (600, 60), (9_000, 900), (10_000, 1000)],
)
def test_the_floor_is_the_interval_at_which_every_waiting_requests_checks_fit_the_budget(
    world: World, waiting: int, floor: int
) -> None:
    # Given ``waiting`` requests, none of them late, and 600 checks a minute for all of them
    world.given_waiting(waiting, due_in=60)

    # When the sweeper runs
    outcome = world.sweep()

    # Then it stores the floor: waiting × 60 / 600 seconds, and re-drives nothing
    assert (outcome.waiting, outcome.floor_seconds, outcome.redriven) == (waiting, floor, 0)
    assert world.floor.stored == [(waiting, floor)]
    assert world.queue.checks == []


def test_the_floor_follows_the_waiting_count_down_and_up(world: World) -> None:
    # Given 1,200 waiting requests, then 900 of them ended, then 3,000 more added
    ids = world.given_waiting(1200, due_in=60)
    world.sweep()
    for request_id in ids[:900]:
        del world.records.items[request_id]
    world.sweep()
    world.given_waiting(3000, due_in=60, first=FIRST_ID + 10_000)
    world.sweep(CheckBudget(1000))  # and a larger quota

    # Then each run stored the floor of its own count (and its budget)
    assert world.floor.stored == [(1200, 120), (300, 30), (3300, 198)]


# -- lost chains -----------------------------------------------------------------------------------------
def test_every_overdue_check_is_re_driven_page_after_page_and_only_once(world: World) -> None:
    # Given 250 requests whose checks were lost (more than two pages of 100), and 5 on time
    lost = world.given_waiting(250, due_in=-LATE)
    on_time = world.given_waiting(5, due_in=60, first=FIRST_ID + 1000)

    # When the sweeper runs
    outcome = world.sweep(page_size=100)

    # Then every lost one is sent its expected check again (seq 0), ten to a batch, three pages read
    assert (outcome.redriven, outcome.finished) == (250, True)
    assert sorted(request_id for request_id, _, _ in world.queue.checks) == lost
    assert {seq for _, seq, _ in world.queue.checks} == {0}
    assert world.journal.calls.count("records.overdue") == 3
    assert not set(on_time) & {request_id for request_id, _, _ in world.queue.checks}
    # And each record says when its check is due now, so the next run finds nothing left to do
    assert all(world.due_in(request_id) >= 0 for request_id in lost)
    assert world.sweep().redriven == 0
    assert len(world.queue.checks) == 250


def test_re_driven_checks_take_the_lost_chains_share_of_the_budget(world: World) -> None:
    # Given 1,200 waiting requests (floor: 120 s at 600 checks a minute), of which 200 lost their chain
    world.given_waiting(1000, due_in=60, first=FIRST_ID + 10_000)
    lost = world.given_waiting(200, due_in=-LATE)

    # When the sweeper runs
    world.sweep()

    # Then the 200 checks are spread over one floor interval, 0.6 s apart (200 × 60 / 1,200 … a minute),
    # so that with the 1,000 chains still running the sum stays at 600 a minute
    delays = [delay for _, _, delay in world.queue.checks]
    assert delays == [round(n * 0.6) for n in range(200)]
    assert [world.due_in(request_id) for request_id in lost] == delays


def test_a_spread_longer_than_sqs_allows_is_due_when_the_record_says(world: World) -> None:
    # Given 100 lost chains and a budget of 6 checks a minute (10 s apart)
    lost = world.given_waiting(100, due_in=-LATE)

    # When the sweeper runs
    world.sweep(CheckBudget(6))

    # Then the last ones are due beyond SQS's 900 s: their messages wait 900 s and then hop on
    assert world.due_in(lost[-1]) == 990
    assert world.queue.checks[-1] == (lost[-1], 0, 900)
    assert max(delay for _, _, delay in world.queue.checks) == 900


def test_a_run_out_of_time_stops_between_pages_and_the_next_goes_on(world: World) -> None:
    # Given 250 lost chains, and a queue that takes 6 s to send a page's checks
    lost = world.given_waiting(250, due_in=-LATE)
    world.queue = SlowQueue(world.journal, world.clock, seconds=6)

    # When a run has time for one page only, then the next run has enough
    first = world.sweep(page_size=100, seconds=PAGE_SECONDS + 5)
    second = world.sweep(page_size=100)

    # Then the first stopped after its page, and the second re-drove the rest, each check once
    assert (first.redriven, first.finished) == (100, False)
    assert (second.redriven, second.finished) == (150, True)
    assert sorted(request_id for request_id, _, _ in world.queue.checks) == lost


def test_a_check_sqs_refuses_stays_overdue_for_the_next_run(world: World) -> None:
    # Given two lost chains, and SQS refusing one entry of the batch
    refused, sent = world.given_waiting(2, due_in=-LATE)
    world.queue.refusing = {refused}

    # When the sweeper runs
    assert world.sweep().redriven == 1

    # Then only the sent one is rescheduled; the refused one is still overdue, and the next run sends it
    assert world.due_in(refused) < 0
    assert world.due_in(sent) >= 0
    world.queue.refusing = set()
    assert world.sweep().redriven == 1
    assert [request_id for request_id, _, _ in world.queue.checks] == [sent, refused]


def test_a_chain_that_moved_meanwhile_is_left_to_itself(world: World) -> None:
    # Given a lost chain whose own check ran while the sweeper was sending it again
    [request_id] = world.given_waiting(1, due_in=-LATE)
    record = world.records.items[request_id]

    def meanwhile(checks: Sequence[tuple[StatusCheck, int]]) -> set[StatusCheck]:
        world.records.items[request_id] = record.__class__(**{**record.__dict__, "poll_seq": 1})
        return FakeLifecycleQueue.schedule_checks(world.queue, checks)

    world.queue.schedule_checks = meanwhile  # type: ignore[method-assign]

    # When the sweeper runs, its write finds another check expected and changes nothing
    world.sweep()
    assert world.records.items[request_id].poll_seq == 1
    assert world.due_in(request_id) < 0


# -- the figures the docs give ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("budget", "interval", "waiting_max"),
    [
        (CheckBudget(), 900, 6_840),  # without webhooks, at the longest interval: the README's figure
        (CheckBudget(), 300, 2_280),
        (CheckBudget(), 60, 456),
        (CheckBudget.of(QuotaPlan(1000, share_percent=100)), 900, 7_650),
        (CheckBudget.of(QuotaPlan(5000)), 900, 34_650),
    ],
)
def test_the_quota_allows_checks_a_minute_times_the_interval_in_minutes(
    budget: CheckBudget, interval: int, waiting_max: int
) -> None:
    assert budget.waiting_max(interval) == waiting_max
    # …and that many waiting requests have exactly that interval as their floor
    assert budget.floor_seconds(waiting_max) == interval
    assert budget.floor_seconds(waiting_max + 1) > interval
