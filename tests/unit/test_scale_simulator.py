"""The scale simulation's own pieces (``tests/benchmarks/scale``): the quota's window, the event loop's
order, the queue's dead letters, a small run end to end, and its section kept by ``make bench``."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tests.benchmarks.run import kept_sections
from tests.benchmarks.scale.aws import CountingJournal, SimQueue
from tests.benchmarks.scale.loop import EventLoop, SimClock
from tests.benchmarks.scale.report import START_MARK, write_section
from tests.benchmarks.scale.simulator import DAY, Scenario, run
from tests.benchmarks.scale.tiktok import QuotaWindow, SimTikTok, TikTokModel
from tiktok_archive.models.deadline import Deadline
from tiktok_archive.models.tiktok_errors import TikTokApiError


def test_the_quota_refuses_calls_beyond_the_limit_until_the_minute_slides() -> None:
    # Given a quota of 3 calls a sliding minute, filled at 0, 10 and 20 s
    window = QuotaWindow(3)
    assert [window.try_call(t) for t in (0.0, 10.0, 20.0)] == [None, None, None]

    # When a fourth call comes at 30 s, and again at 60 s
    refused = window.try_call(30.0)
    accepted = window.try_call(60.0)

    # Then the first is refused with the seconds until the oldest call leaves; the second is accepted
    assert refused == 30.0
    assert accepted is None
    assert window.try_call(61.0) == 9.0  # 10 s, 20 s and 60 s are still in the window


def test_events_run_in_time_order_and_a_moment_in_the_order_they_were_scheduled() -> None:
    # Given events scheduled out of order, two at the same moment
    loop = EventLoop(SimClock())
    seen: list[tuple[str, float]] = []
    for name, at in (("c", 30.0), ("a", 10.0), ("b1", 20.0), ("b2", 20.0)):
        loop.schedule(at, lambda name=name: seen.append((name, loop.now)))

    # When the loop runs to 25 s, then on
    loop.run(25.0)
    assert loop.now == 25.0
    loop.run(100.0)

    # Then each ran at its moment, in time order, ties in scheduling order
    assert seen == [("a", 10.0), ("b1", 20.0), ("b2", 20.0), ("c", 30.0)]


def test_a_delayed_message_is_received_once_visible_and_dead_after_its_receives() -> None:
    # Given a queue whose messages die after 2 receives, and a message delayed by 60 s
    clock = SimClock()
    queue = SimQueue("q", CountingJournal(), lambda: clock.elapsed, max_receives=2)
    queue.send("job", delay=60)

    # Then it is not received before 60 s, and dies when handed back after its second receive
    assert queue.receive(59.0, 10) == []
    first = queue.receive(60.0, 10)
    assert [m.body for m in first] == ["job"]
    queue.hand_back(first[0], 100.0)
    second = queue.receive(100.0, 10)
    queue.hand_back(second[0], 200.0)
    assert len(queue) == 0
    assert [m.body for m in queue.dead] == ["job"]


def test_the_client_waits_out_a_short_retry_after_and_hands_on_a_long_one() -> None:
    # Given TikTok's check endpoint with room for one call a minute, used at 0 s
    clock = SimClock()
    model = TikTokModel(1, random.Random(1))
    model.windows["check"].try_call(0.0)
    tiktok = SimTikTok(model, lambda: clock.elapsed, random.Random(1))

    # When a check is asked at 55 s (room in 5 s) and another at 55 s again (room in 60 s)
    clock.move_to(55.0)
    at = tiktok.call("check", Deadline.after(60))
    with pytest.raises(TikTokApiError) as refused:
        tiktok.call("check", Deadline.after(60))

    # Then the first was answered after its refused try (150 ms) and 5 s (two tries counted); the
    # second was refused with its Retry-After handed on, not waited for
    assert at == pytest.approx(60.15)
    assert refused.value.upstream_status == 429
    assert refused.value.redeliver_after == 60
    assert sum(model.log.calls["check"]) == 3
    assert sum(model.log.refused["check"]) == 2


def test_a_small_run_stores_every_archive_prepared_under_the_quota() -> None:
    # Given 40 users in an hour, webhooks on, TikTok preparing in about 10 minutes, no outage
    scenario = Scenario(
        "small", 40, 3600, DAY / 2, webhooks=True, prep_median_hours=0.2, prep_sigma=0.3, outages=0
    )

    # When it is simulated
    result = run(scenario)

    # Then every archive TikTok prepared is stored, within seconds of TikTok's webhook, without a 429
    assert result.archives == 40 - result.outcomes.get("check expired", 0)
    assert max(result.ready_to_stored) < 60
    assert all(sum(series) == 0 for series in result.refused.values())
    assert result.lost_refresh_tokens == 0


def test_the_scale_section_is_kept_when_make_bench_writes_the_rest(tmp_path: Path) -> None:
    # Given a report with bench-scale's section written into it
    report = tmp_path / "benchmarks.md"
    report.write_text("# Benchmarks\n\nold transfer figures\n")
    write_section(report, ["## Scale", "figures"])

    # When bench-scale writes it again, and make bench rewrites the rest
    write_section(report, ["## Scale", "new figures"])
    kept = kept_sections(report)
    report.write_text("# Benchmarks\n\nnew transfer figures\n" + kept)

    # Then the rest is new and the one section is there, once, with the newest figures
    text = report.read_text()
    assert "new transfer figures" in text
    assert "old transfer figures" not in text
    assert text.count(START_MARK) == 1
    assert "new figures" in text.split(START_MARK)[1]
