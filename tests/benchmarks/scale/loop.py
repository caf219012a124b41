"""The simulation's clock and its event loop: a priority queue of moments, no real sleeping.

Events are ``(time, order, action)``: two events at the same moment run in the order they were
scheduled. Besides its own events, the loop asks its *sources* (the queues' consumers) when they next
have work, so that a message delayed by SQS costs no event of its own until a consumer can take it.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Protocol

from tests.unit.fakes import START, Clock


class SimClock(Clock):
    """The fakes' clock, moved by the loop to each event's moment (never backwards).

    Seconds since the simulation began are ``elapsed``; a service that sleeps (a refresh waiting for
    another's) moves it forward, as the real time would.
    """

    def __init__(self) -> None:
        super().__init__(START)
        self.elapsed = 0.0

    def advance(self, seconds: float) -> None:
        super().advance(seconds)
        self.elapsed += seconds

    def move_to(self, elapsed: float) -> None:
        """Move to ``elapsed`` seconds after the start (a moment already passed leaves it as it is)."""
        if elapsed > self.elapsed:
            self.advance(elapsed - self.elapsed)


class Source(Protocol):
    """Something with work of its own timing (a queue's consumer): when next, and doing it."""

    def next_time(self) -> float | None: ...

    def step(self, now: float) -> None: ...


class EventLoop:
    """Runs scheduled actions and sources' work in time order until ``until`` (seconds)."""

    def __init__(self, clock: SimClock) -> None:
        self.clock = clock
        self._events: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()
        self._sources: list[Source] = []
        self.processed = 0

    @property
    def now(self) -> float:
        return self.clock.elapsed

    def schedule(self, at: float, action: Callable[[], None]) -> None:
        """Run ``action`` at ``at`` seconds (a moment already passed: as soon as possible)."""
        heapq.heappush(self._events, (at, next(self._order), action))

    def add_source(self, source: Source) -> None:
        self._sources.append(source)

    def run(self, until: float) -> None:
        """Run everything due up to ``until``; the clock ends there."""
        while True:
            at = self._events[0][0] if self._events else None
            chosen: Source | None = None
            for source in self._sources:
                due = source.next_time()
                if due is not None and (at is None or due < at):
                    at, chosen = due, source
            if at is None or at > until:
                break
            self.clock.move_to(at)
            self.processed += 1
            if chosen is not None:
                chosen.step(max(at, self.clock.elapsed))
            else:
                _, _, action = heapq.heappop(self._events)
                action()
        self.clock.move_to(until)
